"""The platform driver over the creator's own web session: every OnlyFans-specific detail is here.

Per account one Playwright browser context (Chromium, launched through `executable_path`). A login
goes through the real login form; the session (cookies, the browser's `x-bc` token in
`localStorage.bcTokenSha`, its user-agent) stays in the context, and API calls are made from that
context (`context.request`), so they carry the session's own cookies and user-agent. Each call is
signed under the dynamic rules fetched from a configurable URL, cached, and fetched again when the
platform refuses a signature ("Please refresh the page").

A bot challenge is reported, never attempted: the creator imports a session from their browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, Literal, cast
from urllib.parse import urlencode, urlsplit

import httpx
import websockets
from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page as BrowserPage

from huntaze_kit.logging import get_logger
from huntaze_onlyfans_worker.driver import (
    ImportedSession,
    LoginResult,
    LoginStatus,
    NotConnected,
    Page,
    PlatformChat,
    PlatformError,
    PlatformFan,
    PlatformMedia,
    PlatformMessage,
    PlatformProfile,
    PlatformQueueStats,
    PlatformRefused,
    PlatformSubscriber,
    PlatformTransaction,
    PlatformUnavailable,
    PlatformVaultMedia,
    RateLimited,
    SendThrottled,
    SessionDead,
    StaleRules,
    TransactionKind,
)

log = get_logger(__name__)

API_PREFIX = "/api2/v2"
# Mass messages' statistics per page (the web client's page).
QUEUE_STATS_PAGE = 10
# Flags Debian's Chromium needs here: no sandbox inside containers, and no background traffic.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
# The platform's own paging limits.
CHATS_PAGE = 100
MESSAGES_PAGE = 100
SUBSCRIBERS_PAGE = 20
TRANSACTIONS_PAGE = 100
VAULT_PAGE = 100
# When a 429 names no delay: the platform's block is reported to last minutes.
DEFAULT_RETRY_AFTER = 60.0
HEARTBEAT_SECONDS = 25.0
SESSION_FORMAT = 1
# The push socket closes with this code when its session ends.
SESSION_ENDED_CLOSE = 4001

# Error bodies `{"error": {"code", "message"}}` (HTTP 400 even for code 401).
CODE_STALE_SIGNATURE = 401
CODE_WRONG_USER = 301
CODE_OTP_PENDING = 101
SEND_THROTTLED = "Allow 3 seconds"

# Login pages: what each outcome shows.
HOME = "#home-page"
CHALLENGE = "#challenge-page"
OTP_PAGE = "#otp-page"
LOGIN_ERROR = "#login-error"
OTP_ERROR = "#otp-error"
LOGIN_PAGE = "#login-page"
AFTER_PASSWORD = f"{HOME}, {CHALLENGE}, {OTP_PAGE}, {LOGIN_ERROR}"
AFTER_OTP = f"{HOME}, {OTP_ERROR}, {LOGIN_PAGE}"
CHALLENGE_REASON = (
    "OnlyFans asks for a security check only a person can pass: sign in in your browser and "
    "import that session."
)


@dataclass(frozen=True)
class SigningRules:
    static_param: str
    prefix: str
    suffix: str
    checksum_indexes: tuple[int, ...]
    checksum_constant: int
    app_token: str
    revision: str = ""

    @classmethod
    def parse(cls, body: dict[str, Any]) -> SigningRules:
        """Any published shape: `prefix/suffix`, `start/end`, or a `format` template."""
        prefix = body.get("prefix") or body.get("start")
        suffix = body.get("suffix") or body.get("end")
        if (prefix is None or suffix is None) and "format" in body:
            parts = str(body["format"]).split(":")
            prefix, suffix = parts[0], parts[-1]
        app_token = body.get("app_token") or body.get("app-token")
        if prefix is None or suffix is None or not app_token:
            raise StaleRules("the published signing rules are incomplete")
        return cls(
            static_param=str(body["static_param"]),
            prefix=str(prefix),
            suffix=str(suffix),
            checksum_indexes=tuple(int(index) for index in body["checksum_indexes"]),
            checksum_constant=int(body["checksum_constant"]),
            app_token=str(app_token),
            revision=str(body.get("revision", "")),
        )

    def sign(self, *, path_and_query: str, user_id: str, time_ms: int) -> dict[str, str]:
        """`sign`, `time` and `app-token` for one request (method and body are not signed)."""
        stamp = str(time_ms)
        message = "\n".join([self.static_param, stamp, path_and_query, user_id])
        sha = hashlib.sha1(message.encode()).hexdigest()  # noqa: S324 (the platform's choice)
        digits = sha.encode("ascii")
        checksum = abs(sum(digits[i] for i in self.checksum_indexes) + self.checksum_constant)
        return {
            "sign": f"{self.prefix}:{sha}:{checksum:x}:{self.suffix}",
            "time": stamp,
            "app-token": self.app_token,
        }


class RulesSource:
    """The signing rules from `url`, cached for `ttl_seconds`; `refresh` fetches them now."""

    def __init__(self, url: str, *, ttl_seconds: float, timeout: float = 10.0) -> None:
        self._url = url
        self._ttl = ttl_seconds
        self._timeout = timeout
        self._rules: SigningRules | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> SigningRules:
        if self._rules is not None and time.monotonic() - self._fetched_at < self._ttl:
            return self._rules
        return await self.refresh()

    async def refresh(self, *, unless_newer_than: float | None = None) -> SigningRules:
        """Fetches the rules; callers refreshing together share one fetch."""
        async with self._lock:
            if (
                self._rules is not None
                and unless_newer_than is not None
                and self._fetched_at > unless_newer_than
            ):
                return self._rules
            try:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.get(self._url)
                response.raise_for_status()
                rules = SigningRules.parse(response.json())
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                raise PlatformUnavailable(
                    f"the signing rules cannot be fetched ({error})"
                ) from None
            if self._rules is None or rules.revision != self._rules.revision:
                log.info("onlyfans.rules_loaded", revision=rules.revision)
            self._rules, self._fetched_at = rules, time.monotonic()
            return rules

    @property
    def fetched_at(self) -> float:
        return self._fetched_at


@dataclass(frozen=True)
class WebDriverConfig:
    base_url: str
    rules_url: str
    executable_path: str | None = None
    user_agent: str = DEFAULT_USER_AGENT
    rules_ttl_seconds: float = 300.0
    max_contexts: int = 20
    idle_seconds: float = 600.0
    timeout_seconds: float = 30.0
    # How long to hold off after a 429 that names no delay.
    rate_limit_pause_seconds: float = DEFAULT_RETRY_AFTER


@dataclass(eq=False)
class _Account:
    context: BrowserContext
    user_agent: str
    x_bc: str = field(default="", repr=False)
    user_id: str = ""
    last_used: float = field(default_factory=time.monotonic)
    # A login waiting for its OTP code keeps its page open.
    pending: BrowserPage | None = None


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "p"} and self.parts:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(markup: str) -> str:
    """The text of a message's HTML, as the creator reads it."""
    parser = _TextOf()
    parser.feed(markup or "")
    parser.close()
    return "".join(parser.parts).strip()


