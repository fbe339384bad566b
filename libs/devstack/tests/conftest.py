"""Fixtures for the devstack tests: a throwaway Alembic migrations package."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

ENV_PY = """
from huntaze_kit.migrations import run_env

run_env(None, "{schema}")
"""

FIRST = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        schema="{schema}",
    )


def downgrade():
    op.drop_table("items", schema="{schema}")
"""

SECOND = """
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("items", sa.Column("note", sa.Text), schema="{schema}")


def downgrade():
    op.drop_column("items", "note", schema="{schema}")
"""


def make_migrations_package(root: Path, schema: str) -> str:
    """A throwaway migrations package with two revisions; returns its importable name."""
    name = f"devstack_migrations_{uuid.uuid4().hex[:8]}"
    package = root / name
    (package / "versions").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "env.py").write_text(textwrap.dedent(ENV_PY.format(schema=schema)))
    (package / "versions" / "0001_items.py").write_text(FIRST.format(schema=schema))
    (package / "versions" / "0002_note.py").write_text(SECOND.format(schema=schema))
    return name


@pytest.fixture
def migrations_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    return make_migrations_package(tmp_path, "demo")
