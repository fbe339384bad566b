"""The auth use cases. The only layer that commits: every state change and its event (through
the outbox) land in one transaction. Failures are `huntaze_kit.errors` domain errors."""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import hmac
import math
import uuid
import zoneinfo
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from email_validator import EmailNotValidError, validate_email
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.auth.v1 import events_pb2
from huntaze_auth import repository, two_factor
from huntaze_auth.models import SCHEMA, Session, User, UserProfile
from huntaze_auth.passwords import Passwords
from huntaze_auth.sealing import Sealer
from huntaze_auth.tokens import KeyRing, new_opaque_token, token_hash
from huntaze_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RateLimited,
    Unauthenticated,
)
from huntaze_kit.logging import get_logger
from huntaze_kit.outbox import record_event

log = get_logger(__name__)

Clock = Callable[[], datetime]

EMAIL_VERIFICATION = "email_verification"
PASSWORD_RESET = "password_reset"
TWO_FACTOR_LOGIN = "two_factor_login"
# Wrong codes a two-factor challenge tolerates before it is spent.
CHALLENGE_MAX_FAILURES = 5
_NO_USER = uuid.UUID(int=0)
CODE_ALREADY_USED_MESSAGE = "This code was already used; wait for the next one."


def utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


# --- what the use cases return -----------------------------------------------------------------


class SecondFactor(enum.Enum):
    """What a presented two-factor code turned out to be."""

    ACCEPTED = "accepted"
    # A TOTP code of a step already accepted (replays are refused).
    ALREADY_USED = "already_used"
    INVALID = "invalid"


@dataclass(frozen=True)
class ClientInfo:
    """Who is on the other side of the gateway."""

    ip_address: str = ""
    user_agent: str = ""

    def device_fingerprint(self) -> bytes:
        return hashlib.sha256(f"{self.user_agent}\n{self.ip_address}".encode()).digest()


@dataclass(frozen=True)
class UserView:
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    two_factor_enabled: bool
    onboarding_completed: bool
    created_at: datetime


@dataclass(frozen=True)
class TokenPairView:
    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime
    session_id: uuid.UUID


@dataclass(frozen=True)
class ChallengeView:
    challenge_token: str
    expires_at: datetime


@dataclass(frozen=True)
class LoginResult:
    user: UserView
    tokens: TokenPairView | None = None
    challenge: ChallengeView | None = None


@dataclass(frozen=True)
class SessionView:
    id: uuid.UUID
    ip_address: str
    user_agent: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool


@dataclass(frozen=True)
class ProfileView:
    display_name: str
    bio: str
    timezone: str
    niche: str
    goals: list[str]
    onboarding_completed_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class TotpEnrollment:
    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class ServiceToken:
    token: str
    expires_at: datetime


# --- input rules -------------------------------------------------------------------------------


