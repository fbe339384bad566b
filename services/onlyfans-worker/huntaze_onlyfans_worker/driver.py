"""What the worker needs from the platform, and nothing platform-specific.

`PlatformDriver` is the one seam: the web-session implementation (`onlyfans_web`) drives a browser
context per account; a commercial API service could implement the same methods. Accounts are named
by an opaque key (the worker uses the creator id); a driver keeps what it needs per account in
memory and hands its session out as opaque bytes (`saved_session`) for the vault to keep.
Platform ids travel as strings; money as integer cents; text as plain text.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class LoginStatus(enum.StrEnum):
    CONNECTED = "connected"
    NEEDS_OTP = "needs_otp"
    NEEDS_SESSION_IMPORT = "needs_session_import"
    WRONG_CREDENTIALS = "wrong_credentials"
    FAILED = "failed"


@dataclass(frozen=True)
class PlatformProfile:
    platform_user_id: str
    username: str
    name: str


@dataclass(frozen=True)
class LoginResult:
    status: LoginStatus
    # Set when connected.
    profile: PlatformProfile | None = None
    # What the creator is told when not connected (never a secret).
    reason: str = ""


@dataclass(frozen=True)
class ImportedSession:
    """A session copied from the creator's own browser (what most tools connect with)."""

    cookies: dict[str, str] = field(repr=False)
    x_bc: str = field(repr=False)
    user_agent: str


@dataclass(frozen=True)
class PlatformFan:
    platform_fan_id: str
    display_name: str
    handle: str
    avatar_url: str = ""


@dataclass(frozen=True)
class PlatformMedia:
    platform_media_id: str
    kind: str
    url: str


@dataclass(frozen=True)
class PlatformVaultMedia:
    """A file of the creator's vault: what a pay-per-view message attaches by its id."""

    platform_media_id: str
    # photo, video, audio or gif, as the platform names it.
    kind: str
    duration_seconds: int
    thumbnail_url: str
    created_at: datetime | None


@dataclass(frozen=True)
class PlatformChat:
    platform_fan_id: str
    last_message_id: str | None


@dataclass(frozen=True)
class PlatformMessage:
    platform_message_id: str
    platform_fan_id: str
    from_creator: bool
    text: str
    price_cents: int
    created_at: datetime
    # Only a message pushed or listed with full users carries the fan's profile.
    fan: PlatformFan | None = None
    media: tuple[PlatformMedia, ...] = ()
    tip_cents: int = 0


@dataclass(frozen=True)
class PlatformSubscriber:
    fan: PlatformFan
    active: bool
    subscribed_at: datetime | None
    expires_at: datetime | None
    last_seen_at: datetime | None


class TransactionKind(enum.StrEnum):
    SUBSCRIPTION = "subscription"
    RENEWAL = "renewal"
    TIP = "tip"
    MESSAGE = "message"


@dataclass(frozen=True)
class PlatformTransaction:
    platform_transaction_id: str
    kind: TransactionKind
    fan: PlatformFan
    amount_cents: int
    currency: str
    created_at: datetime
    # The message that sold it, when the platform says which.
    platform_message_id: str = ""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # Pass back to get the next page; None when this was the last.
    next_cursor: str | None


# Failures. Each message is safe to show to the creator and holds no secret.


class PlatformError(Exception):
    """A platform call failed."""


class SessionDead(PlatformError):
    """The session is gone (expired, logged out elsewhere, refused): log in or import again."""


class StaleRules(PlatformError):
    """Signed requests are refused even under freshly fetched signing rules."""


class RateLimited(PlatformError):
    """The platform asks to slow down (429); retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SendThrottled(PlatformError):
    """A send came too soon after the previous one ("Allow 3 seconds")."""


@dataclass(frozen=True)
class PlatformQueueStats:
    """A mass message's figures as the platform's queue statistics report them."""

    platform_queue_id: str
    sent: int
    viewed: int
    purchased: int
    canceled: bool
    # What it says and costs, and its send date (to recognise one queued before a crash).
    text: str = ""
    price_cents: int = 0
    sent_at: datetime | None = None


class PlatformRefused(PlatformError):
    """The platform refused this request for a reason of its own (a fan who left, a bad price)."""


class PlatformUnavailable(PlatformError):
    """The platform did not answer, or answered with a server error: try later."""


class NotConnected(PlatformError):
    """The driver holds no session for this account (resume it from the vault first)."""


class PlatformDriver(Protocol):
    """Everything the worker does on the platform, per account."""

    # Connecting.
    async def log_in(self, account: str, *, email: str, password: str) -> LoginResult: ...

    async def submit_otp(self, account: str, code: str) -> LoginResult: ...

    async def import_session(self, account: str, imported: ImportedSession) -> LoginResult: ...

    async def resume(self, account: str, saved: bytes) -> None: ...

    async def saved_session(self, account: str) -> bytes: ...

    def holds(self, account: str) -> bool: ...

    async def release(self, account: str) -> None: ...

    # Reading.
    async def profile(self, account: str) -> PlatformProfile: ...

    async def chats(self, account: str, *, cursor: str | None) -> Page[PlatformChat]: ...

    async def messages_after(
        self, account: str, platform_fan_id: str, *, after_message_id: str | None
    ) -> Page[PlatformMessage]: ...

    async def recent_messages(
        self, account: str, platform_fan_id: str, *, limit: int
    ) -> list[PlatformMessage]: ...

    async def subscribers(
        self, account: str, *, cursor: str | None
    ) -> Page[PlatformSubscriber]: ...

    async def transactions(
        self, account: str, *, since: datetime, cursor: str | None
    ) -> Page[PlatformTransaction]: ...

    async def vault_media(
        self, account: str, *, cursor: str | None, limit: int
    ) -> Page[PlatformVaultMedia]: ...

    def listen(
        self, account: str, *, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[PlatformMessage]: ...

    # Writing.
    async def send_message(
        self,
        account: str,
        platform_fan_id: str,
        *,
        text: str,
        price_cents: int = 0,
        media_ids: tuple[str, ...] = (),
    ) -> PlatformMessage: ...

    async def send_mass_message(
        self,
        account: str,
        *,
        text: str,
        platform_fan_ids: tuple[str, ...],
        price_cents: int = 0,
        media_ids: tuple[str, ...] = (),
    ) -> str: ...

    async def mass_message_stats(self, account: str, *, limit: int) -> list[PlatformQueueStats]: ...

    async def mass_message_canceled(self, account: str, platform_queue_id: str) -> bool: ...

    async def unsend_mass_message(self, account: str, platform_queue_id: str) -> None: ...

    async def close(self) -> None: ...
