"""The accounts this process drives: leases, connection state, the session in the vault, and
the one way to call the platform for an account (`drive`), which keeps the account healthy.

`drive` runs one driver operation for an account under that account's lock: it opens the saved
session first when needed, waits out a 429 backoff, logs in again with the stored login when the
session died, and pauses the account (`onlyfans.account.needs_attention`) when only the creator
can help: a wrong password, a bot challenge, an OTP code, or signing rules the platform refuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyotp
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.onlyfans.v1 import events_pb2
from huntaze_kit.logging import get_logger
from huntaze_kit.outbox import record_event
from huntaze_onlyfans_worker.driver import (
    LoginResult,
    LoginStatus,
    PlatformDriver,
    RateLimited,
    SessionDead,
    StaleRules,
)
from huntaze_onlyfans_worker.models import SCHEMA, Connection, Lease
from huntaze_onlyfans_worker.vault import Vault

log = get_logger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]

CREDENTIALS = "credentials"
SESSION = "session"

ACCOUNT_CONNECTED = "onlyfans.account.connected"
ACCOUNT_NEEDS_ATTENTION = "onlyfans.account.needs_attention"

ATTENTION_MESSAGES: dict[int, str] = {
    events_pb2.ATTENTION_REASON_WRONG_PASSWORD: (
        "OnlyFans refused the stored password: connect again with the right one."
    ),
    events_pb2.ATTENTION_REASON_CHALLENGE: (
        "OnlyFans shows a security check only you can pass: sign in in your browser and import "
        "that session."
    ),
    events_pb2.ATTENTION_REASON_STALE_RULES: (
        "OnlyFans changed how requests are signed and the new rules are not published yet: "
        "syncing resumes once they are (or import a session later)."
    ),
    events_pb2.ATTENTION_REASON_SESSION_ENDED: (
        "Your OnlyFans session ended: connect again or import a session."
    ),
    events_pb2.ATTENTION_REASON_OTP_REQUIRED: (
        "OnlyFans sent you a code to sign in again: enter it to reconnect."
    ),
}
# The connection state each reason leaves the account in.
ATTENTION_STATES: dict[int, str] = {
    events_pb2.ATTENTION_REASON_OTP_REQUIRED: "needs_otp",
    events_pb2.ATTENTION_REASON_CHALLENGE: "needs_session_import",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def new_holder() -> str:
    """A name for this process as a lease holder."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class AccountPaused(Exception):
    """The account waits for the creator (see its connection's reason)."""


class AccountElsewhere(Exception):
    """Another worker process holds this account's lease: the work belongs there (retry)."""