def html_of(text: str) -> str:
    """Plain text as the HTML the web client sends."""
    return html.escape(text).replace("\n", "<br>")


def _cents(amount: Any) -> int:
    return round(float(amount or 0) * 100)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _fan(user: dict[str, Any]) -> PlatformFan:
    return PlatformFan(
        platform_fan_id=str(user["id"]),
        display_name=str(user.get("name") or user.get("displayName") or user.get("username", "")),
        handle=str(user.get("username", "")),
        avatar_url=str(user.get("avatar") or ""),
    )


def _message(item: dict[str, Any], *, platform_fan_id: str | None = None) -> PlatformMessage:
    sender = item.get("fromUser") or {}
    from_creator = bool(item.get("isSentByMe"))
    fan_id = platform_fan_id or str(sender.get("id", ""))
    media = tuple(
        PlatformMedia(
            platform_media_id=str(entry["id"]),
            kind=str(entry.get("type", "photo")),
            url=str(((entry.get("files") or {}).get("full") or {}).get("url") or ""),
        )
        for entry in item.get("media") or []
    )
    created = _time(item.get("createdAt")) or datetime.now(UTC)
    return PlatformMessage(
        platform_message_id=str(item["id"]),
        platform_fan_id=fan_id,
        from_creator=from_creator,
        text=plain_text(str(item.get("text") or "")),
        price_cents=_cents(item.get("price")),
        created_at=created,
        fan=_fan(sender) if not from_creator and "username" in sender else None,
        media=media,
        tip_cents=_cents(item.get("tipAmount")) if item.get("isTip") else 0,
    )


