"""The platform's behaviour over its state: sessions, signing, limits, fans' actions, sends.

Handlers stay thin; everything a request or a control call changes goes through `Platform`. Time
comes from `Clock`, which tests can move forward (`POST /_control/clock/advance`).
"""

from __future__ import annotations

import html
import random
import re
import secrets
import string
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from huntaze_simulator import errors
from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.model import (
    Creator,
    Fan,
    FanList,
    MassMessage,
    Media,
    Message,
    PlatformData,
    Session,
    SubscriptionPeriod,
    Transaction,
    TransactionType,
)
from huntaze_simulator.signing import DynamicRules, compute_sign, generate_rules

# Built-in fan lists every creator has (ids are their names, as on the platform).
BUILT_IN_LISTS = (
    ("fans", "Fans"),
    ("following", "Following"),
    ("restricted", "Restricted"),
    ("blocked", "Blocked"),
)
MIN_PRICE = 3.0
MAX_PRICE = 200.0
SUBSCRIPTION_DAYS = 30
DAY = 86400.0
# A mass message may be deleted (unsent) for a day after it went out.
UNSEND_WINDOW = DAY
# Times above this are milliseconds (1e11 s is the year 5138).
MILLISECOND_THRESHOLD = 10**11
SESS_ALPHABET = string.ascii_lowercase + string.digits
# What a browser token (`x-bc`, `bcTokenSha`) may look like: the web client's are 40 hex digits.
BROWSER_TOKEN = re.compile(r"[0-9A-Za-z]{16,128}")


class Clock:
    """Wall time plus an offset a test can advance."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def iso(timestamp: float) -> str:
    """The platform's date format: ISO-8601 with an offset, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def as_html(text: str) -> str:
    """Plain text as the web client sends it: escaped, in one paragraph."""
    return f"<p>{html.escape(text)}</p>"


@dataclass
class RateWindow:
    hits: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


MessageListener = Callable[[Message], None]


