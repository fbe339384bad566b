"""The campaigns schema: templates, campaigns, audience snapshots, the send queue, attributed
purchases, and the outbox and inbox of its events.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from huntaze_kit.outbox import create_outbox_tables, drop_outbox_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="draft", nullable=False),
        sa.Column("list_id", sa.UUID(), nullable=True),
        sa.Column("silent_for_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "exclusions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("variants", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "steps",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("holdout_percent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attribution_window_hours", sa.Integer(), server_default="72", nullable=False),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("template_id", sa.UUID(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("audience_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("holdout_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("excluded_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('one_off', 'welcome', 'reengagement', 'sequence')",
            name=op.f("ck_campaigns_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')",
            name=op.f("ck_campaigns_status"),
        ),
        sa.CheckConstraint(
            "holdout_percent BETWEEN 0 AND 50", name=op.f("ck_campaigns_holdout_percent")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        schema="campaigns",
    )
    op.create_index(
        "ix_campaigns_creator_id_created_at",
        "campaigns",
        ["creator_id", "created_at", "id"],
        unique=False,
        schema="campaigns",
    )
    op.create_index(
        "ix_campaigns_welcome",
        "campaigns",
        ["creator_id"],
        unique=False,
        schema="campaigns",
        postgresql_where=sa.text("kind = 'welcome' AND status = 'running'"),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("seed_key", sa.Text(), nullable=True),
        sa.Column("niche", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("price_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "niche IN ('general', 'fitness', 'gaming', 'adult', 'fashion')",
            name=op.f("ck_templates_niche"),
        ),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_templates_price_cents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint(
            "creator_id", "seed_key", name=op.f("uq_templates_creator_id_seed_key")
        ),
        schema="campaigns",
    )
    op.create_table(
        "purchases",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("purchase_id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("crm_message_id", sa.UUID(), nullable=True),
        sa.Column("from_message", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_purchases_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "purchase_id", name=op.f("pk_purchases")),
        schema="campaigns",
    )
    op.create_index(
        "ix_purchases_creator_id_fan_id",
        "purchases",
        ["creator_id", "fan_id"],
        unique=False,
        schema="campaigns",
    )
    op.create_table(
        "recipients",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("platform_fan_id", sa.Text(), server_default="", nullable=False),
        sa.Column("display_name", sa.Text(), server_default="", nullable=False),
        sa.Column("variant", sa.Text(), server_default="", nullable=False),
        sa.Column("holdout", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "enrolled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_reason", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_recipients_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "fan_id", name=op.f("pk_recipients")),
        schema="campaigns",
    )
    op.create_index(
        "ix_recipients_creator_id_fan_id",
        "recipients",
        ["creator_id", "fan_id"],
        unique=False,
        schema="campaigns",
    )
    op.create_table(
        "sends",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("variant", sa.Text(), server_default="", nullable=False),
        sa.Column("state", sa.Text(), server_default="queued", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("crm_message_id", sa.UUID(), nullable=True),
        sa.Column("platform_message_id", sa.Text(), server_default="", nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'requested', 'sent', 'failed', 'skipped', 'stopped', 'cancelled')",
            name=op.f("ck_sends_state"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.campaigns.id"],
            name=op.f("fk_sends_campaign_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "fan_id", "step", name=op.f("pk_sends")),
        schema="campaigns",
    )
    op.create_index(
        "ix_sends_campaign_id_fan_id",
        "sends",
        ["campaign_id", "fan_id"],
        unique=False,
        schema="campaigns",
    )
    op.create_index(
        "ix_sends_due",
        "sends",
        ["due_at"],
        unique=False,
        schema="campaigns",
        postgresql_where=sa.text("state = 'queued'"),
    )
    create_outbox_tables("campaigns")


def downgrade() -> None:
    drop_outbox_tables("campaigns")
    for table in ("purchases", "sends", "recipients", "templates", "campaigns"):
        op.drop_table(table, schema="campaigns")
