"""Queries of the `auth` schema. Every function works inside the caller's transaction and
never commits: the service layer decides where a transaction ends.

The reads on every authenticated call (is this session active, who am I) are plain SQL on the
read pool instead (`huntaze_kit.db.fetch_row`): one statement, one round trip, no ORM.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    Boolean,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_auth.models import (
    KnownDevice,
    LoginAttempt,
    OneTimeToken,
    RecoveryCode,
    RefreshToken,
    SealingKey,
    Session,
    SigningKey,
    User,
    UserProfile,
)
from huntaze_kit.db import fetch_row

# --- locks -------------------------------------------------------------------------------------


async def advisory_lock(db: AsyncSession, name: str) -> None:
    """A transaction-scoped lock across every auth replica (key creation, rotation)."""
    key = zlib.crc32(f"huntaze-auth:{name}".encode()) - 2**31
    await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


# --- users -------------------------------------------------------------------------------------


async def insert_user(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    email: str,
    name: str,
    password_hash: str,
    now: datetime,
) -> bool:
    """Adds a user; False when the email is taken (also when a concurrent insert won)."""
    result = await db.execute(
        pg_insert(User)
        .values(
            id=user_id,
            email=email,
            name=name,
            password_hash=password_hash,
            password_changed_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User.id)
    )
    return result.scalar_one_or_none() is not None


async def get_user(
    db: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False
) -> User | None:
    query = select(User).where(User.id == user_id)
    if for_update:
        query = query.with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


async def get_user_by_email(db: AsyncSession, email: str) -> User | None:
    return (await db.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def user_exists(db: AsyncSession, user_id: uuid.UUID) -> bool:
    found = await db.execute(select(User.id).where(User.id == user_id))
    return found.first() is not None


async def set_password_hash(
    db: AsyncSession,
    user_id: uuid.UUID,
    password_hash: str,
    *,
    now: datetime,
    changed: bool = True,
) -> None:
    values: dict[str, Any] = {"password_hash": password_hash, "updated_at": now}
    if changed:
        values["password_changed_at"] = now
    await db.execute(update(User).where(User.id == user_id).values(**values))


async def mark_email_verified(db: AsyncSession, user_id: uuid.UUID, *, now: datetime) -> bool:
    """True when this call verified the address (False: it already was)."""
    result = await db.execute(
        update(User)
        .where(User.id == user_id, User.email_verified_at.is_(None))
        .values(email_verified_at=now, updated_at=now)
        .returning(User.id)
    )
    return result.scalar_one_or_none() is not None


# --- profiles ----------------------------------------------------------------------------------


async def insert_profile(
    db: AsyncSession, *, user_id: uuid.UUID, display_name: str, now: datetime
) -> None:
    await db.execute(
        insert(UserProfile).values(
            user_id=user_id,
            display_name=display_name,
            timezone="UTC",
            goals=[],
            created_at=now,
            updated_at=now,
        )
    )


async def get_profile(
    db: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False
) -> UserProfile | None:
    query = select(UserProfile).where(UserProfile.user_id == user_id)
    if for_update:
        query = query.with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


async def upsert_profile(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    display_name: str,
    bio: str,
    timezone: str,
    niche: str,
    goals: list[str],
    now: datetime,
) -> UserProfile:
    values = {
        "display_name": display_name,
        "bio": bio,
        "timezone": timezone,
        "niche": niche,
        "goals": goals,
        "updated_at": now,
    }
    statement = (
        pg_insert(UserProfile)
        .values(user_id=user_id, created_at=now, **values)
        .on_conflict_do_update(index_elements=[UserProfile.user_id], set_=values)
        .returning(UserProfile)
    )
    result = await db.execute(
        select(UserProfile).from_statement(statement).execution_options(populate_existing=True)
    )
    profile: UserProfile = result.scalar_one()
    return profile


async def complete_onboarding(db: AsyncSession, user_id: uuid.UUID, *, now: datetime) -> bool:
    """True when this call completed it (False: it already was)."""
    result = await db.execute(
        update(UserProfile)
        .where(UserProfile.user_id == user_id, UserProfile.onboarding_completed_at.is_(None))
        .values(onboarding_completed_at=now, updated_at=now)
        .returning(UserProfile.user_id)
    )
    return result.scalar_one_or_none() is not None


# --- one-time tokens ---------------------------------------------------------------------------


async def insert_one_time_token(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    purpose: str,
    token_hash: bytes,
    now: datetime,
    expires_at: datetime,
) -> None:
    await db.execute(
        insert(OneTimeToken).values(
            id=uuid.uuid4(),
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            created_at=now,
            expires_at=expires_at,
        )
    )


async def supersede_one_time_tokens(
    db: AsyncSession, *, user_id: uuid.UUID, purpose: str, now: datetime
) -> None:
    """Ends every open token of this purpose (a resend kills the previous link)."""
    await db.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=now)
    )


async def latest_one_time_token_at(
    db: AsyncSession, *, user_id: uuid.UUID, purpose: str
) -> datetime | None:
    result = await db.execute(
        select(func.max(OneTimeToken.created_at)).where(
            OneTimeToken.user_id == user_id, OneTimeToken.purpose == purpose
        )
    )
    return result.scalar_one_or_none()


async def redeem_one_time_token(
    db: AsyncSession, *, token_hash: bytes, purpose: str, now: datetime
) -> uuid.UUID | None:
    """Spends the token in one conditional UPDATE: however many requests race, one wins.
    Returns its user, or None when it is unknown, spent, superseded or expired."""
    result = await db.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.token_hash == token_hash,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(OneTimeToken.user_id)
    )
    return result.scalar_one_or_none()


async def find_open_one_time_token(
    db: AsyncSession, *, token_hash: bytes, purpose: str, now: datetime
) -> OneTimeToken | None:
    result = await db.execute(
        select(OneTimeToken).where(
            OneTimeToken.token_hash == token_hash,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
    )
    return result.scalar_one_or_none()


async def count_one_time_token_failure(
    db: AsyncSession, token_id: uuid.UUID, *, max_failures: int, now: datetime
) -> None:
    """Counts a wrong code against a challenge; the last allowed failure spends it."""
    failures = OneTimeToken.failed_attempts + 1
    await db.execute(
        update(OneTimeToken)
        .where(OneTimeToken.id == token_id, OneTimeToken.used_at.is_(None))
        .values(failed_attempts=failures, used_at=case((failures >= max_failures, now)))
    )


# --- sessions and refresh tokens ---------------------------------------------------------------


async def insert_session(
    db: AsyncSession,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    ip_address: str,
    user_agent: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    await db.execute(
        insert(Session).values(
            id=session_id,
            user_id=user_id,
            ip_address=ip_address,
            user_agent=user_agent,
            created_at=now,
            last_used_at=now,
            expires_at=expires_at,
        )
    )


async def get_session(
    db: AsyncSession, session_id: uuid.UUID, *, for_update: bool = False
) -> Session | None:
    query = select(Session).where(Session.id == session_id)
    if for_update:
        query = query.with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


_SESSION_IS_ACTIVE = """
SELECT 1 FROM auth.sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2
"""


async def session_is_active(reads: asyncpg.Pool, session_id: uuid.UUID, *, now: datetime) -> bool:
    """`reads`: the read pool."""
    return await fetch_row(reads, _SESSION_IS_ACTIVE, session_id, now) is not None


# The user with their profile (its columns NULL when there is none), as `read_me` answers.
_ME_IN_SESSION = """
SELECT u.id, u.email, u.name, u.email_verified_at, u.totp_enabled_at, u.created_at,
       p.user_id IS NOT NULL AS has_profile, p.display_name, p.bio, p.timezone, p.niche,
       p.goals, p.onboarding_completed_at, p.updated_at
