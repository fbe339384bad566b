"""Alembic environment of the `ai` schema (run through `huntaze_kit.migrations.upgrade`)."""

from huntaze_ai_agent.models import SCHEMA, metadata
from huntaze_kit.migrations import run_env

run_env(metadata, SCHEMA)
