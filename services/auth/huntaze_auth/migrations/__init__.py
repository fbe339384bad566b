"""Alembic migrations of the `auth` schema."""