FROM auth.sessions s
JOIN auth.users u ON u.id = s.user_id
LEFT JOIN auth.user_profiles p ON p.user_id = u.id
WHERE s.id = $2 AND s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $3
"""
_ME = """
SELECT u.id, u.email, u.name, u.email_verified_at, u.totp_enabled_at, u.created_at,
       p.user_id IS NOT NULL AS has_profile, p.display_name, p.bio, p.timezone, p.niche,
       p.goals, p.onboarding_completed_at, p.updated_at
FROM auth.users u
LEFT JOIN auth.user_profiles p ON p.user_id = u.id
WHERE u.id = $1
"""


async def read_me(
    reads: asyncpg.Pool, user_id: uuid.UUID, *, session_id: uuid.UUID | None, now: datetime
) -> asyncpg.Record | None:
    """The user and their profile in one row (`reads`: the read pool); with `session_id`, only
    while that session of the user is active. None when there is no such row."""
    if session_id is None:
        return await fetch_row(reads, _ME, user_id)
    return await fetch_row(reads, _ME_IN_SESSION, user_id, session_id, now)


async def list_active_sessions(
    db: AsyncSession, user_id: uuid.UUID, *, now: datetime
) -> Sequence[Session]:
    result = await db.execute(
        select(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now)
        .order_by(Session.last_used_at.desc())
    )
    return result.scalars().all()


async def touch_session(
    db: AsyncSession, session_id: uuid.UUID, *, now: datetime, ip_address: str | None
) -> None:
    values: dict[str, Any] = {"last_used_at": now}
    if ip_address:
        values["ip_address"] = ip_address
    await db.execute(update(Session).where(Session.id == session_id).values(**values))


async def revoke_sessions(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    reason: str,
    now: datetime,
    session_id: uuid.UUID | None = None,
    except_session_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revokes the user's live sessions (one, when `session_id` is given); returns those this
    call revoked."""
    query = update(Session).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    if session_id is not None:
        query = query.where(Session.id == session_id)
    if except_session_id is not None:
        query = query.where(Session.id != except_session_id)
    result = await db.execute(
        query.values(revoked_at=now, revoke_reason=reason).returning(Session.id)
    )
    return list(result.scalars().all())


