"""Alembic migrations of the `crm` schema."""
