"""The analytics schema: the append-only events table partitioned by month (and the function
that adds a month's partition), the state and rollups derived from it, insight snapshots and
summaries, and the kit's messaging tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 21:34:03
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


# Creates the partition of `events` holding `at`'s month (UTC) unless it exists; replicas doing
# it at once wait for each other on an advisory lock.
ENSURE_PARTITION = """
CREATE FUNCTION analytics.ensure_event_partition(at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
    partition text := 'events_' || to_char(month_start, 'YYYYMM');
BEGIN
    IF to_regclass(format('analytics.%I', partition)) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('analytics.' || partition));
    IF to_regclass(format('analytics.%I', partition)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE analytics.%I PARTITION OF analytics.events FOR VALUES FROM (%L) TO (%L)',
            partition,
            month_start AT TIME ZONE 'UTC',
            (month_start + interval '1 month') AT TIME ZONE 'UTC'
        );
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "active_days",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("fans", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "day", name="pk_active_days"),
        schema="analytics",
    )
    op.create_table(
        "accounts",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("needs_attention", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "platform", name="pk_accounts"),
        schema="analytics",
    )
    op.create_table(
        "campaigns",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("campaign_id", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("last_event_type", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "campaign_id", name="pk_campaigns"),
        schema="analytics",
    )
    op.create_table(
        "creators",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("fans_total", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("subscribers", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("creator_id", name=op.f("pk_creators")),
        schema="analytics",
    )
    op.create_table(
        "daily_rollups",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("subscription_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("renewal_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("tip_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ppv_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("purchases", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("new_fans", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("expired_fans", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("returning_fans", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("messages_in", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("messages_out", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_shown", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_accepted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_edited", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_rejected", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_autopilot_sends", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_attributed_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "day", name="pk_daily_rollups"),
        schema="analytics",
    )
    op.create_table(
        "event_counts",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("events", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "day", "event_type", name="pk_event_counts"),
        schema="analytics",
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("message_type", sa.Text(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=True),
        sa.Column("aggregate_type", sa.Text(), server_default="", nullable=False),
        sa.Column("aggregate_id", sa.Text(), server_default="", nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "occurred_at", name="pk_events"),
        schema="analytics",
        postgresql_partition_by="RANGE (occurred_at)",
    )
    op.create_index(
        "ix_events_creator_id_occurred_at",
        "events",
        ["creator_id", "occurred_at"],
        unique=False,
        schema="analytics",
    )
    op.create_index("ix_events_seq", "events", ["seq"], unique=False, schema="analytics")
    op.create_table(
        "fan_days",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "day", "fan_id", name="pk_fan_days"),
        schema="analytics",
    )
    op.create_table(
        "fans",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("fan_id", sa.UUID(), nullable=False),
        sa.Column("display_name", sa.Text(), server_default="", nullable=False),
        sa.Column("platform", sa.Text(), server_default="other", nullable=False),
        sa.Column("state", sa.Text(), server_default="none", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_purchase_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("spend_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("purchases", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("messages_in", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lapsed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "fan_id", name="pk_fans"),
        schema="analytics",
    )
    op.create_index(
        "ix_fans_creator_id_expires_at",
        "fans",
        ["creator_id", "expires_at"],
        unique=False,
        schema="analytics",
    )
    op.create_index(
        "ix_fans_creator_id_last_active_at",
        "fans",
        ["creator_id", "last_active_at"],
        unique=False,
        schema="analytics",
        postgresql_where=sa.text("NOT deleted"),
    )
    op.create_index(
        "ix_fans_creator_id_spend_cents_fan_id",
        "fans",
        ["creator_id", "spend_cents", "fan_id"],
        unique=False,
        schema="analytics",
        postgresql_where=sa.text("NOT deleted"),
    )
    op.create_table(
        "hourly_rollups",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("subscription_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("renewal_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("tip_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ppv_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("purchases", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("new_fans", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("expired_fans", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("returning_fans", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("messages_in", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("messages_out", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_shown", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_accepted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_edited", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_rejected", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_autopilot_sends", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ai_attributed_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "hour", name="pk_hourly_rollups"),
        schema="analytics",
    )
    op.create_table(
        "insight_snapshots",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insight_snapshots")),
        schema="analytics",
    )
    op.create_index(
        "ix_insight_snapshots_creator_id_period_created_at",
        "insight_snapshots",
        ["creator_id", "period", "created_at"],
        unique=False,
        schema="analytics",
    )
    op.create_table(
        "insight_summaries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("written_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insight_summaries")),
        schema="analytics",
    )
    op.create_index(
        "ix_insight_summaries_creator_id_period_created_at",
        "insight_summaries",
        ["creator_id", "period", "created_at"],
        unique=False,
        schema="analytics",
    )
    op.create_index(
        "ix_insight_summaries_snapshot_id",
        "insight_summaries",
        ["snapshot_id"],
        unique=False,
        schema="analytics",
    )
    op.create_table(
        "open_waits",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "conversation_id", name="pk_open_waits"),
        schema="analytics",
    )
    op.create_table(
        "platform_revenue",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("revenue_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("purchases", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "day", "platform", name="pk_platform_revenue"),
        schema="analytics",
    )
    op.create_table(
        "response_buckets",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("replies", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "day", "bucket", name="pk_response_buckets"),
        schema="analytics",
    )
    op.create_table(
        "unread_messages",
        sa.Column("creator_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("creator_id", "message_id", name="pk_unread_messages"),
        schema="analytics",
    )

    op.execute(ENSURE_PARTITION)
    # This month's partition and the next two: ingest rarely has to make one.
    op.execute(
        "SELECT analytics.ensure_event_partition(now() + make_interval(months => m))"
        " FROM generate_series(0, 2) AS m"
    )
    create_outbox_tables("analytics")


def downgrade() -> None:
    drop_outbox_tables("analytics")
    op.execute("DROP FUNCTION analytics.ensure_event_partition(timestamptz)")
    op.drop_table("active_days", schema="analytics")
    op.drop_table("unread_messages", schema="analytics")
    op.drop_table("response_buckets", schema="analytics")
    op.drop_table("platform_revenue", schema="analytics")
    op.drop_table("open_waits", schema="analytics")
    op.drop_index(
        "ix_insight_summaries_snapshot_id", table_name="insight_summaries", schema="analytics"
    )
    op.drop_index(
        "ix_insight_summaries_creator_id_period_created_at",
        table_name="insight_summaries",
        schema="analytics",
    )
    op.drop_table("insight_summaries", schema="analytics")
    op.drop_index(
        "ix_insight_snapshots_creator_id_period_created_at",
        table_name="insight_snapshots",
        schema="analytics",
    )
    op.drop_table("insight_snapshots", schema="analytics")
    op.drop_table("hourly_rollups", schema="analytics")
    op.drop_index("ix_fans_creator_id_spend_cents_fan_id", table_name="fans", schema="analytics")
    op.drop_index("ix_fans_creator_id_last_active_at", table_name="fans", schema="analytics")
    op.drop_index("ix_fans_creator_id_expires_at", table_name="fans", schema="analytics")
    op.drop_table("fans", schema="analytics")
    op.drop_table("fan_days", schema="analytics")
    op.drop_index("ix_events_seq", table_name="events", schema="analytics")
    op.drop_index("ix_events_creator_id_occurred_at", table_name="events", schema="analytics")
    op.drop_table("events", schema="analytics")
    op.drop_table("event_counts", schema="analytics")
    op.drop_table("daily_rollups", schema="analytics")
    op.drop_table("creators", schema="analytics")
    op.drop_table("campaigns", schema="analytics")
    op.drop_table("accounts", schema="analytics")
