"""Vectors of the creator's past replies (pgvector), where the server has the extension.

Creating the `vector` extension takes a superuser (or, for a trusted extension, the database's
owner): when this migration runs as one it creates it; otherwise an administrator creates it
beforehand (`python -m huntaze_devstack roles` does). Without the extension nothing is created,
and the agent keeps to full-text search.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 22:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    available = bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
    installed = bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))
    if available and not installed:
        try:
            with bind.begin_nested():
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        except sa.exc.DBAPIError:
            return  # not ours to create: full-text search only
    elif not installed:
        return
    # The model's dimensions are unknown here: an unsized vector column; the search is exact
    # within one creator's replies (the primary key leads with the creator).
    bind.execute(
        sa.text(
            """
            CREATE TABLE ai.reply_vectors (
                creator_id uuid NOT NULL,
                model text NOT NULL,
                past_reply_id bigint NOT NULL
                    REFERENCES ai.past_replies (id) ON DELETE CASCADE,
                embedding vector NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT pk_reply_vectors PRIMARY KEY (creator_id, model, past_reply_id)
            )
            """
        )
    )
    bind.execute(
        sa.text("CREATE INDEX ix_reply_vectors_past_reply_id ON ai.reply_vectors (past_reply_id)")
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ai.reply_vectors")
