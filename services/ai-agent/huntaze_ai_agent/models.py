"""The `ai` schema: each creator's configuration, the style index of their past replies, one
suggestion per incoming fan message (its draft, its fate and its cost), the ledger of LLM calls
(what was paid for, so that nothing is paid twice) and the audit of every AI-written message."""

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
    Identity,
    Index,
    MetaData,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "ai"

# `simple` (no stemming, no stop words): creators and fans write in many languages.
SEARCH_CONFIG = "simple"

SUGGESTION_STATUSES = (
    "pending",
    "suggested",
    "scheduled",
    "sent",
    "accepted",
    "edited",
    "rejected",
    "cancelled",
    "handed_off",
    "ignored",
)
LLM_CALL_STATUSES = ("started", "completed", "failed")

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


class Configuration(Base):
    """A creator's `AiConfiguration`, as its JSON document."""

    __tablename__ = "configurations"

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class PastReply(Base):
    """A creator's reply and the fan message it answered, indexed for retrieval by likeness
    to a new fan message."""

    __tablename__ = "past_replies"
    __table_args__ = (
        Index("ix_past_replies_creator_id_created_at", "creator_id", "created_at"),
        Index("ix_past_replies_search_vector", "search_vector", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    fan_message: Mapped[str] = mapped_column(Text)
    reply: Mapped[str] = mapped_column(Text)
    # The fan's words weigh more than the creator's: a new message is matched against them.
    search_vector: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(
            f"setweight(to_tsvector('{SEARCH_CONFIG}', fan_message), 'A') || "
            f"setweight(to_tsvector('{SEARCH_CONFIG}', reply), 'B')",
            persisted=True,
        ),
        deferred=True,
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class Suggestion(Base):
    """The agent's answer to one incoming fan message: exactly one row per message, however
    often its event arrives, from `pending` to its end (sent, accepted, edited, rejected,
    cancelled, handed off or ignored)."""

    __tablename__ = "suggestions"
    __table_args__ = (
        UniqueConstraint("creator_id", "message_id"),
        CheckConstraint(_one_of("status", SUGGESTION_STATUSES), name="status"),
        Index(
            "ix_suggestions_creator_id_conversation_id_created_at",
            "creator_id",
            "conversation_id",
            "created_at",
        ),
        Index("ix_suggestions_pending", "created_at", postgresql_where=sql("status = 'pending'")),
        Index(
            "ix_suggestions_scheduled", "send_after", postgresql_where=sql("status = 'scheduled'")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    platform: Mapped[str] = mapped_column(Text)
    incoming_text: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = _timestamp()
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    mode: Mapped[str] = _label()
    text: Mapped[str] = _label()
    handoff_reason: Mapped[str] = _label()
    provider: Mapped[str] = _label()
    model: Mapped[str] = _label()
    prompt_fingerprint: Mapped[str] = _label()
    input_tokens: Mapped[int] = _count()
    output_tokens: Mapped[int] = _count()
    cost_micros: Mapped[int] = _count()
    latency_ms: Mapped[int] = _count()
    # Why the local provider wrote it instead of the LLM (over_budget, provider_failed, ...).
    fallback: Mapped[str] = _label()
    send_after: Mapped[datetime | None] = _timestamp(nullable=True)
    # A worker drafting or sending it holds it until then; past it, another may take over.
    claimed_until: Mapped[datetime | None] = _timestamp(nullable=True)
    sent_message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    request_id: Mapped[str] = _label()
    created_at: Mapped[datetime] = _timestamp()
    updated_at: Mapped[datetime] = _timestamp()


class LlmCall(Base):
    """The ledger of paid LLM calls, one per incoming message: written `started` and committed
    before the call, `completed` with the answer after it. A retry finds the answer and reuses
    it; a call found `started` may have been paid for without its answer surviving, so it is
    never made again (the local provider stands in)."""

    __tablename__ = "llm_calls"
    __table_args__ = (
        CheckConstraint(_one_of("status", LLM_CALL_STATUSES), name="status"),
        Index("ix_llm_calls_creator_id_created_at", "creator_id", "created_at"),
    )

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="started")
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    prompt_fingerprint: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = _label()
    error: Mapped[str] = _label()
    input_tokens: Mapped[int] = _count()
    output_tokens: Mapped[int] = _count()
    cost_micros: Mapped[int] = _count()
    latency_ms: Mapped[int] = _count()
    created_at: Mapped[datetime] = _timestamp()
    completed_at: Mapped[datetime | None] = _timestamp(nullable=True)


class AuditEntry(Base):
    """An AI-written message that was sent: what made it, what it cost, who approved it."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index(
            "ix_audit_entries_creator_id_conversation_id_created_at",
            "creator_id",
            "conversation_id",
            "created_at",
        ),
        Index(
            "ix_audit_entries_creator_id_fan_id_created_at", "creator_id", "fan_id", "created_at"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    suggestion_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    conversation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    fan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    sent_message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    text: Mapped[str] = mapped_column(Text)
    prompt_fingerprint: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = _count()
    output_tokens: Mapped[int] = _count()
    cost_micros: Mapped[int] = _count()
    latency_ms: Mapped[int] = _count()
    approved_by: Mapped[str] = mapped_column(Text)
    edited: Mapped[bool] = mapped_column(Boolean, server_default=sql("false"))
    created_at: Mapped[datetime] = _timestamp()
