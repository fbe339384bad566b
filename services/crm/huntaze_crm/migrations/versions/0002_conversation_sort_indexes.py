"""Indexes for the conversation lists sorted pinned first and by unread count, so that their
pages (keyset cursors) are read from an index instead of sorting all of a creator's
conversations for each page.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 09:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_conversations_creator_id_pinned",
        "conversations",
        ["creator_id", "pinned", "last_message_at", "id"],
        unique=False,
        schema="crm",
    )
    op.create_index(
        "ix_conversations_creator_id_unread_count",
        "conversations",
        ["creator_id", "unread_count", "last_message_at", "id"],
        unique=False,
        schema="crm",
    )


def downgrade() -> None:
    op.drop_index(
        "ix_conversations_creator_id_unread_count", table_name="conversations", schema="crm"
    )
    op.drop_index("ix_conversations_creator_id_pinned", table_name="conversations", schema="crm")
