"""The `crm` schema: fans, conversations, messages, purchases, quick replies, fan lists and the
inbox events that feed `WatchInbox`.

Every row carries its `creator_id`. Child rows point to their parents through composite foreign
keys `(creator_id, parent_id)`, so the database itself refuses a conversation, message, purchase
or list member that would join one creator's row to another creator's.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "crm"

# The text-search configuration of every tsvector and query: `simple` (no stemming, no stop
# words) because creators and fans write in many languages.
SEARCH_CONFIG = "simple"


def fan_shown_name(table: str = "") -> str:
    """The SQL of the name a fan is shown by: the creator's own name for them when set, else
    the platform's (`table`: the alias of `crm.fans`, when needed)."""
    p = f"{table}." if table else ""
    return f"coalesce(nullif({p}custom_display_name, ''), {p}display_name)"


# The prefix-matching search query (`migrations/versions/0003`): every word also matches as the
# start of a word (`Mar` finds Marco), in web-search syntax.
PREFIX_TSQUERY = f"{SCHEMA}.prefix_tsquery"


def like_prefix(query: str) -> str:
    """The LIKE pattern of the strings starting with `query` (its wildcards escaped)."""
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


PLATFORMS = ("onlyfans", "tiktok", "instagram", "reddit")
SUBSCRIPTION_STATES = ("none", "active", "cancelled", "expired")
DIRECTIONS = ("in", "out")
DELIVERY_STATUSES = ("received", "queued", "sending", "sent", "failed", "unsent")
SENDER_KINDS = ("fan", "creator", "ai", "automation", "team_member")
PURCHASE_KINDS = ("tip", "ppv_unlock", "subscription", "renewal")
FAN_LIST_KINDS = ("static", "dynamic")

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


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _timestamp(*, nullable: bool = False, default_now: bool = True) -> Any:
    return mapped_column(
        DateTime(timezone=True),
        nullable=nullable,
        server_default=sql("now()") if default_now and not nullable else None,
    )


def _creator() -> Any:
    return mapped_column(UUID(as_uuid=True), nullable=False)


class Base(DeclarativeBase):
    metadata = metadata


