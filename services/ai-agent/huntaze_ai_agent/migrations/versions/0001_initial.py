"""The ai schema: creators' configurations and the style index of their past replies.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "configurations",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_configurations")),
        schema="ai",
    )
    op.create_table(
        "past_replies",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("fan_message", sa.Text(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                "setweight(to_tsvector('simple', fan_message), 'A') || "
                "setweight(to_tsvector('simple', reply), 'B')",
                persisted=True,
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_past_replies")),
        schema="ai",
    )
    op.create_index(
        "ix_past_replies_creator_id_created_at",
        "past_replies",
        ["creator_id", "created_at"],
        schema="ai",
    )
    op.create_index(
        "ix_past_replies_search_vector",
        "past_replies",
        ["search_vector"],
        postgresql_using="gin",
        schema="ai",
    )


def downgrade() -> None:
    op.drop_table("past_replies", schema="ai")
    op.drop_table("configurations", schema="ai")
