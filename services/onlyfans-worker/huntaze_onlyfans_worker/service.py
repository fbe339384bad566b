"""The creator's connection use cases (behind the gRPC API). Each public method is one unit of
work and this layer commits; nothing it answers or logs holds a secret."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete

from huntaze.onlyfans.v1 import events_pb2
from huntaze_kit.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    RateLimited,
    Unavailable,
)
from huntaze_kit.logging import get_logger
from huntaze_onlyfans_worker.accounts import (
    CREDENTIALS,
    AccountElsewhere,
    AccountPaused,
    Accounts,
    StoredLogin,
    timestamp,
)
from huntaze_onlyfans_worker.driver import (
    ImportedSession,
    LoginResult,
    LoginStatus,
    Page,
    PlatformError,
    PlatformVaultMedia,
)
from huntaze_onlyfans_worker.driver import RateLimited as PlatformRateLimited
from huntaze_onlyfans_worker.models import Connection, Lease

log = get_logger(__name__)

SYNC_REQUESTED = "onlyfans.account.sync_requested"
MAX_FIELD_LENGTH = 4096
VAULT_PAGE_DEFAULT = 24
VAULT_PAGE_MAX = 100
# What a login outcome leaves the connection as.
LOGIN_STATES = {
    LoginStatus.CONNECTED: "connected",
    LoginStatus.NEEDS_OTP: "needs_otp",
    LoginStatus.NEEDS_SESSION_IMPORT: "needs_session_import",
    LoginStatus.WRONG_CREDENTIALS: "failed",
    LoginStatus.FAILED: "failed",
}


@dataclass(frozen=True)
class Status:
    state: str
    reason: str = ""
    platform_user_id: str = ""
    username: str = ""
    connected_at: datetime | None = None
    last_synced_at: datetime | None = None

    @classmethod
    def of(cls, row: Connection | None) -> Status:
        if row is None:
            return cls(state="disconnected")
        return cls(
            state=row.state,
            reason=row.reason,
            platform_user_id=row.platform_user_id,
            username=row.username,
            connected_at=row.connected_at,
            last_synced_at=row.last_synced_at,
        )


def _check(field: str, value: str, *, required: bool = True) -> None:
    if required and not value.strip():
        raise InvalidArgument.for_field(field, "is required")
    if len(value) > MAX_FIELD_LENGTH:
        raise InvalidArgument.for_field(field, f"at most {MAX_FIELD_LENGTH} characters")


class OnlyfansService:
    """Connect, the OTP step, status, disconnect and sync requests, for one creator each."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        # Called with the creator id once an account is connected (the runner starts it) or
        # disconnected (the runner stops it).
        self.on_connected: list[Callable[[uuid.UUID], None]] = []
        self.on_disconnected: list[Callable[[uuid.UUID], None]] = []

    async def connect_with_login(
        self, *, creator_id: uuid.UUID, email: str, password: str, totp_secret: str = ""
    ) -> Status:
        _check("credentials.email", email)
        _check("credentials.password", password)
        _check("credentials.totp_secret", totp_secret, required=False)
        login = StoredLogin(email=email.strip(), password=password, totp_secret=totp_secret.strip())
        account = str(creator_id)
        driver = self.accounts.driver

        async def attempt() -> LoginResult:
            result = await driver.log_in(account, email=login.email, password=login.password)
            code = login.otp_code()
            if result.status is LoginStatus.NEEDS_OTP and code is not None:
                result = await driver.submit_otp(account, code)
            return result

        return await self._connect(creator_id, attempt, login=login)

    async def connect_with_session(
        self, *, creator_id: uuid.UUID, imported: ImportedSession
    ) -> Status:
        if not imported.cookies.get("sess") or not imported.cookies.get("auth_id"):
            raise InvalidArgument.for_field("session.cookies", "needs `sess` and `auth_id`")
        _check("session.x_bc", imported.x_bc)
        _check("session.user_agent", imported.user_agent)
        driver = self.accounts.driver

        async def attempt() -> LoginResult:
            return await driver.import_session(str(creator_id), imported)

        return await self._connect(creator_id, attempt, login=None)

    async def submit_otp(self, *, creator_id: uuid.UUID, code: str) -> Status:
        _check("code", code)
        current = await self.accounts.connection(creator_id)
        if current is None or current.state != "needs_otp":
            raise FailedPrecondition(message="No login is waiting for a code.", reason="NO_OTP")
        driver = self.accounts.driver

        async def attempt() -> LoginResult:
            return await driver.submit_otp(str(creator_id), code.strip())

        return await self._connect(creator_id, attempt, login=None)

    async def _connect(
        self,
        creator_id: uuid.UUID,
        attempt: Callable[[], Awaitable[LoginResult]],
        *,
        login: StoredLogin | None,
    ) -> Status:
        accounts = self.accounts
        try:
            await accounts.claim(creator_id)
        except AccountElsewhere:
            raise Unavailable(
                message="Another worker is busy with this account; try again shortly.",
                reason="ACCOUNT_BUSY",
                retry_after_seconds=accounts.lease_seconds,
            ) from None
        async with accounts.gate(creator_id).lock:
            try:
                result = await attempt()
                await self._record_login(creator_id, result, login=login)
            except PlatformError as error:
                # A login left halfway holds a browser context and nothing was written.
                await accounts.driver.release(str(creator_id))
                raise _login_failure(error) from None
        log.info("onlyfans.connect", creator_id=str(creator_id), outcome=result.status.value)
        if result.status is LoginStatus.CONNECTED:
            for listener in self.on_connected:
                listener(creator_id)
        return await self.status(creator_id=creator_id)

    async def _record_login(
        self, creator_id: uuid.UUID, result: LoginResult, *, login: StoredLogin | None
    ) -> None:
        accounts = self.accounts
        async with accounts.sessions() as session, session.begin():
            if login is not None and result.status in {
                LoginStatus.CONNECTED,
                LoginStatus.NEEDS_OTP,
            }:
                # Kept for logging in again when the session ends.
                await accounts.vault.seal(
                    session, creator_id=creator_id, name=CREDENTIALS, secret=login.encode()
                )
            if result.status is LoginStatus.CONNECTED:
                await accounts.mark_connected(session, creator_id, result)
            else:
                await accounts.set_state(
                    session, creator_id, LOGIN_STATES[result.status], reason=result.reason
                )

    async def status(self, *, creator_id: uuid.UUID) -> Status:
        return Status.of(await self.accounts.connection(creator_id))

    async def disconnect(self, *, creator_id: uuid.UUID) -> Status:
        """Forgets the session and the stored login; sync stops (cursors stay for a reconnect)."""
        for listener in self.on_disconnected:
            listener(creator_id)
        accounts = self.accounts
        async with accounts.gate(creator_id).lock:
            await accounts.driver.release(str(creator_id))
            async with accounts.sessions() as session, session.begin():
                await accounts.vault.forget(session, creator_id=creator_id)
                await accounts.set_state(session, creator_id, "disconnected")
                await session.execute(delete(Lease).where(Lease.creator_id == creator_id))
        return await self.status(creator_id=creator_id)

    async def request_sync(self, *, creator_id: uuid.UUID) -> bool:
        """Queues a sync of a connected account (whichever worker drives it runs it)."""
        current = await self.accounts.connection(creator_id)
        if current is None or current.state != "connected":
            raise FailedPrecondition(
                message="Connect your OnlyFans account first.", reason="NOT_CONNECTED"
            )
        async with self.accounts.sessions() as session, session.begin():
            await self.accounts.record(
                session,
                creator_id,
                SYNC_REQUESTED,
                events_pb2.SyncRequested(
                    creator_id=str(creator_id), occurred_at=timestamp(self.accounts.clock())
                ),
                aggregate_type="account",
                aggregate_id=str(creator_id),
            )
        return True

    async def vault_media(
        self, *, creator_id: uuid.UUID, page_size: int, page_token: str
    ) -> Page[PlatformVaultMedia]:
        """One page of the creator's vault, read from the platform now (nothing is stored)."""
        if page_size < 0 or page_size > VAULT_PAGE_MAX:
            raise InvalidArgument.for_field("page.page_size", f"from 1 to {VAULT_PAGE_MAX}")
        if page_token and not page_token.isdigit():
            raise InvalidArgument.for_field("page.page_token", "is not a cursor of this list")
        current = await self.accounts.connection(creator_id)
        if current is None or current.state != "connected":
            raise FailedPrecondition(
                message="Connect your OnlyFans account first.", reason="NOT_CONNECTED"
            )
        accounts = self.accounts
        try:
            # The platform is driven by the worker holding the account's lease, never by two.
            await accounts.claim(creator_id)
        except AccountElsewhere:
            raise Unavailable(
                message="Another worker is busy with this account; try again shortly.",
                reason="ACCOUNT_BUSY",
                retry_after_seconds=accounts.lease_seconds,
            ) from None
        # A 429 rests the whole account: the creator is told when to come back, not kept waiting.
        resting = accounts.backoff_left(creator_id).total_seconds()
        if resting > 0:
            raise _resting(resting)
        size = page_size or VAULT_PAGE_DEFAULT
        try:
            return await accounts.drive(
                creator_id,
                lambda account: accounts.driver.vault_media(
                    account, cursor=page_token or None, limit=size
                ),
            )
        except PlatformRateLimited as limited:
            raise _resting(limited.retry_after) from None
        except AccountPaused as paused:
            raise FailedPrecondition(message=str(paused), reason="ACCOUNT_PAUSED") from None
        except PlatformError as error:
            raise Unavailable(message=str(error), reason="PLATFORM_UNAVAILABLE") from None


def _resting(seconds: float) -> RateLimited:
    return RateLimited(
        message="OnlyFans asked to slow down; the vault can be read again shortly.",
        reason="PLATFORM_RATE_LIMITED",
        retry_after_seconds=max(1.0, seconds),
    )


def _login_failure(error: PlatformError) -> DomainError:
    """A login the platform did not carry through is worth trying again, never an internal error:
    the platform was down, slowed us down, or closed the session while it was being stored."""
    if isinstance(error, PlatformRateLimited):
        return RateLimited(
            message="OnlyFans asked to slow down; try connecting again shortly.",
            reason="PLATFORM_RATE_LIMITED",
            retry_after_seconds=max(1.0, error.retry_after),
        )
    return Unavailable(message=str(error), reason="PLATFORM_UNAVAILABLE")
