"""Alembic environment of the `crm` schema (run through `huntaze_kit.migrations.upgrade`)."""

from huntaze_crm.models import SCHEMA, metadata
from huntaze_kit.migrations import run_env

run_env(metadata, SCHEMA)
