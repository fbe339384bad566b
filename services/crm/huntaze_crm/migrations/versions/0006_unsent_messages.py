"""Outgoing messages can be `unsent`: a campaign's mass message deleted from the fans' chats.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 02:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_messages_delivery_status"), "messages", schema="crm")
    op.create_check_constraint(
        op.f("ck_messages_delivery_status"),
        "messages",
        "delivery_status IN ('received', 'queued', 'sending', 'sent', 'failed', 'unsent')",
        schema="crm",
    )


def downgrade() -> None:
    # Unsent messages were sent before they were taken back.
    op.execute("UPDATE crm.messages SET delivery_status = 'sent' WHERE delivery_status = 'unsent'")
    op.drop_constraint(op.f("ck_messages_delivery_status"), "messages", schema="crm")
    op.create_check_constraint(
        op.f("ck_messages_delivery_status"),
        "messages",
        "delivery_status IN ('received', 'queued', 'sending', 'sent', 'failed')",
        schema="crm",
    )
