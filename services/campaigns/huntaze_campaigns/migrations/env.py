"""Alembic environment of the `campaigns` schema (run through `huntaze_kit.migrations.upgrade`)."""

from huntaze_campaigns.models import SCHEMA, metadata
from huntaze_kit.migrations import run_env

run_env(metadata, SCHEMA)