class Platform:
    def __init__(
        self,
        *,
        config: SimulatorConfig,
        data: PlatformData,
        clock: Clock,
        snapshot_path: Path | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.clock = clock
        self.snapshot_path = snapshot_path
        self.rng = random.Random(config.seed)  # noqa: S311 (seeded for repeatable runs)
        self.rate_windows: dict[str, RateWindow] = {}
        self.fan_message_listeners: list[MessageListener] = []
        self.session_end_listeners: list[Callable[[str], None]] = []

    @classmethod
    def fresh(
        cls, *, config: SimulatorConfig, clock: Clock, snapshot_path: Path | None = None
    ) -> Platform:
        """A platform with one creator account (`creator@example.com` / `creator-password`)."""
        rng = random.Random(config.seed)  # noqa: S311 (seeded for repeatable runs)
        now = clock.now()
        creator = Creator(
            id=rng.randint(100_000_000, 499_999_999),
            username="demo.creator",
            name="Demo Creator",
            email="creator@example.com",
            password="creator-password",
            about="Welcome to my page",
            subscribe_price=9.99,
            joined_at=now - 400 * DAY,
        )
        data = PlatformData(
            creator=creator,
            rules=generate_rules(rng, now=datetime.fromtimestamp(now, UTC)),
            rules_rotated_at=now,
            next_id=rng.randint(1_000_000, 9_000_000),
            lists={
                list_id: FanList(id=list_id, type=list_id, name=name)
                for list_id, name in BUILT_IN_LISTS
            },
        )
        platform = cls(config=config, data=data, clock=clock, snapshot_path=snapshot_path)
        platform.rng = rng
        for index in range(12):
            platform.add_vault_media(kind="video" if index % 3 == 0 else "photo", at=now - DAY)
        return platform

    # Snapshot ------------------------------------------------------------------------------

    @classmethod
    def load(cls, *, config: SimulatorConfig, clock: Clock, snapshot_path: Path) -> Platform:
        data = PlatformData.model_validate_json(snapshot_path.read_bytes())
        return cls(config=config, data=data, clock=clock, snapshot_path=snapshot_path)

    def save(self) -> None:
        """Writes the snapshot atomically (a crash mid-write keeps the previous one)."""
        if self.snapshot_path is None:
            return
        scratch = self.snapshot_path.with_suffix(".tmp")
        scratch.write_text(self.data.model_dump_json())
        scratch.replace(self.snapshot_path)

    # Identifiers -------------------------------------------------------------------------

    def new_id(self) -> int:
        """Increasing ids shared by every kind of object (message cursors rely on the order)."""
        self.data.next_id += self.rng.randint(1, 9)
        return self.data.next_id

    def message_id(self) -> int:
        # Message ids on the platform are 13-digit numbers.
        return 8_000_000_000_000 + self.new_id()

    # Dynamic rules -----------------------------------------------------------------------

    def rotate_rules(self) -> DynamicRules:
        now = self.clock.now()
        self.data.previous_rules = self.data.rules
        self.data.rules = generate_rules(
            self.rng, now=datetime.fromtimestamp(now, UTC), previous=self.data.rules
        )
        self.data.rules_rotated_at = now
        return self.data.rules

    def accepted_rules(self) -> list[DynamicRules]:
        accepted = [self.data.rules]
        previous = self.data.previous_rules
        grace_ends = self.data.rules_rotated_at + self.config.rules_grace_seconds
        if previous is not None and self.clock.now() < grace_ends:
            accepted.append(previous)
        return accepted

    def verify_signature(
        self, *, path_and_query: str, user_id: str, sign: str | None, time_header: str | None
    ) -> None:
        """Raises the platform's 401 body unless `sign` matches a rule set still accepted."""
        if not sign or not time_header or not time_header.isdigit():
            raise errors.refresh_the_page()
        stamp = int(time_header)
        in_ms = stamp > MILLISECOND_THRESHOLD
        units = self.config.time_units
        if (units == "ms" and not in_ms) or (units == "s" and in_ms):
            raise errors.refresh_the_page()
        skew = self.config.max_clock_skew_seconds
        # Against the wall clock: clients sign with theirs, while a test may move the platform's.
        if skew is not None and abs((stamp / 1000 if in_ms else stamp) - time.time()) > skew:
            raise errors.refresh_the_page()
        for rules in self.accepted_rules():
            expected = compute_sign(
                rules, path_and_query=path_and_query, user_id=user_id, time=time_header
            )
            if secrets.compare_digest(expected, sign):
                return
        raise errors.refresh_the_page()

    # Rate limit --------------------------------------------------------------------------

    def count_request(self, key: str) -> None:
        """Counts one request for `key`; raises 429 once over the limit, for the block time."""
        now = self.clock.now()
        window = self.rate_windows.setdefault(key, RateWindow())
        if now < window.blocked_until:
            raise errors.too_many_requests()
        horizon = now - self.config.rate_limit_window_seconds
        while window.hits and window.hits[0] <= horizon:
            window.hits.popleft()
        if len(window.hits) >= self.config.rate_limit_requests:
            window.blocked_until = now + self.config.rate_limit_block_seconds
            window.hits.clear()
            raise errors.too_many_requests()
        window.hits.append(now)

    # Sessions ----------------------------------------------------------------------------

    def open_session(
        self, *, user_agent: str, x_bc: str | None = None, authenticated: bool = True
    ) -> Session:
        if x_bc is not None and not BROWSER_TOKEN.fullmatch(x_bc):
            raise errors.bad_request("Invalid x-bc")
        now = self.clock.now()
        session = Session(
            sess="".join(secrets.choice(SESS_ALPHABET) for _ in range(26)),
            user_id=self.data.creator.id,
            x_bc=x_bc or secrets.token_hex(20),
            user_agent=user_agent,
            csrf=secrets.token_hex(16),
            st=secrets.token_hex(32),
            ws_token=secrets.token_hex(20),
            created_at=now,
            expires_at=now + self.config.session_ttl_seconds,
            authenticated=authenticated,
        )
        self.data.sessions[session.sess] = session
        return session

    def live_session(self, sess: str | None) -> Session | None:
        """The session behind a `sess` cookie, if it exists, has not ended and has not expired."""
        session = self.data.sessions.get(sess or "")
        if session is None or session.ended:
            return None
        if self.clock.now() >= session.expires_at:
            self.end_session(session.sess)
            return None
        return session

    def end_session(self, sess: str) -> None:
        session = self.data.sessions.get(sess)
        if session is None or session.ended:
            return
        session.ended = True
        for listener in self.session_end_listeners:
            listener(sess)

    def end_all_sessions(self) -> int:
        live = [s.sess for s in self.data.sessions.values() if not s.ended]
        for sess in live:
            self.end_session(sess)
        return len(live)

    def check_binding(
        self,
        session: Session,
        *,
        auth_id: str | None,
        user_id: str | None,
        x_bc: str | None,
        user_agent: str | None,
    ) -> None:
        """Cookies, `user-id`, `x-bc` and the user-agent must all be the session's own."""
        owner = str(session.user_id)
        matches = (
            auth_id == owner
            and user_id in (None, owner)
            and x_bc == session.x_bc
            and user_agent == session.user_agent
        )
        if not matches:
            if self.config.end_session_on_mismatch:
                self.end_session(session.sess)
            raise errors.wrong_user()

    # Vault ---------------------------------------------------------------------------------

    def add_vault_media(self, *, kind: str, at: float) -> Media:
        media = Media(
            id=self.new_id(),
            type="video" if kind == "video" else "photo",
            created_at=at,
            duration=self.rng.randint(10, 600) if kind == "video" else 0,
        )
        self.data.vault.append(media)
        return media

    # Fans' actions ---------------------------------------------------------------------------

    def fan(self, fan_id: int) -> Fan:
        fan = self.data.fans.get(fan_id)
        if fan is None:
            raise errors.not_found("User not found")
        return fan

    def subscribe(
        self,
        *,
        fan_id: int | None = None,
        name: str | None = None,
        username: str | None = None,
        at: float | None = None,
    ) -> Fan:
        """A new fan subscribes, or a former one subscribes again (a paid subscription earns)."""
        now = self.clock.now() if at is None else at
        price = self.data.creator.subscribe_price
        if fan_id is not None and fan_id in self.data.fans:
            fan = self.data.fans[fan_id]
            if fan.active:
                return fan
            action: Literal["subscribe", "resubscribe"] = "resubscribe"
        else:
            new_id = fan_id or self.rng.randint(10_000_000, 499_999_999)
            number = self.rng.randint(1000, 99999)
            fan = Fan(
                id=new_id,
                username=username or f"u{new_id}",
                name=name or f"Fan {number}",
                joined_at=now - self.rng.uniform(0, 900) * DAY,
                active=True,
                subscribed_at=now,
                expires_at=now,
                subscribe_price=price,
                last_activity=now,
            )
            self.data.fans[fan.id] = fan
            action = "subscribe"
        fan.active = True
        fan.subscribed_at = now
        fan.expires_at = now + SUBSCRIPTION_DAYS * DAY
        fan.subscribe_price = price
        fan.last_activity = now
        fan.history.append(
            SubscriptionPeriod(id=self.new_id(), action=action, date=now, price=price)
        )
        self._set_membership("fans", fan.id, member=True)
        if price > 0:
            self._earn(type_="subscribes", amount=price, fan_id=fan.id, at=now)
        return fan

    def renew(self, *, fan_id: int, at: float) -> None:
        """A monthly rebill of an active subscription."""
        fan = self.fan(fan_id)
        fan.expires_at = at + SUBSCRIPTION_DAYS * DAY
        if fan.subscribe_price > 0:
            self._earn(type_="subscribes", amount=fan.subscribe_price, fan_id=fan.id, at=at)

    def unsubscribe(self, *, fan_id: int, at: float | None = None) -> Fan:
        now = self.clock.now() if at is None else at
        fan = self.fan(fan_id)
        if fan.active:
            fan.active = False
            fan.expires_at = now
            fan.history.append(
                SubscriptionPeriod(id=self.new_id(), action="unsubscribe", date=now, price=0.0)
            )
            self._set_membership("fans", fan.id, member=False)
        return fan

    def fan_writes(self, *, fan_id: int, text: str, at: float | None = None) -> Message:
        """A fan's message in the creator's inbox (pushed to the creator's live sockets)."""
        now = self.clock.now() if at is None else at
        fan = self.fan(fan_id)
        message = Message(
            id=self.message_id(),
            fan_id=fan.id,
            from_creator=False,
            text=as_html(text),
            created_at=now,
        )
        self._append(message)
        fan.last_activity = now
        self._notify(message)
        return message

    def purchase(self, *, fan_id: int, message_id: int, at: float | None = None) -> Message:
        """A fan unlocks a paid message the creator sent them."""
        now = self.clock.now() if at is None else at
        self.fan(fan_id)
        message = next((m for m in self.data.messages.get(fan_id, []) if m.id == message_id), None)
        if message is None or not message.from_creator:
            raise errors.not_found("Message not found")
        if message.price <= 0:
            raise errors.bad_request("This message is free")
        if message.purchased:
            raise errors.bad_request("Already purchased")
        message.purchased = True
        self._earn(
            type_="chat_messages",
            amount=message.price,
            fan_id=fan_id,
            at=now,
            message_id=message.id,
        )
        self.data.fans[fan_id].last_activity = now
        return message

    def tip(
        self, *, fan_id: int, amount: float, text: str = "", at: float | None = None
    ) -> Message:
        """A fan tips in the chat: a tip message and a `tips` transaction."""
        now = self.clock.now() if at is None else at
        fan = self.fan(fan_id)
        if not 1 <= amount <= MAX_PRICE:
            raise errors.bad_request("Tip amount is out of range")
        message = Message(
            id=self.message_id(),
            fan_id=fan.id,
            from_creator=False,
            text=as_html(text) if text else "",
            created_at=now,
            tip_amount=amount,
        )
        self._append(message)
        self._earn(type_="tips", amount=amount, fan_id=fan.id, at=now, message_id=message.id)
        fan.last_activity = now
        self._notify(message)
        return message

    # The creator's actions -----------------------------------------------------------------

    def claim_send_slot(self, session: Session) -> None:
        """One send per `send_interval_seconds` per session ("Allow 3 seconds")."""
        now = self.clock.now()
        last = session.last_send_at
        if last is not None and now - last < self.config.send_interval_seconds:
            raise errors.allow_three_seconds()
        session.last_send_at = now

    def check_content(self, *, price: float, media_ids: list[int], previews: list[int]) -> None:
        vault = {media.id for media in self.data.vault}
        if any(media_id not in vault for media_id in media_ids) or not set(previews) <= set(
            media_ids
        ):
            raise errors.bad_request(
                "Something wrong with attached media, please try to upload it again"
            )
        if price and not (MIN_PRICE <= price <= MAX_PRICE):
            raise errors.bad_request(f"Price must be 0 or between {MIN_PRICE:g} and {MAX_PRICE:g}")
        if price and not media_ids:
            raise errors.bad_request("A paid message needs media")

    def creator_sends(
        self,
        *,
        fan_id: int,
        text: str,
        price: float,
        media_ids: list[int],
        previews: list[int],
        locked_text: bool,
        queue_id: int | None = None,
        at: float | None = None,
    ) -> Message:
        now = self.clock.now() if at is None else at
        fan = self.data.fans.get(fan_id)
        if fan is None or not fan.active:
            raise errors.bad_request("Cannot send message to this user")
        message = Message(
            id=self.message_id(),
            fan_id=fan_id,
            from_creator=True,
            text=text,
            created_at=now,
            price=price,
            media_ids=media_ids,
            previews=previews,
            locked_text=locked_text,
            queue_id=queue_id,
        )
        self._append(message)
        if queue_id is None:
            # Answering a chat reads it (a mass message's copy does not).
            self.data.last_read_message_id[fan_id] = message.id
        return message

    def mark_read(self, fan_id: int) -> None:
        messages = self.data.messages.get(fan_id)
        if not messages:
            raise errors.not_found("Chat not found")
        self.data.last_read_message_id[fan_id] = messages[-1].id

    def queue_mass_message(
        self,
        *,
        text: str,
        price: float,
        media_ids: list[int],
        previews: list[int],
        locked_text: bool,
        user_lists: Iterable[str | int],
        user_ids: Iterable[int],
        excluded_lists: Iterable[str | int],
        send_at: float | None,
    ) -> MassMessage:
        """Resolves the recipients now; delivery happens in the background (`deliver_due`)."""
        recipients: dict[int, None] = {}
        for list_id in user_lists:
            for member in self.fan_list(str(list_id)).user_ids:
                recipients[member] = None
        for user_id in user_ids:
            if user_id in self.data.fans:
                recipients[user_id] = None
        excluded = {m for list_id in excluded_lists for m in self.fan_list(str(list_id)).user_ids}
        active = [
            fan_id
            for fan_id in recipients
            if fan_id not in excluded and self.data.fans[fan_id].active
        ]
        now = self.clock.now()
        queued = MassMessage(
            id=self.new_id(),
            created_at=now,
            send_at=max(now, send_at or now),
            text=text,
            price=price,
            media_ids=media_ids,
            previews=previews,
            locked_text=locked_text,
            recipients=active,
        )
        self.data.mass_messages[queued.id] = queued
        return queued

    def deliver_due(self, budget: int) -> int:
        """Delivers up to `budget` pending mass-message copies whose time has come."""
        now = self.clock.now()
        delivered = 0
        for queued in self.data.mass_messages.values():
            if queued.canceled or queued.send_at > now:
                continue
            while queued.delivered < len(queued.recipients) and delivered < budget:
                fan_id = queued.recipients[queued.delivered]
                queued.delivered += 1
                if self.data.fans[fan_id].active:
                    self.creator_sends(
                        fan_id=fan_id,
                        text=queued.text,
                        price=queued.price,
                        media_ids=queued.media_ids,
                        previews=queued.previews,
                        locked_text=queued.locked_text,
                        queue_id=queued.id,
                        at=now,
                    )
                delivered += 1
        return delivered

    def mass_message(self, queue_id: int) -> MassMessage:
        queued = self.data.mass_messages.get(queue_id)
        if queued is None:
            raise errors.not_found("Queue not found")
        return queued

    def unsend_seconds(self, queued: MassMessage) -> int:
        """How long the mass message may still be deleted: until a day after it went out."""
        if queued.canceled:
            return 0
        return max(0, int(queued.send_at + UNSEND_WINDOW - self.clock.now()))

    def cancel_mass_message(self, queue_id: int) -> MassMessage:
        """Stops the queue and unsends the copies already delivered, within a day of its send
        date (a scheduled one that has not gone out yet may always be deleted)."""
        queued = self.mass_message(queue_id)
        if queued.canceled:
            raise errors.bad_request("This message has already been deleted")
        if self.clock.now() > queued.send_at and not self.unsend_seconds(queued):
            # The platform's text for a message past its window is not documented.
            raise errors.bad_request("This message can no longer be deleted")
        queued.canceled = True
        for fan_id in queued.recipients:
            chat = self.data.messages.get(fan_id, [])
            self.data.messages[fan_id] = [m for m in chat if m.queue_id != queue_id]
        return queued

    # Lists ---------------------------------------------------------------------------------

    def create_list(self, name: str) -> FanList:
        if not name.strip():
            raise errors.bad_request("Name is required")
        fan_list = FanList(id=str(self.new_id()), type="custom", name=name.strip(), custom=True)
        self.data.lists[fan_list.id] = fan_list
        return fan_list

    def set_list_member(self, *, list_id: str, fan_id: int, member: bool) -> FanList:
        fan_list = self.fan_list(list_id)
        if not fan_list.custom:
            raise errors.bad_request("This list cannot be changed")
        self.fan(fan_id)
        self._set_membership(list_id, fan_id, member=member)
        return fan_list

    def fan_list(self, list_id: str) -> FanList:
        fan_list = self.data.lists.get(list_id)
        if fan_list is None:
            raise errors.not_found("List not found")
        return fan_list

    def _set_membership(self, list_id: str, fan_id: int, *, member: bool) -> None:
        members = self.data.lists[list_id].user_ids
        if member and fan_id not in members:
            members.append(fan_id)
        elif not member and fan_id in members:
            members.remove(fan_id)

    # Internals ---------------------------------------------------------------------------

    def _append(self, message: Message) -> None:
        self.data.messages.setdefault(message.fan_id, []).append(message)

    def _earn(
        self,
        *,
        type_: TransactionType,
        amount: float,
        fan_id: int,
        at: float,
        message_id: int | None = None,
    ) -> None:
        self.data.transactions.append(
            Transaction(
                id=self.new_id(),
                type=type_,
                amount=round(amount, 2),
                fan_id=fan_id,
                created_at=at,
                message_id=message_id,
            )
        )

    def _notify(self, message: Message) -> None:
        for listener in self.fan_message_listeners:
            listener(message)