def _outgoing(text: str, price_cents: int, media_ids: tuple[str, ...]) -> dict[str, Any]:
    """The body fields of a message the creator sends (direct or mass), as the web client sends
    them: HTML text, vault media ids, the price in dollars."""
    return {
        "text": html_of(text),
        "lockedText": False,
        "mediaFiles": [int(media) for media in media_ids],
        "price": price_cents / 100,
        "previews": [],
    }


TRANSACTION_KINDS = {
    "subscribes": TransactionKind.SUBSCRIPTION,
    "tips": TransactionKind.TIP,
    "chat_messages": TransactionKind.MESSAGE,
}


def _platform_error(
    status: int, body: Any, headers: dict[str, str], *, rate_limit_pause: float
) -> PlatformError:
    """The driver's failure for a refused call."""
    error = body.get("error") if isinstance(body, dict) else None
    code = int(error.get("code", 0)) if isinstance(error, dict) else 0
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if status == 429:
        try:
            retry_after = float(headers.get("retry-after", rate_limit_pause))
        except ValueError:
            retry_after = rate_limit_pause
        return RateLimited("OnlyFans asks to slow down", retry_after=retry_after)
    if status >= 500:
        return PlatformUnavailable(f"OnlyFans answered {status}")
    if code == CODE_STALE_SIGNATURE and status == 400:
        return StaleRules("OnlyFans refused the request signature")
    if status == 401 or code in {CODE_WRONG_USER, CODE_OTP_PENDING}:
        return SessionDead("the OnlyFans session has ended; sign in again or import a session")
    if message == SEND_THROTTLED:
        return SendThrottled(message)
    return PlatformRefused(message or f"OnlyFans refused the request ({status})")


