"""The `ai` schema: each creator's configuration and the style index of their past replies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Computed, DateTime, Identity, Index, MetaData, Text
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "ai"

# `simple` (no stemming, no stop words): creators and fans write in many languages.
SEARCH_CONFIG = "simple"

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
