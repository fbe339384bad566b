"""The `analytics` schema.

`events` is the append-only record of every event consumed (partitioned by month of
`occurred_at`); everything else is derived from it and can be rebuilt from it
(`python -m huntaze_analytics rebuild`): the per-creator state (`creators`, `fans`,
`open_waits`, `unread_messages`, `accounts`, `campaigns`) and the rollups per creator and day
(`daily_rollups`, `platform_revenue`, `response_buckets`, `event_counts`, `fan_days`,
`active_days`) or hour
(`hourly_rollups`) in the creator's timezone. Insight snapshots and their written summaries are
kept per period.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import JSONB, UUID

SCHEMA = "analytics"

metadata = MetaData(
    schema=SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    },
)

# The partitions of `events` are named `events_YYYYMM`.
EVENTS_PARTITION_PREFIX = "events_"


def _now() -> Column[object]:
    return Column(
        "created_at", DateTime(timezone=True), server_default=sql("now()"), nullable=False
    )


def _counts(*names: str) -> list[Column[int]]:
    return [Column(name, BigInteger(), server_default="0", nullable=False) for name in names]


events = Table(
    "events",
    metadata,
    # The order events were stored in: a rebuild applies them in this order again.
    Column("seq", BigInteger(), Identity(always=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    # The subject, e.g. `crm.purchase.recorded`.
    Column("event_type", Text(), nullable=False),
    # The protobuf message's full name.
    Column("message_type", Text(), nullable=False),
    Column("creator_id", UUID(as_uuid=True), nullable=True),
    Column("aggregate_type", Text(), server_default="", nullable=False),
    Column("aggregate_id", Text(), server_default="", nullable=False),
    # When it happened (the payload's business time when it has one), not when it arrived.
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), server_default=sql("now()"), nullable=False),
    Column("payload", LargeBinary(), nullable=False),
    PrimaryKeyConstraint("event_id", "occurred_at", name="pk_events"),
    Index("ix_events_creator_id_occurred_at", "creator_id", "occurred_at"),
    Index("ix_events_seq", "seq"),
    postgresql_partition_by="RANGE (occurred_at)",
)

creators = Table(
    "creators",
    metadata,
    Column("creator_id", UUID(as_uuid=True), primary_key=True),
    # An IANA name from the creator's profile.
    Column("timezone", Text(), server_default="UTC", nullable=False),
    *_counts("fans_total", "subscribers"),
    Column("updated_at", DateTime(timezone=True), server_default=sql("now()"), nullable=False),
)

fans = Table(
    "fans",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("fan_id", UUID(as_uuid=True), nullable=False),
    Column("display_name", Text(), server_default="", nullable=False),
    Column("platform", Text(), server_default="other", nullable=False),
    # none, active, cancelled (renewal off), expired; `deleted` once the CRM deleted the fan.
    Column("state", Text(), server_default="none", nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_active_at", DateTime(timezone=True), nullable=True),
    Column("last_purchase_at", DateTime(timezone=True), nullable=True),
    *_counts("spend_cents", "purchases", "messages_in"),
    # The subscription ended once: a new one makes the fan "returning".
    Column("lapsed", Boolean(), server_default=sql("false"), nullable=False),
    Column("deleted", Boolean(), server_default=sql("false"), nullable=False),
    PrimaryKeyConstraint("creator_id", "fan_id", name="pk_fans"),
    # Partial indexes of the fans not deleted: top spenders read in index order, active fans
    # counted from the index alone.
    Index(
        "ix_fans_creator_id_spend_cents_fan_id",
        "creator_id",
        "spend_cents",
        "fan_id",
        postgresql_where=sql("NOT deleted"),
    ),
    Index(
        "ix_fans_creator_id_last_active_at",
        "creator_id",
        "last_active_at",
        postgresql_where=sql("NOT deleted"),
    ),
    Index("ix_fans_creator_id_expires_at", "creator_id", "expires_at"),
)

# Conversations whose fan wrote and got no reply yet, since when.
open_waits = Table(
    "open_waits",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("conversation_id", UUID(as_uuid=True), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("creator_id", "conversation_id", name="pk_open_waits"),
)

unread_messages = Table(
    "unread_messages",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("creator_id", "message_id", name="pk_unread_messages"),
)

# Platform accounts and whether a person must act (the worker paused them).
accounts = Table(
    "accounts",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("platform", Text(), nullable=False),
    Column("needs_attention", Boolean(), nullable=False),
    Column("reason", Text(), server_default="", nullable=False),
    Column("message", Text(), server_default="", nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("creator_id", "platform", name="pk_accounts"),
)

# Each campaign's last lifecycle event (from the event headers: any campaign event counts).
campaigns = Table(
    "campaigns",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("campaign_id", Text(), nullable=False),
    Column("active", Boolean(), nullable=False),
    Column("last_event_type", Text(), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("creator_id", "campaign_id", name="pk_campaigns"),
)

ROLLUP_COUNTS = (
    "revenue_cents",
    "subscription_cents",
    "renewal_cents",
    "tip_cents",
    "ppv_cents",
    "purchases",
    "new_fans",
    "expired_fans",
    "returning_fans",
    "messages_in",
    "messages_out",
    "ai_shown",
    "ai_accepted",
    "ai_edited",
    "ai_rejected",
    "ai_autopilot_sends",
    "ai_attributed_cents",
)

daily_rollups = Table(
    "daily_rollups",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    # The creator's own day.
    Column("day", Date(), nullable=False),
    *_counts(*ROLLUP_COUNTS),
    PrimaryKeyConstraint("creator_id", "day", name="pk_daily_rollups"),
)

hourly_rollups = Table(
    "hourly_rollups",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    # The start of the creator's own hour, as wall-clock time.
    Column("hour", DateTime(timezone=False), nullable=False),
    *_counts(*ROLLUP_COUNTS),
    PrimaryKeyConstraint("creator_id", "hour", name="pk_hourly_rollups"),
)

platform_revenue = Table(
    "platform_revenue",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("day", Date(), nullable=False),
    Column("platform", Text(), nullable=False),
    *_counts("revenue_cents", "purchases"),
    PrimaryKeyConstraint("creator_id", "day", "platform", name="pk_platform_revenue"),
)

# Response times as a histogram per day (see `huntaze_analytics.facts.response_bucket`).
response_buckets = Table(
    "response_buckets",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("day", Date(), nullable=False),
    Column("bucket", SmallInteger(), nullable=False),
    *_counts("replies"),
    PrimaryKeyConstraint("creator_id", "day", "bucket", name="pk_response_buckets"),
)

# Every event type per day: campaign results, and whatever else a chart may want.
event_counts = Table(
    "event_counts",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("day", Date(), nullable=False),
    Column("event_type", Text(), nullable=False),
    *_counts("events", "amount_cents"),
    PrimaryKeyConstraint("creator_id", "day", "event_type", name="pk_event_counts"),
)

# The fans active (wrote or bought) on each day.
fan_days = Table(
    "fan_days",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("day", Date(), nullable=False),
    Column("fan_id", UUID(as_uuid=True), nullable=False),
    PrimaryKeyConstraint("creator_id", "day", "fan_id", name="pk_fan_days"),
)

# How many fans were last active on each day: the fans active since a day are a sum. (A day
# whose count falls back to 0 may keep its row.)
active_days = Table(
    "active_days",
    metadata,
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("day", Date(), nullable=False),
    *_counts("fans"),
    PrimaryKeyConstraint("creator_id", "day", name="pk_active_days"),
)

insight_snapshots = Table(
    "insight_snapshots",
    metadata,
    Column("id", BigInteger(), Identity(always=False), primary_key=True),
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    # 7d, 30d or 90d.
    Column("period", Text(), nullable=False),
    Column("period_start", Date(), nullable=False),
    Column("period_end", Date(), nullable=False),
    # The FanInsights message as JSON.
    Column("raw", JSONB(), nullable=False),
    _now(),
    Index(
        "ix_insight_snapshots_creator_id_period_created_at", "creator_id", "period", "created_at"
    ),
)

insight_summaries = Table(
    "insight_summaries",
    metadata,
    Column("id", BigInteger(), Identity(always=False), primary_key=True),
    Column("snapshot_id", BigInteger(), nullable=False),
    Column("creator_id", UUID(as_uuid=True), nullable=False),
    Column("period", Text(), nullable=False),
    Column("summary", Text(), nullable=False),
    # `facts`, or the LLM provider that wrote it.
    Column("written_by", Text(), nullable=False),
    _now(),
    Index(
        "ix_insight_summaries_creator_id_period_created_at", "creator_id", "period", "created_at"
    ),
    Index("ix_insight_summaries_snapshot_id", "snapshot_id"),
)

# Derived from `events`: emptied and filled again by a rebuild.
DERIVED_TABLES = (
    creators,
    fans,
    open_waits,
    unread_messages,
    accounts,
    campaigns,
    daily_rollups,
    hourly_rollups,
    platform_revenue,
    response_buckets,
    event_counts,
    fan_days,
    active_days,
)