class OnlyFansWebDriver:
    """`PlatformDriver` over browser contexts (see the module's docstring)."""

    def __init__(self, config: WebDriverConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.rules = RulesSource(config.rules_url, ttl_seconds=config.rules_ttl_seconds)
        self._clock = clock
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._browser_lock = asyncio.Lock()
        self._accounts: dict[str, _Account] = {}
        self._host = urlsplit(config.base_url).hostname or ""

    # The browser and its contexts ------------------------------------------------------------

    async def _browser_now(self) -> Browser:
        async with self._browser_lock:
            if self._browser is None or not self._browser.is_connected():
                if self._playwright is None:
                    self._playwright = await async_playwright().start()
                self._browser = await self._playwright.chromium.launch(
                    executable_path=self.config.executable_path,
                    args=list(CHROMIUM_ARGS),
                    headless=True,
                )
            return self._browser

    async def _new_context(
        self, account: str, *, user_agent: str, storage_state: Any = None
    ) -> _Account:
        await self.release(account)
        await self._make_room()
        try:
            browser = await self._browser_now()
            context = await browser.new_context(
                user_agent=user_agent, storage_state=storage_state, base_url=self.config.base_url
            )
        except PlaywrightError as error:
            raise PlatformUnavailable(f"the browser did not start ({error.message})") from None
        context.set_default_timeout(self.config.timeout_seconds * 1000)
        opened = _Account(context=context, user_agent=user_agent)
        self._accounts[account] = opened
        return opened

    async def _make_room(self) -> None:
        """Closes the least recently used contexts beyond the limit (never a pending login)."""
        idle = sorted(
            (entry for entry in self._accounts.items() if entry[1].pending is None),
            key=lambda entry: entry[1].last_used,
        )
        while len(self._accounts) >= self.config.max_contexts and idle:
            account, _ = idle.pop(0)
            await self.release(account)

    async def close_idle(self) -> int:
        """Closes contexts unused for `idle_seconds`; answers how many."""
        cutoff = time.monotonic() - self.config.idle_seconds
        stale = [key for key, held in self._accounts.items() if held.last_used < cutoff]
        for account in stale:
            await self.release(account)
        return len(stale)

    def holds(self, account: str) -> bool:
        held = self._accounts.get(account)
        return held is not None and held.pending is None and bool(held.x_bc)

    @property
    def open_contexts(self) -> int:
        return len(self._accounts)

    async def release(self, account: str) -> None:
        held = self._accounts.pop(account, None)
        if held is not None:
            with contextlib.suppress(PlaywrightError):
                await held.context.close()

    async def close(self) -> None:
        for account in list(self._accounts):
            await self.release(account)
        if self._browser is not None:
            with contextlib.suppress(PlaywrightError):
                await self._browser.close()
            self._browser = None
        if self._playwright is not None:
            await self._playwright.stop()
            self._playwright = None

    def _held(self, account: str) -> _Account:
        held = self._accounts.get(account)
        if held is None or held.pending is not None or not held.x_bc:
            raise NotConnected("no OnlyFans session is open for this account")
        held.last_used = time.monotonic()
        return held

    # Sessions -------------------------------------------------------------------------------

    async def saved_session(self, account: str) -> bytes:
        """The session as opaque bytes (cookies, local storage, x-bc, user-agent): secret."""
        held = self._held(account)
        try:
            state = await held.context.storage_state()
        except PlaywrightError:
            raise PlatformUnavailable("the browser closed the OnlyFans session") from None
        return json.dumps(
            {
                "format": SESSION_FORMAT,
                "user_agent": held.user_agent,
                "x_bc": held.x_bc,
                "user_id": held.user_id,
                "storage_state": state,
            }
        ).encode()

    async def resume(self, account: str, saved: bytes) -> None:
        """Opens the context of a saved session (no platform call: the next call proves it)."""
        try:
            state = json.loads(saved)
        except ValueError:
            raise SessionDead("the saved OnlyFans session is unreadable") from None
        if not isinstance(state, dict) or state.get("format") != SESSION_FORMAT:
            raise SessionDead("the saved OnlyFans session is of an unknown format")
        opened = await self._new_context(
            account, user_agent=state["user_agent"], storage_state=state["storage_state"]
        )
        opened.x_bc, opened.user_id = state["x_bc"], state["user_id"]

    async def import_session(self, account: str, imported: ImportedSession) -> LoginResult:
        """A session copied from the creator's browser: its cookies, x-bc and user-agent."""
        cookies = [
            {"name": name, "value": value, "domain": self._host, "path": "/"}
            for name, value in imported.cookies.items()
        ]
        origin = {
            "origin": self.config.base_url.rstrip("/"),
            "localStorage": [{"name": "bcTokenSha", "value": imported.x_bc}],
        }
        opened = await self._new_context(
            account,
            user_agent=imported.user_agent,
            storage_state={"cookies": cookies, "origins": [origin]},
        )
        opened.x_bc = imported.x_bc
        opened.user_id = imported.cookies.get("auth_id", "")
        try:
            profile = await self.profile(account)
        except (SessionDead, PlatformRefused):
            await self.release(account)
            return LoginResult(
                LoginStatus.FAILED, reason="the imported session is not signed in to OnlyFans"
            )
        return LoginResult(LoginStatus.CONNECTED, profile=profile)

    async def log_in(self, account: str, *, email: str, password: str) -> LoginResult:
        """The login form, as a person fills it in."""
        opened = await self._new_context(account, user_agent=self.config.user_agent)
        page = await opened.context.new_page()
        try:
            await page.goto("/login")
            await page.fill("#email", email)
            await page.fill("#password", password)
            async with page.expect_navigation():
                await page.click("#login-submit")
            shown = await page.wait_for_selector(AFTER_PASSWORD, state="attached")
            which = await shown.get_attribute("id") if shown else None
        except PlaywrightError:
            await self.release(account)
            raise PlatformUnavailable("the OnlyFans login page did not load") from None
        if which == "otp-page":
            opened.pending = page
            return LoginResult(
                LoginStatus.NEEDS_OTP, reason="enter the code OnlyFans sent to the creator"
            )
        if which == "home-page":
            return await self._signed_in(account, opened, page)
        reason = (await shown.inner_text()).strip() if shown and which == "login-error" else ""
        await self.release(account)
        if which == "challenge-page":
            return LoginResult(LoginStatus.NEEDS_SESSION_IMPORT, reason=CHALLENGE_REASON)
        return LoginResult(LoginStatus.WRONG_CREDENTIALS, reason=reason or "login refused")

    async def submit_otp(self, account: str, code: str) -> LoginResult:
        held = self._accounts.get(account)
        if held is None or held.pending is None:
            return LoginResult(LoginStatus.FAILED, reason="no login is waiting for a code")
        page = held.pending
        try:
            await page.fill("#otp-code", code)
            async with page.expect_navigation():
                await page.click("#otp-submit")
            shown = await page.wait_for_selector(AFTER_OTP, state="attached")
            which = await shown.get_attribute("id") if shown else None
        except PlaywrightError:
            await self.release(account)
            raise PlatformUnavailable("the OnlyFans code page did not load") from None
        if which == "home-page":
            held.pending = None
            return await self._signed_in(account, held, page)
        if which == "otp-error":
            return LoginResult(LoginStatus.NEEDS_OTP, reason="the code is wrong")
        await self.release(account)
        return LoginResult(LoginStatus.FAILED, reason="the login expired; start again")

    async def _signed_in(self, account: str, held: _Account, page: BrowserPage) -> LoginResult:
        """After the last login step: keep the browser's x-bc and account id, close the page."""
        try:
            held.x_bc = str(await page.evaluate("localStorage.getItem('bcTokenSha') || ''"))
            cookies = {cookie["name"]: cookie["value"] for cookie in await held.context.cookies()}
            held.user_id = cookies.get("auth_id", "")
            await page.close()
        except PlaywrightError:
            await self.release(account)
            raise PlatformUnavailable("the OnlyFans home page did not load") from None
        held.pending = None
        if not held.x_bc or not held.user_id:
            await self.release(account)
            return LoginResult(LoginStatus.FAILED, reason="the login did not open a session")
        return LoginResult(LoginStatus.CONNECTED, profile=await self.profile(account))

    # API calls ------------------------------------------------------------------------------

    async def _call(
        self,
        account: str,
        method: Literal["GET", "POST", "DELETE"],
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One signed call from the account's context; a refused signature is retried once
        under freshly fetched rules."""
        held = self._held(account)
        target = API_PREFIX + path + (f"?{urlencode(params)}" if params else "")
        for attempt in range(2):
            started = time.monotonic()
            rules = await self.rules.current()
            headers = {
                "accept": "application/json, text/plain, */*",
                "user-id": held.user_id,
                "x-bc": held.x_bc,
                **rules.sign(
                    path_and_query=target,
                    user_id=held.user_id,
                    time_ms=int(self._clock() * 1000),
                ),
            }
            try:
                response = await held.context.request.fetch(
                    target, method=method, headers=headers, data=body
                )
                status = response.status
                text = await response.text()
                answer_headers = response.headers
            except PlaywrightError:
                raise PlatformUnavailable("OnlyFans did not answer") from None
            try:
                answer = json.loads(text) if text else None
            except ValueError:
                answer = None
            if 200 <= status < 300:
                return answer
            failure = _platform_error(
                status,
                answer,
                answer_headers,
                rate_limit_pause=self.config.rate_limit_pause_seconds,
            )
            if isinstance(failure, StaleRules) and attempt == 0:
                await self.rules.refresh(unless_newer_than=started)
                continue
            raise failure
        raise StaleRules("OnlyFans refused the request signature")  # pragma: no cover

    async def profile(self, account: str) -> PlatformProfile:
        me = await self._call(account, "GET", "/users/me")
        if not isinstance(me, dict) or not me.get("isAuth", True) or "id" not in me:
            raise SessionDead("the OnlyFans session is not signed in")
        return PlatformProfile(
            platform_user_id=str(me["id"]),
            username=str(me.get("username", "")),
            name=str(me.get("name", "")),
        )

    async def chats(self, account: str, *, cursor: str | None) -> Page[PlatformChat]:
        offset = int(cursor or 0)
        answer = await self._call(
            account,
            "GET",
            "/chats",
            params={"limit": CHATS_PAGE, "offset": offset, "order": "recent", "skip_users": "all"},
        )
        items = [
            PlatformChat(
                platform_fan_id=str(chat["withUser"]["id"]),
                last_message_id=str(chat["lastMessage"]["id"]) if chat.get("lastMessage") else None,
            )
            for chat in answer["list"]
        ]
        more = bool(answer.get("hasMore")) and bool(items)
        return Page(items, str(offset + len(items)) if more else None)

    async def messages_after(
        self, account: str, platform_fan_id: str, *, after_message_id: str | None
    ) -> Page[PlatformMessage]:
        """Oldest first, newer than `after_message_id`; pages are short while more remain."""
        params: dict[str, Any] = {"limit": MESSAGES_PAGE, "order": "asc", "skip_users": "none"}
        if after_message_id is not None:
            params["id"] = after_message_id
        answer = await self._call(
            account, "GET", f"/chats/{platform_fan_id}/messages", params=params
        )
        items = [_message(item, platform_fan_id=platform_fan_id) for item in answer["list"]]
        more = bool(answer.get("hasMore")) and bool(items)
        return Page(items, items[-1].platform_message_id if more else None)

    async def recent_messages(
        self, account: str, platform_fan_id: str, *, limit: int
    ) -> list[PlatformMessage]:
        """The newest messages of a chat, newest first (at most `limit`)."""
        found: list[PlatformMessage] = []
        params: dict[str, Any] = {"limit": min(limit, MESSAGES_PAGE), "order": "desc"}
        while len(found) < limit:
            answer = await self._call(
                account, "GET", f"/chats/{platform_fan_id}/messages", params=params
            )
            found.extend(_message(item, platform_fan_id=platform_fan_id) for item in answer["list"])
            if not answer.get("hasMore") or not answer["list"]:
                break
            params["id"] = found[-1].platform_message_id
        return found[:limit]

    async def subscribers(self, account: str, *, cursor: str | None) -> Page[PlatformSubscriber]:
        offset = int(cursor or 0)
        answer = await self._call(
            account,
            "GET",
            "/subscriptions/subscribers",
            params={"type": "all", "limit": SUBSCRIBERS_PAGE, "offset": offset},
        )
        items = []
        for user in answer["list"]:
            data = user.get("subscribedOnData") or {}
            items.append(
                PlatformSubscriber(
                    fan=_fan(user),
                    active=bool(user.get("subscribedOn")),
                    subscribed_at=_time(data.get("subscribeAt")),
                    expires_at=_time(data.get("expiredAt")),
                    last_seen_at=_time(data.get("lastActivity") or user.get("lastSeen")),
                )
            )
        more = bool(answer.get("hasMore")) and bool(items)
        return Page(items, str(offset + len(items)) if more else None)

    async def transactions(
        self, account: str, *, since: datetime, cursor: str | None
    ) -> Page[PlatformTransaction]:
        """Newest first, from `since` on; the cursor is the platform's marker."""
        params: dict[str, Any] = {
            "limit": TRANSACTIONS_PAGE,
            "startDate": since.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }
        if cursor is not None:
            params["marker"] = cursor
        answer = await self._call(account, "GET", "/payouts/transactions", params=params)
        items = [
            PlatformTransaction(
                platform_transaction_id=str(item["id"]),
                kind=TRANSACTION_KINDS.get(str(item.get("type")), TransactionKind.MESSAGE),
                fan=_fan(item["user"]),
                amount_cents=_cents(item.get("amount")),
                currency=str(item.get("currency") or "USD"),
                created_at=_time(item.get("createdAt")) or datetime.now(UTC),
                platform_message_id=str(item.get("messageId") or ""),
            )
            for item in answer["list"]
            if item.get("user")
        ]
        marker = answer.get("nextMarker")
        more = bool(answer.get("hasMore")) and marker is not None
        return Page(items, str(marker) if more else None)

    async def vault_media(
        self, account: str, *, cursor: str | None, limit: int
    ) -> Page[PlatformVaultMedia]:
        """The vault's media, newest first, as the web client's vault page lists them."""
        offset = int(cursor or 0)
        answer = await self._call(
            account,
            "GET",
            "/vault/media",
            params={"limit": min(limit, VAULT_PAGE), "offset": offset},
        )
        items = [
            PlatformVaultMedia(
                platform_media_id=str(item["id"]),
                kind=str(item.get("type") or "photo"),
                duration_seconds=int(item.get("duration") or 0),
                thumbnail_url=str(((item.get("files") or {}).get("thumb") or {}).get("url") or ""),
                created_at=_time(item.get("createdAt")),
            )
            for item in answer["list"]
        ]
        more = bool(answer.get("hasMore")) and bool(items)
        return Page(items, str(offset + len(items)) if more else None)

    async def send_message(
        self,
        account: str,
        platform_fan_id: str,
        *,
        text: str,
        price_cents: int = 0,
        media_ids: tuple[str, ...] = (),
    ) -> PlatformMessage:
        answer = await self._call(
            account,
            "POST",
            f"/chats/{platform_fan_id}/messages",
            body={**_outgoing(text, price_cents, media_ids), "isForward": False},
        )
        return _message(answer, platform_fan_id=platform_fan_id)

    async def send_mass_message(
        self,
        account: str,
        *,
        text: str,
        platform_fan_ids: tuple[str, ...],
        price_cents: int = 0,
        media_ids: tuple[str, ...] = (),
    ) -> str:
        answer = await self._call(
            account,
            "POST",
            "/messages/queue",
            body={
                **_outgoing(text, price_cents, media_ids),
                "userIds": [int(fan) for fan in platform_fan_ids],
            },
        )
        return str(answer["id"])

    async def mass_message_stats(self, account: str, *, limit: int) -> list[PlatformQueueStats]:
        """The newest mass messages' figures (`/messages/queue/stats`, newest first)."""
        found: list[PlatformQueueStats] = []
        offset = 0
        while len(found) < limit:
            answer = await self._call(
                account,
                "GET",
                "/messages/queue/stats",
                params={"limit": QUEUE_STATS_PAGE, "offset": offset},
            )
            items = answer.get("list") or []
            found += [
                PlatformQueueStats(
                    platform_queue_id=str(item["id"]),
                    sent=int(item.get("sentCount") or 0),
                    viewed=int(item.get("viewedCount") or 0),
                    purchased=int(item.get("purchasedCount") or 0),
                    canceled=bool(item.get("isCanceled")),
                    text=plain_text(str(item.get("text") or "")),
                    price_cents=_cents(item.get("price")),
                    sent_at=_time(item.get("date")),
                )
                for item in items
            ]
            if not answer.get("hasMore") or not items:
                break
            offset += len(items)
        return found[:limit]

    async def mass_message_canceled(self, account: str, platform_queue_id: str) -> bool:
        answer = await self._call(account, "GET", f"/messages/queue/{int(platform_queue_id)}")
        return bool(answer.get("isCanceled"))

    async def unsend_mass_message(self, account: str, platform_queue_id: str) -> None:
        """Deletes a mass message from the fans' chats (`DELETE /messages/queue/{id}`), which
        the platform allows for about 24 hours after it went out; refused after."""
        await self._call(account, "DELETE", f"/messages/queue/{int(platform_queue_id)}")

    # The push socket ------------------------------------------------------------------------

    async def listen(
        self, account: str, *, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[PlatformMessage]:
        """Fans' messages as the platform pushes them; ends with `SessionDead` when the session
        does, or `PlatformUnavailable` when the socket drops. `on_open` is called once the
        socket is subscribed (what came before is for a sync to catch up on)."""
        me = await self._call(account, "GET", "/users/me")
        held = self._held(account)
        cookies = "; ".join(
            f"{cookie['name']}={cookie['value']}"
            for cookie in await held.context.cookies(self.config.base_url)
        )
        try:
            async with websockets.connect(
                str(me["wsUrl"]),
                additional_headers={"cookie": cookies},
                user_agent_header=held.user_agent,
                origin=cast(Any, self.config.base_url.rstrip("/")),
                open_timeout=self.config.timeout_seconds,
            ) as socket:
                await socket.send(json.dumps({"act": "connect", "token": me["wsAuthToken"]}))
                hello = json.loads(await socket.recv())
                if not isinstance(hello, dict) or not hello.get("connected"):
                    raise SessionDead("the OnlyFans push socket refused the session")
                if on_open is not None:
                    on_open()
                heartbeat = asyncio.create_task(self._heartbeat(socket))
                try:
                    async for raw in socket:
                        event = json.loads(raw)
                        pushed = event.get("api2_chat_message") if isinstance(event, dict) else None
                        if isinstance(pushed, dict) and not pushed.get("isSentByMe"):
                            held.last_used = time.monotonic()
                            yield _message(pushed)
                finally:
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await heartbeat
        except websockets.ConnectionClosed as closed:
            if closed.rcvd is not None and closed.rcvd.code == SESSION_ENDED_CLOSE:
                raise SessionDead("the OnlyFans session has ended") from None
            raise PlatformUnavailable("the OnlyFans push socket closed") from None
        except (OSError, websockets.WebSocketException) as error:
            raise PlatformUnavailable(f"the OnlyFans push socket dropped ({error})") from None
        raise PlatformUnavailable("the OnlyFans push socket closed")

    @staticmethod
    async def _heartbeat(socket: websockets.ClientConnection) -> None:
        with contextlib.suppress(websockets.WebSocketException):
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                await socket.send(json.dumps({"act": "get_onlines", "ids": []}))
