"""Mass messages: a campaign sent through the platform's queue, its sends' mass message, the
queue's figures, and unsend.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_SEND_STATES = "('queued', 'requested', 'sent', 'failed', 'skipped', 'stopped', 'cancelled')"
_NEW_SEND_STATES = (
    "('queued', 'requested', 'sent', 'failed', 'skipped', 'stopped', 'cancelled', 'unsent')"
)


def upgrade() -> None:
    op.add_column(
        "campaigns",
        sa.Column("mass_message", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema="campaigns",
    )
    op.add_column(
        "campaigns",
        sa.Column("unsent_at", sa.DateTime(timezone=True), nullable=True),
        schema="campaigns",
    )
    op.add_column(
        "sends",
        sa.Column("mass_key", sa.Text(), server_default="", nullable=False),
        schema="campaigns",
    )
    op.drop_constraint(op.f("ck_sends_state"), "sends", schema="campaigns", type_="check")
    op.create_check_constraint(
        op.f("ck_sends_state"), "sends", f"state IN {_NEW_SEND_STATES}", schema="campaigns"
    )
    op.create_table(
        "mass_messages",
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("state", sa.Text(), server_default="requested", nullable=False),
        sa.Column("recipients", sa.Integer(), server_default="0", nullable=False),
        sa.Column("platform_queue_id", sa.Text(), server_default="", nullable=False),
        sa.Column("sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("viewed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("purchased", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "requested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unsent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('requested', 'queued', 'failed', 'unsend_requested', 'unsent', "
            "'unsend_failed')",
            name=op.f("ck_mass_messages_state"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_mass_messages_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_mass_messages")),
        schema="campaigns",
    )
    op.create_index(
        "ix_mass_messages_campaign_id",
        "mass_messages",
        ["campaign_id"],
        unique=False,
        schema="campaigns",
    )


def downgrade() -> None:
    op.drop_index("ix_mass_messages_campaign_id", table_name="mass_messages", schema="campaigns")
    op.drop_table("mass_messages", schema="campaigns")
    op.execute("DELETE FROM campaigns.sends WHERE state = 'unsent'")
    op.drop_constraint(op.f("ck_sends_state"), "sends", schema="campaigns", type_="check")
    op.create_check_constraint(
        op.f("ck_sends_state"), "sends", f"state IN {_OLD_SEND_STATES}", schema="campaigns"
    )
    op.drop_column("sends", "mass_key", schema="campaigns")
    op.drop_column("campaigns", "unsent_at", schema="campaigns")
    op.drop_column("campaigns", "mass_message", schema="campaigns")