async def insert_refresh_token(
    db: AsyncSession, *, token_hash: bytes, session_id: uuid.UUID, now: datetime
) -> None:
    await db.execute(
        insert(RefreshToken).values(token_hash=token_hash, session_id=session_id, issued_at=now)
    )


async def spend_refresh_token(
    db: AsyncSession, token_hash: bytes, *, now: datetime
) -> uuid.UUID | None:
    """Marks an unused refresh token used; returns its session, or None when it is unknown or
    was used before."""
    result = await db.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .returning(RefreshToken.session_id)
    )
    return result.scalar_one_or_none()


async def refresh_token_owner(db: AsyncSession, token_hash: bytes) -> Session | None:
    """The session a (possibly used) refresh token belongs to."""
    result = await db.execute(
        select(Session)
        .join(RefreshToken, RefreshToken.session_id == Session.id)
        .where(RefreshToken.token_hash == token_hash)
    )
    return result.scalar_one_or_none()


async def spend_session_refresh_tokens(
    db: AsyncSession, session_id: uuid.UUID, *, now: datetime
) -> None:
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == session_id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )


# --- login attempts and devices ----------------------------------------------------------------


async def record_login_attempt(
    db: AsyncSession, *, email: str, ip_address: str, success: bool, now: datetime
) -> None:
    await db.execute(
        insert(LoginAttempt).values(
            email=email, ip_address=ip_address, success=success, attempted_at=now
        )
    )


async def nth_latest_failure(
    db: AsyncSession,
    *,
    n: int,
    since: datetime,
    email: str | None = None,
    ip_address: str | None = None,
    reset_by_success: bool = False,
) -> datetime | None:
    """When the `n`-th most recent failed attempt matching `email` and/or `ip_address` since
    `since` happened: None when there are fewer than `n`. With `reset_by_success`, failures
    before the latest matching success do not count."""
    conditions = [LoginAttempt.attempted_at > since]
    if email is not None:
        conditions.append(LoginAttempt.email == email)
    if ip_address is not None:
        conditions.append(LoginAttempt.ip_address == ip_address)
    query = select(LoginAttempt.attempted_at).where(*conditions, LoginAttempt.success.is_(False))
    if reset_by_success:
        last_success = (
            select(func.max(LoginAttempt.attempted_at))
            .where(*conditions, LoginAttempt.success.is_(True))
            .scalar_subquery()
        )
        query = query.where(or_(last_success.is_(None), LoginAttempt.attempted_at > last_success))
    query = query.order_by(LoginAttempt.attempted_at.desc()).offset(n - 1).limit(1)
    return (await db.execute(query)).scalar_one_or_none()


async def is_known_device(db: AsyncSession, user_id: uuid.UUID, fingerprint: bytes) -> bool:
    found = await db.execute(
        select(KnownDevice.user_id).where(
            KnownDevice.user_id == user_id, KnownDevice.fingerprint == fingerprint
        )
    )
    return found.first() is not None


