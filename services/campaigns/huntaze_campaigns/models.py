"""The `campaigns` schema: each creator's templates (seeded per niche), campaigns (their variants,
steps, exclusions and the seed their random draws came from), the audience snapshot taken when
a campaign is scheduled (each fan's variant, or the holdout), one row per message to send (the
scheduler's queue, whose key is the CRM's idempotency key), and the purchases attributed to a
campaign within its window."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "campaigns"

NICHES = ("general", "fitness", "gaming", "adult", "fashion")
KINDS = ("one_off", "welcome", "reengagement", "sequence")
STATUSES = ("draft", "scheduled", "running", "paused", "completed", "cancelled")
# queued -> requested (the CRM stored it) -> sent | failed; or skipped, stopped, cancelled;
# a mass message's sent copies may then be unsent.
SEND_STATES = (
    "queued",
    "requested",
    "sent",
    "failed",
    "skipped",
    "stopped",
    "cancelled",
    "unsent",
)
# requested (the command published) -> queued (the platform took it) | failed;
# queued -> unsend_requested -> unsent | unsend_failed.
MASS_STATES = ("requested", "queued", "failed", "unsend_requested", "unsent", "unsend_failed")

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


class Base(DeclarativeBase):
    metadata = metadata


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _timestamp(*, nullable: bool = False) -> Any:
    return mapped_column(
        DateTime(timezone=True),
        nullable=nullable,
        server_default=None if nullable else sql("now()"),
    )


def _count() -> Any:
    return mapped_column(BigInteger, server_default="0")


def _label() -> Any:
    return mapped_column(Text, server_default="")


class Template(Base):
    """A message to start a campaign from; the seeded ones carry their seed's key, so seeding
    again adds only what is missing."""

    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("creator_id", "seed_key"),
        CheckConstraint(_one_of("niche", NICHES), name="niche"),
        CheckConstraint("price_cents >= 0", name="price_cents"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    seed_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    niche: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    price_cents: Mapped[int] = _count()
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(_one_of("kind", KINDS), name="kind"),
        CheckConstraint(_one_of("status", STATUSES), name="status"),
        CheckConstraint("holdout_percent BETWEEN 0 AND 50", name="holdout_percent"),
        Index("ix_campaigns_creator_id_created_at", "creator_id", "created_at", "id"),
        Index(
            "ix_campaigns_welcome",
            "creator_id",
            postgresql_where=sql("kind = 'welcome' AND status = 'running'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="draft")
    list_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    silent_for_days: Mapped[int] = mapped_column(Integer, server_default="0")
    # {"automated_within_hours": int, "human_within_hours": int, "bought_in_campaign_ids": [..]}
    exclusions: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=sql("'{}'::jsonb"))
    # [{"key", "text", "price_cents", "weight"}]
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    # [{"delay_minutes", "text", "price_cents"}]
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=sql("'[]'::jsonb"))
    holdout_percent: Mapped[int] = mapped_column(Integer, server_default="0")
    attribution_window_hours: Mapped[int] = mapped_column(Integer, server_default="72")
    timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    template_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    # The seed of the holdout and variant draws: recorded, so the draw can be told again.
    seed: Mapped[int] = mapped_column(BigInteger)
    send_at: Mapped[datetime | None] = _timestamp(nullable=True)
    audience_count: Mapped[int] = _count()
    holdout_count: Mapped[int] = _count()
    excluded_count: Mapped[int] = _count()
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()
    completed_at: Mapped[datetime | None] = _timestamp(nullable=True)
    # Sent through the platform's mass-message queue (decided when scheduled: one variant, no
    # per-fan text), rather than fan by fan through the CRM.
    mass_message: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    unsent_at: Mapped[datetime | None] = _timestamp(nullable=True)


class Recipient(Base):
    """One fan of a campaign's audience snapshot: their variant, or the holdout (never sent
    to); `enrolled_at` starts their attribution window."""

    __tablename__ = "recipients"
    __table_args__ = (
        ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        Index("ix_recipients_creator_id_fan_id", "creator_id", "fan_id"),
    )

    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    platform_fan_id: Mapped[str] = _label()
    display_name: Mapped[str] = _label()
    # The variant's key; empty for the holdout.
    variant: Mapped[str] = _label()
    holdout: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    enrolled_at: Mapped[datetime] = _timestamp()
    # Sequences: when and why the follow-ups stopped (replied, bought).
    stopped_at: Mapped[datetime | None] = _timestamp(nullable=True)
    stop_reason: Mapped[str] = _label()
    # The fan's first purchase attributed to the campaign (within its window).
    converted_at: Mapped[datetime | None] = _timestamp(nullable=True)


class Send(Base):
    """One message to one fan (step 0 is the first message, then a sequence's follow-ups).
    Claimed by the scheduler when due; its key is the CRM's idempotency key, so a send made
    again after a crash answers the message made the first time."""

    __tablename__ = "sends"
    __table_args__ = (
        ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        CheckConstraint(_one_of("state", SEND_STATES), name="state"),
        Index("ix_sends_due", "due_at", postgresql_where=sql("state = 'queued'")),
        Index("ix_sends_campaign_id_fan_id", "campaign_id", "fan_id"),
    )

    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    variant: Mapped[str] = _label()
    state: Mapped[str] = mapped_column(Text, server_default="queued")
    # Why it was skipped, stopped or failed (automation_budget, excluded, fan_gone, ...).
    reason: Mapped[str] = _label()
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = _timestamp(nullable=True)
    crm_message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    platform_message_id: Mapped[str] = _label()
    requested_at: Mapped[datetime | None] = _timestamp(nullable=True)
    sent_at: Mapped[datetime | None] = _timestamp(nullable=True)
    # The mass message that carries it (`MassMessage.idempotency_key`), if one does.
    mass_key: Mapped[str] = _label()


class MassMessage(Base):
    """One platform mass message of a campaign (up to `MASS_CHUNK` fans): the command sent to
    the worker under its key, and what the platform reported of it (its queue's figures)."""

    __tablename__ = "mass_messages"
    __table_args__ = (
        ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        CheckConstraint(_one_of("state", MASS_STATES), name="state"),
        Index("ix_mass_messages_campaign_id", "campaign_id"),
    )

    idempotency_key: Mapped[str] = mapped_column(Text, primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    state: Mapped[str] = mapped_column(Text, server_default="requested")
    recipients: Mapped[int] = mapped_column(Integer, server_default="0")
    platform_queue_id: Mapped[str] = _label()
    sent: Mapped[int] = mapped_column(Integer, server_default="0")
    viewed: Mapped[int] = mapped_column(Integer, server_default="0")
    purchased: Mapped[int] = mapped_column(Integer, server_default="0")
    reason: Mapped[str] = _label()
    requested_at: Mapped[datetime] = _timestamp()
    queued_at: Mapped[datetime | None] = _timestamp(nullable=True)
    unsent_at: Mapped[datetime | None] = _timestamp(nullable=True)


class AttributedPurchase(Base):
    """A purchase of a campaign's recipient (or holdout fan) within its window; `from_message`
    when it bought one of the campaign's messages."""

    __tablename__ = "purchases"
    __table_args__ = (
        ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        Index("ix_purchases_creator_id_fan_id", "creator_id", "fan_id"),
    )

    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    purchase_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    amount_cents: Mapped[int] = _count()
    crm_message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    from_message: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SendTally(Base):
    """How many sends of a campaign's variant are in each state (with each reason), kept by
    statement triggers on `sends` (migration 0001): the metrics read a few rows, not one per
    recipient."""

    __tablename__ = "send_tallies"
    __table_args__ = (ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),)

    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text, primary_key=True)
    sends: Mapped[int] = _count()


class RecipientTally(Base):
    """Per variant (or the holdout): recipients, stopped sequences, converted fans, and the
    purchases and revenue of the campaign's messages; kept by statement triggers on
    `recipients` and `purchases`."""

    __tablename__ = "recipient_tallies"
    __table_args__ = (ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),)

    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    variant: Mapped[str] = mapped_column(Text, primary_key=True)
    holdout: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    recipients: Mapped[int] = _count()
    stopped: Mapped[int] = _count()
    converted: Mapped[int] = _count()
    purchases: Mapped[int] = _count()
    revenue_cents: Mapped[int] = _count()