class Fan(Base):
    __tablename__ = "fans"
    __table_args__ = (
        UniqueConstraint("creator_id", "id"),
        UniqueConstraint("creator_id", "platform", "platform_fan_id"),
        CheckConstraint(_one_of("platform", PLATFORMS), name="platform"),
        CheckConstraint(_one_of("subscription_state", SUBSCRIPTION_STATES), name="subscription"),
        CheckConstraint("value_cents >= 0", name="value_cents"),
        Index("ix_fans_creator_id_created_at", "creator_id", "created_at", "id"),
        Index("ix_fans_creator_id_value_cents", "creator_id", "value_cents", "id"),
        Index("ix_fans_creator_id_last_message_at", "creator_id", "last_message_at", "id"),
        Index("ix_fans_creator_id_last_seen_at", "creator_id", "last_seen_at", "id"),
        # Tag filters compare `tag_keys(tags)`: tags without regard to case.
        Index("ix_fans_tag_keys", sql(f"{SCHEMA}.tag_keys(tags)"), postgresql_using="gin"),
        # Name prefixes (`LIKE 'mar%'`) of the name shown.
        Index(
            "ix_fans_creator_id_shown_name",
            "creator_id",
            sql(f"lower({fan_shown_name()}) text_pattern_ops"),
        ),
        Index("ix_fans_search_vector", "search_vector", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    platform: Mapped[str] = mapped_column(Text)
    platform_fan_id: Mapped[str | None] = mapped_column(Text)
    # The name the fan goes by on the platform (a platform sync keeps it up to date) ...
    display_name: Mapped[str] = mapped_column(Text, server_default="")
    # ... and the creator's own name for them, shown instead when set; a sync never changes it.
    custom_display_name: Mapped[str] = mapped_column(Text, server_default="")
    handle: Mapped[str] = mapped_column(Text, server_default="")
    avatar_url: Mapped[str] = mapped_column(Text, server_default="")
    email: Mapped[str] = mapped_column(Text, server_default="")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=sql("'{}'::text[]"))
    notes: Mapped[str] = mapped_column(Text, server_default="")
    # Derived: the sum of the fan's purchases, recomputed whenever one is recorded.
    value_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    subscription_state: Mapped[str] = mapped_column(Text, server_default="none")
    subscribed_at: Mapped[datetime | None] = _timestamp(nullable=True)
    subscription_expires_at: Mapped[datetime | None] = _timestamp(nullable=True)
    last_seen_at: Mapped[datetime | None] = _timestamp(nullable=True)
    last_message_at: Mapped[datetime | None] = _timestamp(nullable=True)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql("'{}'::jsonb"))
    # Kept up to date by the `fans_search_vector` trigger (names, handle, tags, email, notes).
    search_vector: Mapped[str | None] = mapped_column(TSVECTOR, deferred=True)
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("creator_id", "id"),
        UniqueConstraint("creator_id", "fan_id", "platform"),
        ForeignKeyConstraint(
            ["creator_id", "fan_id"], ["fans.creator_id", "fans.id"], ondelete="CASCADE"
        ),
        CheckConstraint(_one_of("platform", PLATFORMS), name="platform"),
        CheckConstraint("unread_count >= 0", name="unread_count"),
        Index("ix_conversations_creator_id_last_message_at", "creator_id", "last_message_at", "id"),
        Index(
            "ix_conversations_creator_id_pinned", "creator_id", "pinned", "last_message_at", "id"
        ),
        Index(
            "ix_conversations_creator_id_unread_count",
            "creator_id",
            "unread_count",
            "last_message_at",
            "id",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    platform: Mapped[str] = mapped_column(Text)
    unread_count: Mapped[int] = mapped_column(Integer, server_default="0")
    # A conversation opens with its first message: it always has a last message time.
    last_message_at: Mapped[datetime] = _timestamp()
    last_message_preview: Mapped[str] = mapped_column(Text, server_default="")
    pinned: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    archived: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    assigned_member_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("creator_id", "id"),
        # NULLs are distinct: the uniques hold only where the id or key is known.
        UniqueConstraint("creator_id", "platform", "platform_message_id"),
        UniqueConstraint("creator_id", "idempotency_key"),
        ForeignKeyConstraint(
            ["creator_id", "conversation_id"],
            ["conversations.creator_id", "conversations.id"],
            ondelete="CASCADE",
        ),
        ForeignKeyConstraint(
            ["creator_id", "fan_id"], ["fans.creator_id", "fans.id"], ondelete="CASCADE"
        ),
        CheckConstraint(_one_of("platform", PLATFORMS), name="platform"),
        CheckConstraint(_one_of("direction", DIRECTIONS), name="direction"),
        CheckConstraint(_one_of("delivery_status", DELIVERY_STATUSES), name="delivery_status"),
        CheckConstraint(_one_of("sender_kind", SENDER_KINDS), name="sender_kind"),
        CheckConstraint(
            "(direction = 'in') = (delivery_status = 'received')", name="status_direction"
        ),
        CheckConstraint("price_cents >= 0", name="price_cents"),
        Index(
            "ix_messages_creator_id_conversation_id_created_at",
            "creator_id",
            "conversation_id",
            "created_at",
            "id",
        ),
        Index("ix_messages_creator_id_created_at", "creator_id", "created_at", "id"),
        Index(
            "ix_messages_unread",
            "conversation_id",
            postgresql_where=sql("direction = 'in' AND NOT read"),
        ),
        Index("ix_messages_search_vector", "search_vector", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    platform: Mapped[str] = mapped_column(Text)
    direction: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, server_default="")
    price_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=sql("'[]'::jsonb")
    )
    read: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    read_at: Mapped[datetime | None] = _timestamp(nullable=True)
    delivery_status: Mapped[str] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    platform_message_id: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    sender_kind: Mapped[str] = mapped_column(Text)
    sender_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _timestamp()
    sent_at: Mapped[datetime | None] = _timestamp(nullable=True)
    unlocked_at: Mapped[datetime | None] = _timestamp(nullable=True)
    updated_at: Mapped[datetime] = _timestamp()
    search_vector: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(f"to_tsvector('{SEARCH_CONFIG}'::regconfig, text)", persisted=True),
        deferred=True,
    )