async def remember_device(
    db: AsyncSession, user_id: uuid.UUID, fingerprint: bytes, *, now: datetime
) -> bool:
    """Records a sign-in from this device; True when it was never seen before."""
    statement = (
        pg_insert(KnownDevice)
        .values(user_id=user_id, fingerprint=fingerprint, first_seen_at=now, last_seen_at=now)
        .on_conflict_do_update(
            index_elements=[KnownDevice.user_id, KnownDevice.fingerprint],
            set_={"last_seen_at": now},
        )
        # xmax is 0 on a freshly inserted row, set on one the upsert updated.
        .returning(literal_column("(xmax = 0)", type_=Boolean))
    )
    return bool((await db.execute(statement)).scalar_one())


async def count_known_devices(db: AsyncSession, user_id: uuid.UUID) -> int:
    result = await db.execute(
        select(func.count()).select_from(KnownDevice).where(KnownDevice.user_id == user_id)
    )
    return int(result.scalar_one())


# --- recovery codes ----------------------------------------------------------------------------


async def replace_recovery_codes(
    db: AsyncSession, user_id: uuid.UUID, code_hashes: list[bytes], *, now: datetime
) -> None:
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    await db.execute(
        insert(RecoveryCode),
        [
            {"id": uuid.uuid4(), "user_id": user_id, "code_hash": h, "created_at": now}
            for h in code_hashes
        ],
    )


async def delete_recovery_codes(db: AsyncSession, user_id: uuid.UUID) -> None:
    await db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))


async def spend_recovery_code(
    db: AsyncSession, user_id: uuid.UUID, code_hash: bytes, *, now: datetime
) -> bool:
    result = await db.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == code_hash,
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .returning(RecoveryCode.id)
    )
    return result.scalar_one_or_none() is not None


# --- two-factor state --------------------------------------------------------------------------


async def set_totp_state(db: AsyncSession, user_id: uuid.UUID, **values: Any) -> None:
    await db.execute(update(User).where(User.id == user_id).values(**values))


# --- keys --------------------------------------------------------------------------------------


async def list_signing_keys(db: AsyncSession, *, retired_after: datetime) -> Sequence[SigningKey]:
    """Active keys and keys retired after `retired_after`, newest first."""
    result = await db.execute(
        select(SigningKey)
        .where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > retired_after))
        .order_by(SigningKey.created_at.desc())
    )
    return result.scalars().all()


async def newest_active_signing_key(db: AsyncSession) -> SigningKey | None:
    result = await db.execute(
        select(SigningKey)
        .where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def insert_signing_key(
    db: AsyncSession,
    *,
    kid: str,
    private_key_pem: str,
    public_jwk: dict[str, Any],
    now: datetime,
) -> None:
    await db.execute(
        insert(SigningKey).values(
            kid=kid, private_key_pem=private_key_pem, public_jwk=public_jwk, created_at=now
        )
    )


async def retire_signing_keys(db: AsyncSession, *, except_kid: str, now: datetime) -> None:
    await db.execute(
        update(SigningKey)
        .where(SigningKey.kid != except_kid, SigningKey.retired_at.is_(None))
        .values(retired_at=now)
    )


async def list_sealing_keys(db: AsyncSession) -> list[str]:
    result = await db.execute(select(SealingKey.fernet_key).order_by(SealingKey.id.desc()))
    return list(result.scalars().all())


async def insert_sealing_key(db: AsyncSession, fernet_key: str) -> None:
    await db.execute(insert(SealingKey).values(fernet_key=fernet_key))


# --- housekeeping ------------------------------------------------------------------------------


async def purge_stale(
    db: AsyncSession,
    *,
    attempts_before: datetime,
    tokens_before: datetime,
    sessions_before: datetime,
) -> None:
    """Drops login attempts past every throttle window, long-dead one-time tokens, and
    sessions (with their refresh tokens) that ended before `sessions_before`."""
    await db.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at < attempts_before))
    await db.execute(delete(OneTimeToken).where(OneTimeToken.expires_at < tokens_before))
    await db.execute(
        delete(Session).where(
            or_(Session.expires_at < sessions_before, Session.revoked_at < sessions_before)
        )
    )