@dataclass(frozen=True)
class StoredLogin:
    email: str = field(repr=False)
    password: str = field(repr=False)
    totp_secret: str = field(default="", repr=False)

    def encode(self) -> bytes:
        return json.dumps(
            {"email": self.email, "password": self.password, "totp_secret": self.totp_secret}
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> StoredLogin:
        fields = json.loads(raw)
        return cls(fields["email"], fields["password"], fields.get("totp_secret", ""))

    def otp_code(self) -> str | None:
        return pyotp.TOTP(self.totp_secret).now() if self.totp_secret else None


@dataclass
class _Gate:
    """Per account: one platform operation at a time, the send pacing and the 429 backoff."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_send_at: float = 0.0
    backoff_until: float = 0.0


class Accounts:
    """What every part of the worker uses to reach an account (see the module docstring)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        driver: PlatformDriver,
        lease_seconds: float,
        holder: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.sessions = sessions
        self.vault = vault
        self.driver = driver
        self.lease_seconds = lease_seconds
        self.holder = holder or new_holder()
        self.clock = clock
        self._gates: dict[uuid.UUID, _Gate] = {}
        # Called with the creator id when an account is paused (the runner stops its tasks).
        self.on_paused: list[Callable[[uuid.UUID], None]] = []

    def gate(self, creator_id: uuid.UUID) -> _Gate:
        return self._gates.setdefault(creator_id, _Gate())

    # Leases -----------------------------------------------------------------------------------

    async def take_lease(self, creator_id: uuid.UUID) -> bool:
        """Takes or renews the account's lease; False while another live process holds it."""
        statement = (
            insert(Lease)
            .values(
                creator_id=creator_id,
                holder=self.holder,
                expires_at=text(f"now() + make_interval(secs => {float(self.lease_seconds)})"),
            )
            .on_conflict_do_update(
                index_elements=[Lease.creator_id],
                set_={"holder": self.holder, "expires_at": text("excluded.expires_at")},
                where=(Lease.holder == self.holder) | (Lease.expires_at < text("now()")),
            )
            .returning(Lease.holder)
        )
        async with self.sessions() as session, session.begin():
            return (await session.scalar(statement)) is not None

    async def drop_lease(self, creator_id: uuid.UUID) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(Lease).where(Lease.creator_id == creator_id, Lease.holder == self.holder)
            )

    async def holds_lease(self, creator_id: uuid.UUID) -> bool:
        async with self.sessions() as session:
            found = await session.scalar(
                select(Lease.holder).where(
                    Lease.creator_id == creator_id, Lease.expires_at > text("now()")
                )
            )
        return found == self.holder

    async def claim(self, creator_id: uuid.UUID) -> None:
        """This process drives the account from now on, or `AccountElsewhere`."""
        if not await self.take_lease(creator_id):
            raise AccountElsewhere("another worker drives this OnlyFans account")

    # Connection state -------------------------------------------------------------------------

    async def connection(self, creator_id: uuid.UUID) -> Connection | None:
        async with self.sessions() as session:
            return await session.get(Connection, creator_id)

    async def connected_accounts(self) -> list[uuid.UUID]:
        async with self.sessions() as session:
            found = await session.scalars(
                select(Connection.creator_id).where(Connection.state == "connected")
            )
            return list(found)

    async def set_state(
        self, session: AsyncSession, creator_id: uuid.UUID, state: str, **values: Any
    ) -> None:
        row = {"state": state, "reason": "", **values}
        await session.execute(
            insert(Connection)
            .values(creator_id=creator_id, **row)
            .on_conflict_do_update(
                index_elements=[Connection.creator_id],
                set_={**row, "updated_at": text("now()")},
            )
        )

    async def record(
        self,
        session: AsyncSession,
        creator_id: uuid.UUID,
        subject: str,
        event: ProtoMessage,
        *,
        aggregate_type: str,
        aggregate_id: str,
    ) -> None:
        await record_event(
            session,
            schema=SCHEMA,
            subject=subject,
            event=event,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            creator_id=str(creator_id),
        )

    async def mark_connected(
        self, session: AsyncSession, creator_id: uuid.UUID, result: LoginResult
    ) -> None:
        """Stores the session in the vault and the account as connected, with its event."""
        assert result.profile is not None
        account = str(creator_id)
        await self.vault.seal(
            session,
            creator_id=creator_id,
            name=SESSION,
            secret=await self.driver.saved_session(account),
        )
        now = self.clock()
        await self.set_state(
            session,
            creator_id,
            "connected",
            platform_user_id=result.profile.platform_user_id,
            username=result.profile.username,
            connected_at=now,
            backoff_until=None,
        )
        await self.record(
            session,
            creator_id,
            ACCOUNT_CONNECTED,
            events_pb2.AccountConnected(
                creator_id=str(creator_id),
                platform_user_id=result.profile.platform_user_id,
                username=result.profile.username,
                occurred_at=timestamp(now),
            ),
            aggregate_type="account",
            aggregate_id=str(creator_id),
        )

    async def pause(self, creator_id: uuid.UUID, reason: int) -> None:
        """The account waits for the creator: its state says why, and the CRM is told."""
        message = ATTENTION_MESSAGES[reason]
        async with self.sessions() as session, session.begin():
            await self.set_state(
                session, creator_id, ATTENTION_STATES.get(reason, "needs_attention"), reason=message
            )
            await self.record(
                session,
                creator_id,
                ACCOUNT_NEEDS_ATTENTION,
                events_pb2.AccountNeedsAttention(
                    creator_id=str(creator_id),
                    reason=events_pb2.AttentionReason.ValueType(reason),
                    message=message,
                    occurred_at=timestamp(self.clock()),
                ),
                aggregate_type="account",
                aggregate_id=str(creator_id),
            )
        log.warning(
            "onlyfans.account_paused",
            creator_id=str(creator_id),
            reason=events_pb2.AttentionReason.Name(events_pb2.AttentionReason.ValueType(reason)),
        )
        for listener in self.on_paused:
            listener(creator_id)

    # Driving ----------------------------------------------------------------------------------

    async def drive(self, creator_id: uuid.UUID, operation: Callable[[str], Awaitable[T]]) -> T:
        """Runs `operation(account)` on a live session (see the module docstring)."""
        gate = self.gate(creator_id)
        async with gate.lock:
            await self._wait_backoff(gate)
            await self._open(creator_id)
            account = str(creator_id)
            try:
                return await self._guarded(creator_id, gate, operation, account)
            except SessionDead:
                log.info("onlyfans.session_dead", creator_id=str(creator_id))
                await self.driver.release(account)
                await self._log_in_again(creator_id)
                return await self._guarded(creator_id, gate, operation, account)

    async def _guarded(
        self,
        creator_id: uuid.UUID,
        gate: _Gate,
        operation: Callable[[str], Awaitable[T]],
        account: str,
    ) -> T:
        try:
            return await operation(account)
        except RateLimited as limited:
            # An IP-wide 429 can lock the creator out of the site too: nothing more until then.
            gate.backoff_until = asyncio.get_running_loop().time() + limited.retry_after
            log.warning(
                "onlyfans.rate_limited", creator_id=str(creator_id), seconds=limited.retry_after
            )
            raise
        except StaleRules:
            await self.driver.release(account)
            await self.pause(creator_id, events_pb2.ATTENTION_REASON_STALE_RULES)
            raise AccountPaused(
                ATTENTION_MESSAGES[events_pb2.ATTENTION_REASON_STALE_RULES]
            ) from None

    @staticmethod
    async def _wait_backoff(gate: _Gate) -> None:
        delay = gate.backoff_until - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _open(self, creator_id: uuid.UUID) -> None:
        """Makes sure the driver holds the account's session: the saved one, or a new login."""
        account = str(creator_id)
        if self.driver.holds(account):
            return
        connection = await self.connection(creator_id)
        if connection is None or connection.state != "connected":
            raise AccountPaused(
                connection.reason if connection and connection.reason else "not connected"
            )
        async with self.sessions() as session:
            saved = await self.vault.open(session, creator_id=creator_id, name=SESSION)
        if saved is not None:
            try:
                await self.driver.resume(account, saved)
                return
            except SessionDead:
                pass
        await self._log_in_again(creator_id)

    async def _log_in_again(self, creator_id: uuid.UUID) -> None:
        """A new session from the stored login, or the account paused with the reason."""
        async with self.sessions() as session:
            raw = await self.vault.open(session, creator_id=creator_id, name=CREDENTIALS)
        if raw is None:
            await self.pause(creator_id, events_pb2.ATTENTION_REASON_SESSION_ENDED)
            raise AccountPaused(ATTENTION_MESSAGES[events_pb2.ATTENTION_REASON_SESSION_ENDED])
        login = StoredLogin.decode(raw)
        account = str(creator_id)
        result = await self.driver.log_in(account, email=login.email, password=login.password)
        code = login.otp_code()
        if result.status is LoginStatus.NEEDS_OTP and code is not None:
            result = await self.driver.submit_otp(account, code)
        if result.status is LoginStatus.CONNECTED:
            async with self.sessions() as session, session.begin():
                await self.mark_connected(session, creator_id, result)
            log.info("onlyfans.logged_in_again", creator_id=str(creator_id))
            return
        reason = {
            LoginStatus.NEEDS_OTP: events_pb2.ATTENTION_REASON_OTP_REQUIRED,
            LoginStatus.NEEDS_SESSION_IMPORT: events_pb2.ATTENTION_REASON_CHALLENGE,
            LoginStatus.WRONG_CREDENTIALS: events_pb2.ATTENTION_REASON_WRONG_PASSWORD,
        }.get(result.status, events_pb2.ATTENTION_REASON_SESSION_ENDED)
        await self.pause(creator_id, reason)
        raise AccountPaused(ATTENTION_MESSAGES[reason])

    async def pace_send(self, creator_id: uuid.UUID, *, interval: float, jitter: float) -> None:
        """Waits until this account may send again (human pacing; called under `drive`)."""
        gate = self.gate(creator_id)
        loop = asyncio.get_running_loop()
        delay = gate.next_send_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        gate.next_send_at = loop.time() + interval + jitter * random_share()

    def backoff_left(self, creator_id: uuid.UUID) -> timedelta:
        left = self.gate(creator_id).backoff_until - asyncio.get_running_loop().time()
        return timedelta(seconds=max(0.0, left))


def random_share() -> float:
    """A share in [0, 1) from the OS's randomness (pacing jitter, not cryptography)."""
    return int.from_bytes(os.urandom(4), "big") / 2**32
