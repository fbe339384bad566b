"""Alembic environment of the `onlyfans` schema (run through `huntaze_kit.migrations.upgrade`)."""

from huntaze_kit.migrations import run_env
from huntaze_onlyfans_worker.models import SCHEMA, metadata

run_env(metadata, SCHEMA)