class Purchase(Base):
    __tablename__ = "purchases"
    __table_args__ = (
        UniqueConstraint("creator_id", "platform", "platform_transaction_id"),
        ForeignKeyConstraint(
            ["creator_id", "fan_id"], ["fans.creator_id", "fans.id"], ondelete="CASCADE"
        ),
        CheckConstraint(_one_of("platform", PLATFORMS), name="platform"),
        CheckConstraint(_one_of("kind", PURCHASE_KINDS), name="kind"),
        CheckConstraint("amount_cents >= 0", name="amount_cents"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        Index("ix_purchases_creator_id_fan_id_occurred_at", "creator_id", "fan_id", "occurred_at"),
        Index(
            "ix_purchases_unlinked",
            "creator_id",
            "platform",
            "platform_message_id",
            postgresql_where=sql("message_id IS NULL AND platform_message_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="SET NULL")
    )
    platform: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(Text)
    platform_transaction_id: Mapped[str] = mapped_column(Text)
    # The platform's id of the message that sold it, kept to link the message once it is known.
    platform_message_id: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = _timestamp(default_now=False)
    created_at: Mapped[datetime] = _timestamp()


class QuickReply(Base):
    __tablename__ = "quick_replies"
    __table_args__ = (
        UniqueConstraint("creator_id", "shortcut"),
        CheckConstraint("char_length(text) <= 5000", name="text_length"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    shortcut: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()


class FanList(Base):
    __tablename__ = "fan_lists"
    __table_args__ = (
        UniqueConstraint("creator_id", "id"),
        CheckConstraint(_one_of("kind", FAN_LIST_KINDS), name="kind"),
        CheckConstraint("(kind = 'dynamic') = (segment IS NOT NULL)", name="segment"),
        Index("ix_fan_lists_creator_id_name", "creator_id", "name", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    # Dynamic lists: the saved segment filter (see `segments.Segment`).
    segment: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()


class FanListMember(Base):
    __tablename__ = "fan_list_members"
    __table_args__ = (
        ForeignKeyConstraint(
            ["creator_id", "list_id"], ["fan_lists.creator_id", "fan_lists.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["creator_id", "fan_id"], ["fans.creator_id", "fans.id"], ondelete="CASCADE"
        ),
        Index("ix_fan_list_members_fan_id", "fan_id"),
    )

    list_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    added_at: Mapped[datetime] = _timestamp()


class InboxEvent(Base):
    """What `WatchInbox` streams: written in the transaction of the change it describes, kept
    for a bounded time (see `InboxRetention`). `id` increases in commit order per creator,
    because writers hold a per-creator advisory lock from this insert to their commit."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        Index("ix_inbox_events_creator_id_id", "creator_id", "id"),
        Index("ix_inbox_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    creator_id: Mapped[uuid.UUID] = _creator()
    type: Mapped[str] = mapped_column(Text)
    # The serialised payload message of `InboxEvent` for this type.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _timestamp()


class InboxRetention(Base):
    """Per creator, the highest inbox event id pruned so far: a watcher resuming from before it
    has missed events and is told to reload."""

    __tablename__ = "inbox_retention"

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    pruned_through_id: Mapped[int] = mapped_column(BigInteger)


class AutomationBudget(Base):
    """A creator's per-fan budget of automated messages per rolling day (the setting's
    default until they choose one)."""

    __tablename__ = "automation_budgets"
    __table_args__ = (CheckConstraint("messages_per_fan_per_day BETWEEN 0 AND 1000", name="range"),)

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    messages_per_fan_per_day: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = _timestamp()
