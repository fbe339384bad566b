"""The `onlyfans` schema: connections, sync cursors, send attempts, leases, and the credential
vault's sealed secrets (the creator's login and the browser session live there, encrypted).

A sealed secret holds only ciphertext: the secret encrypted under its own data key, and that data
key wrapped by a master key (`key_id` names which, so a rotation finds what it has not re-wrapped
yet). With Secrets Manager configured, `ciphertext` is null and the encrypted secret lives at
`of/creds/{creator_id}` instead.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, LargeBinary, MetaData, Text
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "onlyfans"

SECRET_LOCATIONS = ("database", "secrets_manager")
CONNECTION_STATES = (
    "disconnected",
    "connected",
    "needs_otp",
    "needs_session_import",
    "failed",
    "needs_attention",
)
SEND_STATES = ("sending", "sent", "failed")
CURSOR_KINDS = ("chat", "transactions")

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


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class Base(DeclarativeBase):
    metadata = metadata


class VaultSecret(Base):
    """One secret of one creator (say `credentials` or `session`), envelope-encrypted."""

    __tablename__ = "vault_secrets"
    __table_args__ = (
        CheckConstraint(_in("location", SECRET_LOCATIONS), name="location"),
        CheckConstraint(
            "(location = 'database') = (ciphertext IS NOT NULL)", name="ciphertext_location"
        ),
        Index(None, "key_id"),
    )

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    key_id: Mapped[str] = mapped_column(Text)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class Connection(Base):
    """The creator's OnlyFans account as the worker drives it."""

    __tablename__ = "connections"
    __table_args__ = (CheckConstraint(_in("state", CONNECTION_STATES), name="state"),)

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    # What the creator is told while not connected (never a secret).
    reason: Mapped[str] = mapped_column(Text, server_default="")
    platform_user_id: Mapped[str] = mapped_column(Text, server_default="")
    username: Mapped[str] = mapped_column(Text, server_default="")
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by a 429: nothing is sent to the platform for this account before then.
    backoff_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class SyncCursor(Base):
    """How far sync has read: per chat the newest message id, and the newest transaction."""

    __tablename__ = "sync_cursors"
    __table_args__ = (CheckConstraint(_in("kind", CURSOR_KINDS), name="kind"),)

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    # The platform fan id of a chat; empty for transactions.
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class SendAttempt(Base):
    """One outgoing message by its idempotency key, written (and committed) before the send."""

    __tablename__ = "send_attempts"
    __table_args__ = (
        CheckConstraint(_in("state", SEND_STATES), name="state"),
        Index(None, "creator_id", "created_at"),
    )

    idempotency_key: Mapped[str] = mapped_column(Text, primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    # The CRM's message id, or empty for a mass message.
    message_id: Mapped[str] = mapped_column(Text)
    platform_fan_id: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    platform_message_id: Mapped[str] = mapped_column(Text, server_default="")
    reason: Mapped[str] = mapped_column(Text, server_default="")
    # When the latest attempt began: a copy found on the platform after it is ours.
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class Lease(Base):
    """The worker process that drives an account, until `expires_at` unless renewed."""

    __tablename__ = "leases"

    creator_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
