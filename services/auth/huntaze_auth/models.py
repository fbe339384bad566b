"""The `auth` schema: users, sessions and their refresh tokens, one-time tokens, two-factor
recovery codes, login attempts, known devices, profiles and signing keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "auth"

metadata = MetaData(
    schema=SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)

TOKEN_PURPOSES = ("email_verification", "password_reset", "two_factor_login")


def _timestamp(*, nullable: bool = False, default_now: bool = False) -> Any:
    return mapped_column(
        DateTime(timezone=True),
        nullable=nullable,
        server_default=text("now()") if default_now else None,
    )


class Base(DeclarativeBase):
    metadata = metadata


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Normalised: lower-case, as email-validator writes it.
    email: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text, server_default="")
    password_hash: Mapped[str] = mapped_column(Text)
    password_changed_at: Mapped[datetime] = _timestamp(default_now=True)
    email_verified_at: Mapped[datetime | None] = _timestamp(nullable=True)
    # TOTP secrets are sealed with the service's sealing key; the pending one awaits confirmation.
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_pending_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled_at: Mapped[datetime | None] = _timestamp(nullable=True)
    # The last accepted TOTP time step: a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _timestamp(default_now=True)
    updated_at: Mapped[datetime] = _timestamp(default_now=True)


class UserProfile(Base):
    __tablename__ = "user_profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    display_name: Mapped[str] = mapped_column(Text, server_default="")
    bio: Mapped[str] = mapped_column(Text, server_default="")
    timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    niche: Mapped[str] = mapped_column(Text, server_default="")
    goals: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    onboarding_completed_at: Mapped[datetime | None] = _timestamp(nullable=True)
    created_at: Mapped[datetime] = _timestamp(default_now=True)
    updated_at: Mapped[datetime] = _timestamp(default_now=True)


class Session(Base):
    """A signed-in device. The session is also the refresh-token family: every refresh token
    it ever had belongs to it, and reuse of a spent one revokes it."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_user_id_active", "user_id", postgresql_where=text("revoked_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE")
    )
    ip_address: Mapped[str] = mapped_column(Text, server_default="")
    user_agent: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = _timestamp()
    last_used_at: Mapped[datetime] = _timestamp()
    # Absolute: refreshing never extends it.
    expires_at: Mapped[datetime] = _timestamp()
    revoked_at: Mapped[datetime | None] = _timestamp(nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text)


class RefreshToken(Base):
    """Every refresh token of a session, by SHA-256; `used_at` is set when it is exchanged."""

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    issued_at: Mapped[datetime] = _timestamp()
    used_at: Mapped[datetime | None] = _timestamp(nullable=True)


class OneTimeToken(Base):
    """Email verification, password reset and two-factor login challenges, by SHA-256.

    `used_at` is set when the token is redeemed or superseded; redeeming is a single
    conditional UPDATE, so a token works once however many requests race for it.
    """

    __tablename__ = "one_time_tokens"
    __table_args__ = (
        CheckConstraint(
            "purpose IN ('email_verification', 'password_reset', 'two_factor_login')",
            name="purpose",
        ),
        Index(
            "ix_one_time_tokens_user_id_purpose_open",
            "user_id",
            "purpose",
            postgresql_where=text("used_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE")
    )
    purpose: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = _timestamp()
    expires_at: Mapped[datetime] = _timestamp()
    used_at: Mapped[datetime | None] = _timestamp(nullable=True)
    failed_attempts: Mapped[int] = mapped_column(Integer, server_default="0")


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE")
    )
    code_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _timestamp()
    used_at: Mapped[datetime | None] = _timestamp(nullable=True)


class LoginAttempt(Base):
    """One password or two-factor check, for throttling. Keyed by the email as typed
    (normalised), so unknown addresses are throttled exactly like known ones."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_attempted_at", "email", "attempted_at"),
        Index("ix_login_attempts_ip_address_attempted_at", "ip_address", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(Text)
    ip_address: Mapped[str] = mapped_column(Text)
    success: Mapped[bool] = mapped_column(Boolean)
    attempted_at: Mapped[datetime] = _timestamp()


class KnownDevice(Base):
    """A (user agent, IP) a user signed in from, by SHA-256 of the pair."""

    __tablename__ = "known_devices"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    first_seen_at: Mapped[datetime] = _timestamp()
    last_seen_at: Mapped[datetime] = _timestamp()


class OAuthAccount(Base):
    """A linked external identity (for social sign-in, later)."""

    __tablename__ = "oauth_accounts"
    __table_args__ = (UniqueConstraint("provider", "provider_account_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(Text)
    provider_account_id: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _timestamp(default_now=True)


class SigningKey(Base):
    """Ed25519 keys that sign access and service tokens. The newest unretired key signs;
    retired keys stay published until every token they signed has expired."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(Text, primary_key=True)
    private_key_pem: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _timestamp()
    retired_at: Mapped[datetime | None] = _timestamp(nullable=True)


class SealingKey(Base):
    """The generated Fernet key used when `HUNTAZE_AUTH_SEALING_KEY` is not set."""

    __tablename__ = "sealing_keys"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    fernet_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _timestamp(default_now=True)