def normalise_email(value: str, *, field: str = "email") -> str:
    """Syntax only (no DNS): lower-cased as stored."""
    try:
        info = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidArgument.for_field(
            field, "is not a valid email address", reason="INVALID_EMAIL"
        ) from exc
    return info.normalized.lower()


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_uuid(value: str, *, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise InvalidArgument.for_field(field, "is not a valid id") from exc


def _invalid_credentials() -> Unauthenticated:
    # One message for an unknown address and a wrong password.
    return Unauthenticated(message="Incorrect email or password.", reason="INVALID_CREDENTIALS")


def _invalid_link(field: str = "token") -> InvalidArgument:
    return InvalidArgument.for_field(
        field, "is invalid or has expired; request a new link", reason="INVALID_TOKEN"
    )


# --- throttling --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginThrottle:
    """How many failed sign-ins are tolerated, and from where.

    Every password or two-factor check is recorded in `login_attempts` under the email as
    typed (known or not, so throttling reveals nothing) and the client's IP. A check is refused
    with RESOURCE_EXHAUSTED and a retry delay when, within the sliding windows:

    1. the IP made `max_per_ip` failures, across all accounts (one source spraying many);
    2. this account from this IP made `max_per_account_ip` failures since its last success
       there (one source guessing one password);
    3. this account made `max_per_account` failures from anywhere within the short
       `account_window` (a distributed guess) -- unless the client is a device the user
       already signed in from (same IP and user agent), which this rule never blocks.

    Refused attempts are not recorded, so hammering a blocked pair does not extend the block:
    a lock ends at most one window after the last real failure. An attacker elsewhere thus
    cannot lock the user out: rule 2 blocks only the attacker's own IP, rule 3 lasts minutes and
    spares the user's known devices, and a success resets rule 2 for its (account, IP).
    """

    window: timedelta
    max_per_account_ip: int
    account_window: timedelta
    max_per_account: int
    max_per_ip: int

    async def check(
        self, db: AsyncSession, *, email: str, ip_address: str, known_device: bool, now: datetime
    ) -> None:
        """Raises `RateLimited` when a rule blocks this attempt."""
        since = now - self.window
        self._enforce(
            await repository.nth_latest_failure(
                db, n=self.max_per_ip, since=since, ip_address=ip_address
            ),
            self.window,
            now,
        )
        self._enforce(
            await repository.nth_latest_failure(
                db,
                n=self.max_per_account_ip,
                since=since,
                email=email,
                ip_address=ip_address,
                reset_by_success=True,
            ),
            self.window,
            now,
        )
        if not known_device:
            self._enforce(
                await repository.nth_latest_failure(
                    db, n=self.max_per_account, since=now - self.account_window, email=email
                ),
                self.account_window,
                now,
            )

    @staticmethod
    def _enforce(oldest_counted: datetime | None, window: timedelta, now: datetime) -> None:
        """`oldest_counted`: the failure whose expiry frees a slot, None when under the limit."""
        if oldest_counted is None:
            return
        retry_after = math.ceil(max(1.0, (oldest_counted + window - now).total_seconds()))
        raise RateLimited(
            message="Too many sign-in attempts. Try again later.",
            reason="TOO_MANY_ATTEMPTS",
            retry_after_seconds=float(retry_after),
        )


# --- the service -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lifetimes:
    session: timedelta
    email_token: timedelta
    challenge: timedelta
    email_resend_interval: timedelta


class AuthService:
    """Every auth use case; keyword-only arguments, domain errors, one commit per change."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        read_pool: asyncpg.Pool,
        passwords: Passwords,
        keyring: KeyRing,
        sealer: Sealer,
        throttle: LoginThrottle,
        lifetimes: Lifetimes,
        service_accounts: Mapping[str, str],
        clock: Clock = utc_now,
    ) -> None:
        self._db = session_factory
        # For the reads on every authenticated call (`huntaze_kit.db.create_read_pool`).
        self._reads = read_pool
        self._passwords = passwords
        self._keys = keyring
        self._sealer = sealer
        self._throttle = throttle
        self._lifetimes = lifetimes
        self._service_accounts = dict(service_accounts)
        self._clock = clock
        # Compared against when a service name is unknown, so both failures take as long.
        self._dummy_secret = new_opaque_token()

    @property
    def keyring(self) -> KeyRing:
        return self._keys

    # --- helpers -------------------------------------------------------------------------------

    async def _emit(
        self, db: AsyncSession, subject: str, event: Message, *, user_id: uuid.UUID
    ) -> None:
        await record_event(
            db,
            schema=SCHEMA,
            subject=subject,
            event=event,
            aggregate_type="user",
            aggregate_id=str(user_id),
            creator_id=str(user_id),
        )

    async def _user_view(self, db: AsyncSession, user: User) -> UserView:
        profile = await repository.get_profile(db, user.id)
        return UserView(
            id=user.id,
            email=user.email,
            name=user.name,
            email_verified=user.email_verified_at is not None,
            two_factor_enabled=user.totp_enabled_at is not None,
            onboarding_completed=profile is not None
            and profile.onboarding_completed_at is not None,
            created_at=user.created_at,
        )

    async def _require_user(
        self, db: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False
    ) -> User:
        user = await repository.get_user(db, user_id, for_update=for_update)
        if user is None:
            raise Unauthenticated(message="This account no longer exists.", reason="NO_USER")
        return user

    async def _send_email_token(
        self, db: AsyncSession, *, user: User, purpose: str, now: datetime
    ) -> None:
        """A new single-use link token (the previous one dies) and the event that mails it."""
        await repository.supersede_one_time_tokens(db, user_id=user.id, purpose=purpose, now=now)
        token = new_opaque_token()
        expires_at = now + self._lifetimes.email_token
        await repository.insert_one_time_token(
            db,
            user_id=user.id,
            purpose=purpose,
            token_hash=token_hash(token),
            now=now,
            expires_at=expires_at,
        )
        sealed = self._sealer.seal(token)
        if purpose == EMAIL_VERIFICATION:
            await self._emit(
                db,
                "auth.email_verification.requested",
                events_pb2.EmailVerificationRequested(
                    user_id=str(user.id),
                    email=user.email,
                    name=user.name,
                    sealed_token=sealed,
                    expires_at=_timestamp(expires_at),
                    occurred_at=_timestamp(now),
                ),
                user_id=user.id,
            )
        else:
            await self._emit(
                db,
                "auth.password_reset.requested",
                events_pb2.PasswordResetRequested(
                    user_id=str(user.id),
                    email=user.email,
                    name=user.name,
                    sealed_token=sealed,
                    expires_at=_timestamp(expires_at),
                    occurred_at=_timestamp(now),
                ),
                user_id=user.id,
            )

    async def _may_send_email(
        self, db: AsyncSession, *, user_id: uuid.UUID, purpose: str, now: datetime
    ) -> bool:
        """At most one email of a kind per resend interval (no mailbox flooding)."""
        latest = await repository.latest_one_time_token_at(db, user_id=user_id, purpose=purpose)
        return latest is None or latest <= now - self._lifetimes.email_resend_interval

    async def _revoke(
        self,
        db: AsyncSession,
        *,
        user_id: uuid.UUID,
        reason: str,
        now: datetime,
        session_id: uuid.UUID | None = None,
        except_session_id: uuid.UUID | None = None,
    ) -> int:
        revoked = await repository.revoke_sessions(
            db,
            user_id=user_id,
            reason=reason,
            now=now,
            session_id=session_id,
            except_session_id=except_session_id,
        )
        for revoked_id in revoked:
            await self._emit(
                db,
                "auth.session.revoked",
                events_pb2.SessionRevoked(
                    session_id=str(revoked_id),
                    user_id=str(user_id),
                    reason=reason,
                    occurred_at=_timestamp(now),
                ),
                user_id=user_id,
            )
        return len(revoked)

    async def _new_refresh_token(
        self, db: AsyncSession, *, session_id: uuid.UUID, now: datetime
    ) -> str:
        refresh = new_opaque_token()
        await repository.insert_refresh_token(
            db, token_hash=token_hash(refresh), session_id=session_id, now=now
        )
        return refresh

    def _pair(
        self, *, user: User, session_id: uuid.UUID, refresh: str, expires_at: datetime
    ) -> TokenPairView:
        access = self._keys.issue_access_token(
            user_id=user.id,
            session_id=session_id,
            email_verified=user.email_verified_at is not None,
            not_after=expires_at,
        )
        return TokenPairView(
            access_token=access.token,
            access_token_expires_at=access.expires_at,
            refresh_token=refresh,
            refresh_token_expires_at=expires_at,
            session_id=session_id,
        )

    async def _sign_in(
        self, db: AsyncSession, *, user: User, client: ClientInfo, now: datetime
    ) -> TokenPairView:
        """A new session (and refresh-token family), the attempt, the device and the event."""
        session_id = uuid.uuid4()
        expires_at = now + self._lifetimes.session
        await repository.insert_session(
            db,
            session_id=session_id,
            user_id=user.id,
            ip_address=client.ip_address,
            user_agent=client.user_agent,
            now=now,
            expires_at=expires_at,
        )
        refresh = await self._new_refresh_token(db, session_id=session_id, now=now)
        await repository.record_login_attempt(
            db, email=user.email, ip_address=client.ip_address, success=True, now=now
        )
        devices_before = await repository.count_known_devices(db, user.id)
        first_time_here = await repository.remember_device(
            db, user.id, client.device_fingerprint(), now=now
        )
        # The very first sign-in of an account is not news to its owner.
        new_device = first_time_here and devices_before > 0
        await self._emit(
            db,
            "auth.sign_in.recorded",
            events_pb2.SignInRecorded(
                user_id=str(user.id),
                email=user.email,
                name=user.name,
                session_id=str(session_id),
                ip_address=client.ip_address,
                user_agent=client.user_agent,
                new_device=new_device,
                occurred_at=_timestamp(now),
            ),
            user_id=user.id,
        )
        log.info(
            "signed_in", user_id=str(user.id), session_id=str(session_id), new_device=new_device
        )
        return self._pair(user=user, session_id=session_id, refresh=refresh, expires_at=expires_at)

    async def _check_second_factor(
        self, db: AsyncSession, *, user: User, code: str, now: datetime
    ) -> SecondFactor:
        """A TOTP code (each accepted once) or an unused recovery code. `user` must be locked
        (SELECT ... FOR UPDATE) so that two requests cannot both spend one code."""
        code = code.strip()
        if two_factor.is_totp_code(code):
            if user.totp_secret_sealed is None:
                return SecondFactor.INVALID
            secret = self._sealer.unseal(user.totp_secret_sealed)
            step = two_factor.matching_step(secret, code, now=now, after_step=user.totp_last_step)
            if step is not None:
                await repository.set_totp_state(db, user.id, totp_last_step=step)
                return SecondFactor.ACCEPTED
            if two_factor.was_used(secret, code, now=now, last_step=user.totp_last_step):
                return SecondFactor.ALREADY_USED
            return SecondFactor.INVALID
        if not code or len(code) > 64:
            return SecondFactor.INVALID
        spent = await repository.spend_recovery_code(
            db, user.id, two_factor.recovery_code_hash(code), now=now
        )
        return SecondFactor.ACCEPTED if spent else SecondFactor.INVALID

    async def _require_second_factor(
        self, db: AsyncSession, *, user: User, code: str, now: datetime
    ) -> None:
        """`_check_second_factor` for a signed-in user's change: refused as a bad field."""
        outcome = await self._check_second_factor(db, user=user, code=code, now=now)
        if outcome is SecondFactor.ALREADY_USED:
            raise InvalidArgument(
                message=CODE_ALREADY_USED_MESSAGE,
                reason="CODE_ALREADY_USED",
                violations=[FieldViolation("code", "was already used; wait for the next one")],
            )
        if outcome is not SecondFactor.ACCEPTED:
            raise InvalidArgument.for_field("code", "is not valid", reason="INVALID_CODE")

    async def _confirm_password(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID, password: str, field: str
    ) -> User:
        """Checks the signed-in user's password before a sensitive change. Failures count
        against the session like sign-in failures against an IP, so a stolen access token
        cannot be used to guess the password."""
        source = f"session:{session_id}"
        async with self._db() as db:
            user = await self._require_user(db, user_id)
            await self._throttle.check(
                db, email=user.email, ip_address=source, known_device=True, now=self._clock()
            )
        if (await self._passwords.verify(user.password_hash, password)).valid:
            return user
        async with self._db() as db:
            await repository.record_login_attempt(
                db, email=user.email, ip_address=source, success=False, now=self._clock()
            )
            await db.commit()
        raise InvalidArgument.for_field(field, "is incorrect", reason="INVALID_PASSWORD")

    # --- registration and email verification ---------------------------------------------------

    async def register(
        self, *, email: str, password: str, name: str, client: ClientInfo
    ) -> UserView:
        email = normalise_email(email)
        name = name.strip()
        self._passwords.check_rules(
            password, user_inputs=[email, email.split("@", 1)[0], name, "huntaze"]
        )
        async with self._db() as db:
            if await repository.get_user_by_email(db, email) is not None:
                raise _email_taken()
        password_hash = await self._passwords.hash(password)
        now = self._clock()
        user_id = uuid.uuid4()
        async with self._db() as db:
            if not await repository.insert_user(
                db, user_id=user_id, email=email, name=name, password_hash=password_hash, now=now
            ):
                raise _email_taken()
            await repository.insert_profile(db, user_id=user_id, display_name=name, now=now)
            user = await self._require_user(db, user_id)
            await self._emit(
                db,
                "auth.user.registered",
                events_pb2.UserRegistered(
                    user_id=str(user_id), email=email, name=name, occurred_at=_timestamp(now)
                ),
                user_id=user_id,
            )
            await self._send_email_token(db, user=user, purpose=EMAIL_VERIFICATION, now=now)
            view = await self._user_view(db, user)
            await db.commit()
        log.info("user_registered", user_id=str(user_id), ip=client.ip_address)
        return view

    async def verify_email(self, *, token: str) -> UserView:
        if not token:
            raise InvalidArgument.for_field("token", "is required")
        now = self._clock()
        async with self._db() as db:
            user_id = await repository.redeem_one_time_token(
                db, token_hash=token_hash(token), purpose=EMAIL_VERIFICATION, now=now
            )
            if user_id is None:
                raise _invalid_link()
            user = await self._require_user(db, user_id)
            if await repository.mark_email_verified(db, user_id, now=now):
                await self._emit(
                    db,
                    "auth.user.email_verified",
                    events_pb2.UserEmailVerified(
                        user_id=str(user_id),
                        email=user.email,
                        name=user.name,
                        occurred_at=_timestamp(now),
                    ),
                    user_id=user_id,
                )
            await db.refresh(user)
            view = await self._user_view(db, user)
            await db.commit()
        return view

    async def resend_verification(self, *, email: str, client: ClientInfo) -> None:
        """Sends a fresh link when the address belongs to an unverified account; the caller
        learns nothing either way."""
        email = normalise_email(email)
        now = self._clock()
        async with self._db() as db:
            user = await repository.get_user_by_email(db, email)
            if (
                user is None
                or user.email_verified_at is not None
                or not await self._may_send_email(
                    db, user_id=user.id, purpose=EMAIL_VERIFICATION, now=now
                )
            ):
                return
            await self._send_email_token(db, user=user, purpose=EMAIL_VERIFICATION, now=now)
            await db.commit()
        log.info("verification_resent", user_id=str(user.id), ip=client.ip_address)

    # --- sign-in, refresh, sign-out --------------------------------------------------------------

    async def login(self, *, email: str, password: str, client: ClientInfo) -> LoginResult:
        """Enumeration-safe: an unknown address costs one argon2 verification, like a wrong
        password, and fails with the same error."""
        email = normalise_email(email)
        now = self._clock()
        async with self._db() as db:
            user = await repository.get_user_by_email(db, email)
            known = await repository.is_known_device(
                db, user.id if user else _NO_USER, client.device_fingerprint()
            )
            await self._throttle.check(
                db, email=email, ip_address=client.ip_address, known_device=known, now=now
            )
        verification = await self._passwords.verify(user.password_hash if user else None, password)
        async with self._db() as db:
            if user is None or not verification.valid:
                await repository.record_login_attempt(
                    db, email=email, ip_address=client.ip_address, success=False, now=now
                )
                await db.commit()
                log.info("login_failed", ip=client.ip_address)
                raise _invalid_credentials()
            if verification.new_hash is not None:
                await repository.set_password_hash(
                    db, user.id, verification.new_hash, now=now, changed=False
                )
            view = await self._user_view(db, user)
            if user.totp_enabled_at is not None:
                challenge = new_opaque_token()
                expires_at = now + self._lifetimes.challenge
                await repository.insert_one_time_token(
                    db,
                    user_id=user.id,
                    purpose=TWO_FACTOR_LOGIN,
                    token_hash=token_hash(challenge),
                    now=now,
                    expires_at=expires_at,
                )
                await db.commit()
                return LoginResult(
                    user=view,
                    challenge=ChallengeView(challenge_token=challenge, expires_at=expires_at),
                )
            tokens = await self._sign_in(db, user=user, client=client, now=now)
            await db.commit()
        return LoginResult(user=view, tokens=tokens)

    async def complete_two_factor_login(
        self, *, challenge_token: str, code: str, client: ClientInfo
    ) -> LoginResult:
        now = self._clock()
        challenge_hash = token_hash(challenge_token)
        invalid_challenge = Unauthenticated(
            message="This sign-in attempt has expired; sign in again.",
            reason="INVALID_CHALLENGE",
        )
        async with self._db() as db:
            challenge = await repository.find_open_one_time_token(
                db, token_hash=challenge_hash, purpose=TWO_FACTOR_LOGIN, now=now
            )
            if challenge is None:
                raise invalid_challenge
            user = await self._require_user(db, challenge.user_id, for_update=True)
            known = await repository.is_known_device(db, user.id, client.device_fingerprint())
            await self._throttle.check(
                db, email=user.email, ip_address=client.ip_address, known_device=known, now=now
            )
            outcome = await self._check_second_factor(db, user=user, code=code, now=now)
            if outcome is not SecondFactor.ACCEPTED:
                # A replayed code counts as a failure too: it does not sign anyone in.
                await repository.count_one_time_token_failure(
                    db, challenge.id, max_failures=CHALLENGE_MAX_FAILURES, now=now
                )
                await repository.record_login_attempt(
                    db, email=user.email, ip_address=client.ip_address, success=False, now=now
                )
                await db.commit()
                if outcome is SecondFactor.ALREADY_USED:
                    raise Unauthenticated(
                        message=CODE_ALREADY_USED_MESSAGE, reason="CODE_ALREADY_USED"
                    )
                raise Unauthenticated(message="Invalid code.", reason="INVALID_CODE")
            if (
                await repository.redeem_one_time_token(
                    db, token_hash=challenge_hash, purpose=TWO_FACTOR_LOGIN, now=now
                )
                is None
            ):
                raise invalid_challenge
            tokens = await self._sign_in(db, user=user, client=client, now=now)
            await db.refresh(user)
            view = await self._user_view(db, user)
            await db.commit()
        return LoginResult(user=view, tokens=tokens)

    async def refresh_session(self, *, refresh_token: str, client: ClientInfo) -> TokenPairView:
        """Exchanges a refresh token for a new pair. A token works once: presenting a spent one
        means it was copied, so the whole session (its family) is revoked."""
        invalid = Unauthenticated(
            message="Your session has ended; sign in again.", reason="INVALID_REFRESH_TOKEN"
        )
        if not refresh_token:
            raise invalid
        now = self._clock()
        presented = token_hash(refresh_token)
        async with self._db() as db:
            session_id = await repository.spend_refresh_token(db, presented, now=now)
            if session_id is None:
                owner = await repository.refresh_token_owner(db, presented)
                if owner is not None:
                    revoked = await self._revoke(
                        db,
                        user_id=owner.user_id,
                        reason="refresh_reuse",
                        now=now,
                        session_id=owner.id,
                    )
                    await db.commit()
                    log.warning(
                        "refresh_token_reused",
                        session_id=str(owner.id),
                        user_id=str(owner.user_id),
                        revoked=revoked,
                        ip=client.ip_address,
                    )
                raise invalid
            session = await repository.get_session(db, session_id, for_update=True)
            if session is None or session.revoked_at is not None or session.expires_at <= now:
                await db.rollback()
                raise invalid
            # Read now, so that a token refreshed after verification carries the new claim.
            user = await self._require_user(db, session.user_id)
            refresh = await self._new_refresh_token(db, session_id=session_id, now=now)
            await repository.touch_session(db, session_id, now=now, ip_address=client.ip_address)
            await db.commit()
        return self._pair(
            user=user,
            session_id=session_id,
            refresh=refresh,
            expires_at=session.expires_at,
        )

    async def logout(self, *, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
        now = self._clock()
        async with self._db() as db:
            await self._revoke(db, user_id=user_id, reason="logout", now=now, session_id=session_id)
            await db.commit()

    async def session_is_active(self, session_id: str) -> bool:
        """For auth's own token verifier: a revoked or expired session's tokens are refused."""
        try:
            parsed = uuid.UUID(session_id)
        except ValueError:
            return False
        return await repository.session_is_active(self._reads, parsed, now=self._clock())

    # --- account and sessions --------------------------------------------------------------------

    async def get_me(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID | None = None
    ) -> tuple[UserView, ProfileView]:
        """The user and their profile. With `session_id` (the caller's session), refused with
        SESSION_REVOKED unless that session is active: the check and the read are one query."""
        row = await repository.read_me(
            self._reads, user_id, session_id=session_id, now=self._clock()
        )
        if row is None:
            if session_id is not None:
                raise Unauthenticated(message="Session revoked.", reason="SESSION_REVOKED")
            raise Unauthenticated(message="This account no longer exists.", reason="NO_USER")
        return _me_views(row)

    async def list_sessions(
        self, *, user_id: uuid.UUID, current_session_id: uuid.UUID | None
    ) -> list[SessionView]:
        async with self._db() as db:
            sessions = await repository.list_active_sessions(db, user_id, now=self._clock())
        return [_session_view(s, current=s.id == current_session_id) for s in sessions]

    async def revoke_session(self, *, user_id: uuid.UUID, session_id: str) -> None:
        target = parse_uuid(session_id, field="session_id")
        now = self._clock()
        async with self._db() as db:
            session = await repository.get_session(db, target)
            if session is None or session.user_id != user_id:
                raise NotFound(message="No such session.", reason="SESSION_NOT_FOUND")
            await self._revoke(
                db, user_id=user_id, reason="revoked_by_user", now=now, session_id=target
            )
            await db.commit()

    async def revoke_other_sessions(
        self, *, user_id: uuid.UUID, current_session_id: uuid.UUID
    ) -> int:
        now = self._clock()
        async with self._db() as db:
            count = await self._revoke(
                db,
                user_id=user_id,
                reason="sign_out_others",
                now=now,
                except_session_id=current_session_id,
            )
            await db.commit()
        return count

    # --- passwords -------------------------------------------------------------------------------

    async def request_password_reset(self, *, email: str, client: ClientInfo) -> None:
        """Mails a reset link when the address has an account; the caller learns nothing."""
        email = normalise_email(email)
        now = self._clock()
        async with self._db() as db:
            user = await repository.get_user_by_email(db, email)
            if user is None or not await self._may_send_email(
                db, user_id=user.id, purpose=PASSWORD_RESET, now=now
            ):
                return
            await self._send_email_token(db, user=user, purpose=PASSWORD_RESET, now=now)
            await db.commit()
        log.info("password_reset_requested", user_id=str(user.id), ip=client.ip_address)

    async def reset_password(self, *, token: str, new_password: str) -> None:
        """Sets the password from a reset link (once) and signs out every session."""
        if not token:
            raise InvalidArgument.for_field("token", "is required")
        presented = token_hash(token)
        async with self._db() as db:
            pending = await repository.find_open_one_time_token(
                db, token_hash=presented, purpose=PASSWORD_RESET, now=self._clock()
            )
            if pending is None:
                raise _invalid_link()
            user = await self._require_user(db, pending.user_id)
        self._passwords.check_rules(
            new_password,
            user_inputs=[user.email, user.email.split("@", 1)[0], user.name],
            field="new_password",
        )
        password_hash = await self._passwords.hash(new_password)
        now = self._clock()
        async with self._db() as db:
            user_id = await repository.redeem_one_time_token(
                db, token_hash=presented, purpose=PASSWORD_RESET, now=now
            )
            if user_id is None:
                raise _invalid_link()
            await repository.set_password_hash(db, user_id, password_hash, now=now)
            await repository.supersede_one_time_tokens(
                db, user_id=user_id, purpose=PASSWORD_RESET, now=now
            )
            await self._revoke(db, user_id=user_id, reason="password_changed", now=now)
            await self._emit(
                db,
                "auth.password.changed",
                events_pb2.PasswordChanged(
                    user_id=str(user_id), by_reset=True, occurred_at=_timestamp(now)
                ),
                user_id=user_id,
            )
            await db.commit()
        log.info("password_reset", user_id=str(user_id))

    async def change_password(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        current_password: str,
        new_password: str,
    ) -> TokenPairView:
        """Needs the current password; other sessions are signed out, this one continues with
        fresh tokens."""
        user = await self._confirm_password(
            user_id=user_id,
            session_id=session_id,
            password=current_password,
            field="current_password",
        )
        self._passwords.check_rules(
            new_password,
            user_inputs=[user.email, user.email.split("@", 1)[0], user.name],
            field="new_password",
        )
        password_hash = await self._passwords.hash(new_password)
        now = self._clock()
        async with self._db() as db:
            session = await repository.get_session(db, session_id, for_update=True)
            if (
                session is None
                or session.user_id != user_id
                or session.revoked_at is not None
                or session.expires_at <= now
            ):
                raise Unauthenticated(message="Session revoked.", reason="SESSION_REVOKED")
            await repository.set_password_hash(db, user_id, password_hash, now=now)
            await self._revoke(
                db,
                user_id=user_id,
                reason="password_changed",
                now=now,
                except_session_id=session_id,
            )
            await repository.spend_session_refresh_tokens(db, session_id, now=now)
            refresh = await self._new_refresh_token(db, session_id=session_id, now=now)
            await self._emit(
                db,
                "auth.password.changed",
                events_pb2.PasswordChanged(
                    user_id=str(user_id), by_reset=False, occurred_at=_timestamp(now)
                ),
                user_id=user_id,
            )
            await db.commit()
        return self._pair(
            user=user,
            session_id=session_id,
            refresh=refresh,
            expires_at=session.expires_at,
        )

    # --- two-factor ------------------------------------------------------------------------------

    async def begin_totp_enrollment(self, *, user_id: uuid.UUID) -> TotpEnrollment:
        async with self._db() as db:
            user = await self._require_user(db, user_id, for_update=True)
            if user.totp_enabled_at is not None:
                raise _two_factor_already_on()
            secret = two_factor.new_secret()
            await repository.set_totp_state(
                db, user_id, totp_pending_secret_sealed=self._sealer.seal(secret)
            )
            await db.commit()
        uri = two_factor.provisioning_uri(secret, account=user.email)
        return TotpEnrollment(secret=secret, otpauth_uri=uri, qr_svg=two_factor.qr_svg(uri))

    async def confirm_totp_enrollment(self, *, user_id: uuid.UUID, code: str) -> list[str]:
        """Turns two-factor on with a first valid code; returns the recovery codes (once)."""
        now = self._clock()
        async with self._db() as db:
            user = await self._require_user(db, user_id, for_update=True)
            if user.totp_enabled_at is not None:
                raise _two_factor_already_on()
            if user.totp_pending_secret_sealed is None:
                raise FailedPrecondition(
                    message="Start two-factor enrollment first.", reason="TWO_FACTOR_NOT_PENDING"
                )
            sealed = user.totp_pending_secret_sealed
            step = two_factor.matching_step(
                self._sealer.unseal(sealed), code.strip(), now=now, after_step=None
            )
            if step is None:
                raise InvalidArgument.for_field("code", "is not valid", reason="INVALID_CODE")
            await repository.set_totp_state(
                db,
                user_id,
                totp_secret_sealed=sealed,
                totp_pending_secret_sealed=None,
                totp_enabled_at=now,
                totp_last_step=step,
                updated_at=now,
            )
            codes = two_factor.new_recovery_codes()
            await repository.replace_recovery_codes(
                db, user_id, [two_factor.recovery_code_hash(c) for c in codes], now=now
            )
            await db.commit()
        log.info("two_factor_enabled", user_id=str(user_id))
        return codes

    async def disable_totp(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID, password: str, code: str
    ) -> None:
        """Needs the password and a TOTP or recovery code."""
        user = await self._confirm_password(
            user_id=user_id, session_id=session_id, password=password, field="password"
        )
        if user.totp_enabled_at is None:
            raise FailedPrecondition(
                message="Two-factor authentication is off.", reason="TWO_FACTOR_DISABLED"
            )
        now = self._clock()
        async with self._db() as db:
            user = await self._require_user(db, user_id, for_update=True)
            await self._require_second_factor(db, user=user, code=code, now=now)
            await repository.set_totp_state(
                db,
                user_id,
                totp_secret_sealed=None,
                totp_pending_secret_sealed=None,
                totp_enabled_at=None,
                totp_last_step=None,
                updated_at=now,
            )
            await repository.delete_recovery_codes(db, user_id)
            await db.commit()
        log.info("two_factor_disabled", user_id=str(user_id))

    async def regenerate_recovery_codes(self, *, user_id: uuid.UUID, code: str) -> list[str]:
        now = self._clock()
        async with self._db() as db:
            user = await self._require_user(db, user_id, for_update=True)
            if user.totp_enabled_at is None:
                raise FailedPrecondition(
                    message="Two-factor authentication is off.", reason="TWO_FACTOR_DISABLED"
                )
            await self._require_second_factor(db, user=user, code=code, now=now)
            codes = two_factor.new_recovery_codes()
            await repository.replace_recovery_codes(
                db, user_id, [two_factor.recovery_code_hash(c) for c in codes], now=now
            )
            await db.commit()
        return codes

    # --- profile and onboarding ------------------------------------------------------------------

    async def get_profile(self, *, user_id: uuid.UUID) -> ProfileView:
        async with self._db() as db:
            return _profile_view(await repository.get_profile(db, user_id))

    async def save_profile(
        self,
        *,
        user_id: uuid.UUID,
        changed: Collection[str],
        display_name: str = "",
        bio: str = "",
        timezone: str = "",
        niche: str = "",
        goals: Sequence[str] = (),
    ) -> ProfileView:
        """Changes the profile fields named in `changed` (`display_name`, `bio`, `timezone`,
        `niche`, `goals`); the others keep their value. Lengths and counts are the request's
        field rules, checked before the call; this checks what they cannot."""
        sent: dict[str, Any] = {
            "display_name": display_name.strip(),
            "bio": bio.strip(),
            "timezone": timezone.strip(),
            "niche": niche.strip(),
            "goals": list(dict.fromkeys(goal.strip() for goal in goals if goal.strip())),
        }
        changes = {name: value for name, value in sent.items() if name in changed}
        violations = _profile_violations(changes)
        if violations:
            raise InvalidArgument.for_violations(violations)
        now = self._clock()
        async with self._db() as db:
            await self._require_user(db, user_id)
            current = _profile_view(await repository.get_profile(db, user_id, for_update=True))
            merged = dataclasses.replace(current, **changes)
            profile = await repository.upsert_profile(
                db,
                user_id=user_id,
                display_name=merged.display_name,
                bio=merged.bio,
                timezone=merged.timezone,
                niche=merged.niche,
                goals=merged.goals,
                now=now,
            )
            await self._emit(
                db,
                "auth.profile.updated",
                events_pb2.ProfileUpdated(
                    user_id=str(user_id),
                    display_name=profile.display_name,
                    timezone=profile.timezone,
                    niche=profile.niche,
                    occurred_at=_timestamp(now),
                ),
                user_id=user_id,
            )
            view = _profile_view(profile)
            await db.commit()
        return view

    async def complete_onboarding(self, *, user_id: uuid.UUID) -> ProfileView:
        """Marks onboarding done (once; later calls change nothing). Needs a display name."""
        now = self._clock()
        async with self._db() as db:
            profile = await repository.get_profile(db, user_id, for_update=True)
            if profile is None or not profile.display_name:
                raise FailedPrecondition(
                    message="Save your profile with a display name first.",
                    reason="PROFILE_INCOMPLETE",
                )
            if await repository.complete_onboarding(db, user_id, now=now):
                await self._emit(
                    db,
                    "auth.onboarding.completed",
                    events_pb2.OnboardingCompleted(
                        user_id=str(user_id), occurred_at=_timestamp(now)
                    ),
                    user_id=user_id,
                )
            await db.refresh(profile)
            view = _profile_view(profile)
            await db.commit()
        return view

    # --- services --------------------------------------------------------------------------------

    async def issue_service_token(
        self, *, service_name: str, service_secret: str, creator_id: str
    ) -> ServiceToken:
        """A short-lived token for a service account acting for one creator. The secret is
        compared in constant time, also when the service name is unknown."""
        expected = self._service_accounts.get(service_name)
        matches = hmac.compare_digest(
            service_secret.encode(), (expected or self._dummy_secret).encode()
        )
        if expected is None or not matches:
            log.warning("service_token_refused", service=service_name)
            raise Unauthenticated(
                message="Invalid service credentials.", reason="INVALID_SERVICE_CREDENTIALS"
            )
        creator = parse_uuid(creator_id, field="creator_id")
        async with self._db() as db:
            if not await repository.user_exists(db, creator):
                raise NotFound(message="No such creator.", reason="CREATOR_NOT_FOUND")
        issued = self._keys.issue_service_token(service_name=service_name, creator_id=creator)
        return ServiceToken(token=issued.token, expires_at=issued.expires_at)

    def public_keys(self) -> dict[str, object]:
        return self._keys.jwks()

    # --- housekeeping ----------------------------------------------------------------------------

    async def purge_stale(self) -> None:
        now = self._clock()
        longest_window = max(self._throttle.window, self._throttle.account_window)
        async with self._db() as db:
            await repository.purge_stale(
                db,
                attempts_before=now - 2 * longest_window,
                tokens_before=now - timedelta(days=1),
                sessions_before=now - timedelta(days=7),
            )
            await db.commit()


def _email_taken() -> AlreadyExists:
    return AlreadyExists(
        message="An account with this email already exists.",
        reason="EMAIL_TAKEN",
        violations=[FieldViolation("email", "is already registered")],
    )


def _two_factor_already_on() -> FailedPrecondition:
    return FailedPrecondition(
        message="Two-factor authentication is already on.", reason="TWO_FACTOR_ENABLED"
    )


def _profile_violations(changes: Mapping[str, object]) -> list[FieldViolation]:
    violations = []
    if "display_name" in changes and not changes["display_name"]:
        violations.append(FieldViolation("display_name", "is required"))
    if "timezone" in changes and changes["timezone"] not in _timezones():
        violations.append(
            FieldViolation("timezone", "must be an IANA time zone name such as Europe/Paris")
        )
    return violations


def _profile_view(profile: UserProfile | None) -> ProfileView:
    if profile is None:
        return ProfileView(
            display_name="",
            bio="",
            timezone="UTC",
            niche="",
            goals=[],
            onboarding_completed_at=None,
            updated_at=None,
        )
    return ProfileView(
        display_name=profile.display_name,
        bio=profile.bio,
        timezone=profile.timezone,
        niche=profile.niche,
        goals=list(profile.goals),
        onboarding_completed_at=profile.onboarding_completed_at,
        updated_at=profile.updated_at,
    )


def _me_views(row: asyncpg.Record) -> tuple[UserView, ProfileView]:
    """The views of a `repository.read_me` row."""
    completed_at: datetime | None = row["onboarding_completed_at"]
    user = UserView(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        email_verified=row["email_verified_at"] is not None,
        two_factor_enabled=row["totp_enabled_at"] is not None,
        onboarding_completed=completed_at is not None,
        created_at=row["created_at"],
    )
    if not row["has_profile"]:
        return user, _profile_view(None)
    return user, ProfileView(
        display_name=row["display_name"],
        bio=row["bio"],
        timezone=row["timezone"],
        niche=row["niche"],
        goals=list(row["goals"]),
        onboarding_completed_at=completed_at,
        updated_at=row["updated_at"],
    )


def _session_view(session: Session, *, current: bool) -> SessionView:
    return SessionView(
        id=session.id,
        ip_address=session.ip_address,
        user_agent=session.user_agent,
        created_at=session.created_at,
        last_used_at=session.last_used_at,
        expires_at=session.expires_at,
        current=current,
    )
