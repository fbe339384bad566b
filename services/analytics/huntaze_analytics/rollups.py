# ruff: noqa: S608  (SQL text is built from this module's own constant identifiers only)
"""Applying events to the rollups: a batch at a time, with set-based statements.

`Rollups.apply(conn, events, store=True)` stores the events (those already stored are skipped:
a second guard behind the consumers' own deduplication, which also covers replays older than
its retention) and locks their creators, then reads the state the batch touches (fans, open
conversations), applies every event in order in memory, and writes every table back: three
statements a batch, whatever its size (and one more for a month's first event, which makes its
partition). A rebuild runs the very same code over the stored events (`store=False`), in the
order they were stored, so it ends with the same rollups.

Days and hours are the creator's own, in the timezone of their profile (UTC until set). When a
creator's timezone changes, their rollups are rebuilt from their events in the new timezone:
rollups always use the current one, so a rebuild gives the same result.

Batches of different streams touching the same creator take turns: each first locks its
creators' rows (in one order), so their writes to that creator's rollups never interleave or
deadlock, and a timezone change's rebuild sees no batch half done.

Nothing here commits: the consumer (or the rebuild command) owns the transaction.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from huntaze.ai.v1 import ai_pb2
from huntaze.ai.v1 import events_pb2 as ai_events
from huntaze.auth.v1 import events_pb2 as auth_events
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_analytics import facts
from huntaze_analytics.facts import SUBSCRIBED, StoredEvent
from huntaze_analytics.models import DERIVED_TABLES, ROLLUP_COUNTS, SCHEMA
from huntaze_kit.logging import get_logger

log = get_logger(__name__)

S = SCHEMA  # a fixed identifier: safe in SQL text
STORED_COLUMNS = (
    "event_id, event_type, message_type, creator_id, aggregate_type, aggregate_id, "
    "occurred_at, payload"
)
# A campaign is running after these events and over after those (by the subject's last word).
CAMPAIGN_RUNNING = frozenset({"scheduled", "started", "resumed", "launched", "sending"})
CAMPAIGN_OVER = frozenset(
    {"completed", "finished", "cancelled", "canceled", "failed", "ended", "archived", "paused"}
)
RESOLUTION_COLUMNS = {
    "accepted": "ai_accepted",
    "edited": "ai_edited",
    "rejected": "ai_rejected",
    "sent": "ai_autopilot_sends",
}
_ZONES: dict[str, ZoneInfo] = {}
# An upsert that always updates: it locks each creator's row, in the order given (sorted, so
# that batches touching the same creators never deadlock). `{0}` is its parameter's number.
_LOCK_CREATORS = (
    f"locked AS (INSERT INTO {S}.creators AS t (creator_id) SELECT unnest(${{0}}::uuid[])"
    " ON CONFLICT (creator_id) DO UPDATE SET updated_at = t.updated_at"
    " RETURNING creator_id, timezone)"
)


def zone(name: str) -> ZoneInfo:
    found = _ZONES.get(name)
    if found is None:
        try:
            found = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            found = ZoneInfo("UTC")
        _ZONES[name] = found
    return found


def valid_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return bool(name)


FAN_COLUMNS = (
    "creator_id",
    "fan_id",
    "first_seen_at",
    "display_name",
    "platform",
    "state",
    "expires_at",
    "last_active_at",
    "last_purchase_at",
    "spend_cents",
    "purchases",
    "messages_in",
    "lapsed",
    "deleted",
)
# The fans' columns a wait's row leaves empty (see `Rollups._load`).
_WAIT_PADDING = "".join(f", NULL::{t}" for t in (
    "text", "text", "text", "timestamptz", "timestamptz", "timestamptz",
    "int8", "int8", "int8", "bool", "bool",
))  # fmt: skip


@dataclass(slots=True)
class FanState:
    creator_id: uuid.UUID
    fan_id: uuid.UUID
    first_seen_at: datetime
    display_name: str = ""
    platform: str = "other"
    state: str = "none"
    expires_at: datetime | None = None
    last_active_at: datetime | None = None
    last_purchase_at: datetime | None = None
    spend_cents: int = 0
    purchases: int = 0
    messages_in: int = 0
    lapsed: bool = False
    deleted: bool = False
    # Not stored with the fan: the creator's day of `last_active_at`, and the day the fan is
    # counted on in `active_days` (None: not counted).
    active_day: date | None = None
    counted_day: date | None = None

    def active_at(self, at: datetime, day: date) -> None:
        if self.last_active_at is None or at > self.last_active_at:
            self.last_active_at = at
            self.active_day = day


@dataclass
class _FanStates:
    """Fans' states carried from batch to batch, and those changed since written."""

    states: dict[tuple[uuid.UUID, uuid.UUID], FanState] = field(default_factory=dict)
    dirty: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)


# Fans held by a rebuild before they are written (memory: about 300 bytes each).
FLUSH_FANS = 200_000


@dataclass
class _Changes:
    """Everything one batch changes, written back table by table at the end."""

    daily: defaultdict[tuple[uuid.UUID, date], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    hourly: defaultdict[tuple[uuid.UUID, datetime], Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    platforms: Counter[tuple[uuid.UUID, date, str, str]] = field(default_factory=Counter)
    responses: Counter[tuple[uuid.UUID, date, int]] = field(default_factory=Counter)
    event_counts: Counter[tuple[uuid.UUID, date, str, str]] = field(default_factory=Counter)
    fan_days: set[tuple[uuid.UUID, date, uuid.UUID]] = field(default_factory=set)
    fans: dict[tuple[uuid.UUID, uuid.UUID], FanState] = field(default_factory=dict)
    dirty_fans: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)
    creator_counts: defaultdict[uuid.UUID, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    waits: dict[tuple[uuid.UUID, uuid.UUID], datetime | None] = field(default_factory=dict)
    loaded_waits: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)
    unread_added: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)
    unread_removed: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)
    accounts: dict[tuple[uuid.UUID, str], tuple[bool, str, str, datetime]] = field(
        default_factory=dict
    )
    campaigns: dict[tuple[uuid.UUID, str], tuple[bool | None, str, datetime]] = field(
        default_factory=dict
    )
    timezones: dict[uuid.UUID, str] = field(default_factory=dict)


@dataclass(slots=True)
class _At:
    """Where one event counts: its creator, their day and hour, and the amount it carries."""

    event: StoredEvent
    creator: uuid.UUID
    day: date
    daily: Counter[str]
    hourly: Counter[str]
    amount: int = 0

    def count(self, column: str, value: int = 1) -> None:
        self.daily[column] += value
        self.hourly[column] += value


_uuid = facts.parse_uuid


class Rollups:
    """Applies events to the derived tables."""

    def __init__(self) -> None:
        # Months whose partition of `events` this process has seen made.
        self._months: set[tuple[int, int]] = set()
        self._appliers: dict[type[Any], Callable[[Any, _At, _Changes], None]] = {
            crm_events.PurchaseRecorded: self._purchase,
            crm_events.MessageReceived: self._received,
            crm_events.MessageSent: self._sent,
            crm_events.MessageRead: self._read,
            crm_events.FanCreated: self._fan_changed,
            crm_events.FanUpdated: self._fan_changed,
            crm_events.FanDeleted: self._fan_deleted,
            ai_events.SuggestionCreated: self._suggestion_created,
            ai_events.SuggestionResolved: self._suggestion_resolved,
            ai_events.RevenueAttributed: self._attributed,
            of_events.AccountNeedsAttention: self._needs_attention,
            of_events.AccountConnected: self._connected,
            auth_events.ProfileUpdated: self._profile,
        }

    async def apply(
        self,
        conn: asyncpg.Connection,
        events: Sequence[StoredEvent],
        *,
        store: bool = True,
        fans: _FanStates | None = None,
    ) -> list[uuid.UUID]:
        """Stores (when `store`) and applies `events`; answers the creators whose timezone
        changed (their rollups must be rebuilt: see `rebuild`). With `fans`, the fans' states
        are kept there across calls and written by the caller (`_flush_fans`), once each."""
        creators = sorted({e.creator_id for e in events if e.creator_id is not None})
        if store:
            events, zones = await self._store(conn, events, creators)
        else:
            zones = await self._creators(conn, creators)
        owned = [e for e in events if e.creator_id is not None]
        if not owned:
            return []
        changes = _Changes()
        if fans is not None:
            changes.fans, changes.dirty_fans = fans.states, fans.dirty
        await self._load(conn, owned, changes, zones)
        for event in owned:
            self._apply_one(event, zones, changes)
        await self._write(conn, changes, fans=fans is None)
        return [
            creator
            for creator, name in changes.timezones.items()
            if name != zones.get(creator, "UTC")
        ]

    # -- reading ------------------------------------------------------------------------------
    #
    # A batch costs three round trips: storing its events with its creators' locks, reading
    # the fans and waits it touches, and writing everything back. Round trips, not rows, are
    # what a batch's time is made of (all the more on a busy machine, where each one waits
    # for both processes to be scheduled).

    async def _store(
        self, conn: asyncpg.Connection, events: Sequence[StoredEvent], creators: list[uuid.UUID]
    ) -> tuple[list[StoredEvent], dict[uuid.UUID, str]]:
        """Stores the events not stored yet and locks their creators' rows, in one statement;
        answers the new events and the creators' timezones."""
        if not events:
            return [], {}
        # A month's partition is made by the first event of that month.
        months = {(at.year, at.month) for at in (e.occurred_at.astimezone(UTC) for e in events)}
        unseen = sorted(months - self._months)
        if unseen:
            await conn.execute(
                f"SELECT {S}.ensure_event_partition(m) FROM unnest($1::timestamptz[]) AS m",
                [datetime(year, month, 1, tzinfo=UTC) for year, month in unseen],
            )
            self._months.update(unseen)
        try:
            row = await conn.fetchrow(
                f"WITH stored AS (INSERT INTO {S}.events ({STORED_COLUMNS})"
                " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[],"
                " $6::text[], $7::timestamptz[], $8::bytea[])"
                f" ON CONFLICT DO NOTHING RETURNING event_id), {_LOCK_CREATORS.format(9)}"
                " SELECT (SELECT array_agg(event_id) FROM stored),"
                " (SELECT array_agg(row(creator_id, timezone)) FROM locked)",
                [e.event_id for e in events],
                [e.event_type for e in events],
                [e.message_type for e in events],
                [e.creator_id for e in events],
                [e.aggregate_type for e in events],
                [e.aggregate_id for e in events],
                [e.occurred_at for e in events],
                [e.payload for e in events],
                creators,
            )
        except asyncpg.CheckViolationError:
            # No partition: the transaction that made it was rolled back. The retry makes it.
            self._months.clear()
            raise
        assert row is not None
        new = set(row[0] or ())
        return [e for e in events if e.event_id in new], dict(row[1] or ())

    async def _creators(
        self, conn: asyncpg.Connection, creators: list[uuid.UUID]
    ) -> dict[uuid.UUID, str]:
        if not creators:
            return {}
        row = await conn.fetchrow(
            f"WITH {_LOCK_CREATORS.format(1)}"
            " SELECT array_agg(row(creator_id, timezone)) FROM locked",
            creators,
        )
        assert row is not None
        return dict(row[0] or ())

    async def _load(
        self,
        conn: asyncpg.Connection,
        events: Sequence[StoredEvent],
        changes: _Changes,
        zones: dict[uuid.UUID, str],
    ) -> None:
        """Reads the fans the events change (those not held already) and their
        conversations' waits for a reply, in one statement (after the creators' locks: it sees
        what the batches before this one wrote)."""
        fan_keys = {
            key for e in events if (key := _fan_key(e)) is not None and key not in changes.fans
        }
        wait_keys = set()
        for e in events:
            conversation_of = _CONVERSATION_OF.get(type(e.message))
            if conversation_of is not None and e.creator_id is not None:
                conversation = _uuid(conversation_of(e.message))
                if conversation is not None:
                    wait_keys.add((e.creator_id, conversation))
        if not fan_keys and not wait_keys:
            return
        # One result: the fans' rows, then the waits' (`conversation_id`, `since` in the
        # fans' second and third columns, the marker column true).
        rows = await conn.fetch(
            f"SELECT false, {', '.join(FAN_COLUMNS)} FROM {S}.fans"
            " WHERE (creator_id, fan_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))"
            f" UNION ALL SELECT true, creator_id, conversation_id, since{_WAIT_PADDING}"
            f" FROM {S}.open_waits WHERE (creator_id, conversation_id) IN"
            " (SELECT * FROM unnest($3::uuid[], $4::uuid[]))",
            [k[0] for k in fan_keys],
            [k[1] for k in fan_keys],
            [k[0] for k in wait_keys],
            [k[1] for k in wait_keys],
        )
        for row in rows:
            if row[0]:
                key = (row[1], row[2])
                changes.loaded_waits.add(key)
                changes.waits[key] = row[3]
                continue
            fan = FanState(*row[1:])
            if fan.last_active_at is not None:
                local = fan.last_active_at.astimezone(zone(zones.get(fan.creator_id, "UTC")))
                fan.active_day = local.date()
                fan.counted_day = None if fan.deleted else fan.active_day
            changes.fans[(fan.creator_id, fan.fan_id)] = fan

    # -- applying -----------------------------------------------------------------------------

    def _apply_one(self, event: StoredEvent, zones: dict[uuid.UUID, str], c: _Changes) -> None:
        creator = event.creator_id
        assert creator is not None
        local = event.occurred_at.astimezone(zone(zones.get(creator, "UTC")))
        hour = local.replace(minute=0, second=0, microsecond=0, tzinfo=None)
        at = _At(
            event,
            creator,
            local.date(),
            c.daily[(creator, local.date())],
            c.hourly[(creator, hour)],
        )
        apply = self._appliers.get(type(event.message))
        if apply is not None:
            apply(event.message, at, c)
        elif event.event_type.startswith(facts.CAMPAIGNS_PREFIX) and event.aggregate_id:
            self._campaign_event(event, creator, c)
        c.event_counts[(creator, at.day, event.event_type, "n")] += 1
        if at.amount:
            c.event_counts[(creator, at.day, event.event_type, "cents")] += at.amount

    def _purchase(self, message: crm_events.PurchaseRecorded, at: _At, c: _Changes) -> None:
        purchase = message.purchase
        at.amount = purchase.amount_cents
        at.count("revenue_cents", at.amount)
        at.count("purchases")
        kind = facts.PURCHASE_COLUMNS.get(purchase.kind)
        if kind is not None:
            at.count(kind, at.amount)
        platform = facts.platform_name(purchase.platform)
        c.platforms[(at.creator, at.day, platform, "cents")] += at.amount
        c.platforms[(at.creator, at.day, platform, "n")] += 1
        when = at.event.occurred_at
        fan = self._fan(c, at.creator, purchase.fan_id, when)
        if fan is not None:
            fan.spend_cents += at.amount
            fan.purchases += 1
            if fan.last_purchase_at is None or when > fan.last_purchase_at:
                fan.last_purchase_at = when
            fan.active_at(when, at.day)
            c.fan_days.add((at.creator, at.day, fan.fan_id))

    def _received(self, message: crm_events.MessageReceived, at: _At, c: _Changes) -> None:
        at.count("messages_in")
        when = at.event.occurred_at
        fan = self._fan(c, at.creator, message.message.fan_id, when)
        if fan is not None:
            fan.messages_in += 1
            fan.active_at(when, at.day)
            c.fan_days.add((at.creator, at.day, fan.fan_id))
        conversation = _uuid(message.message.conversation_id)
        if conversation is not None and c.waits.get((at.creator, conversation)) is None:
            c.waits[(at.creator, conversation)] = when
        message_id = _uuid(message.message.id)
        if message_id is not None and not message.message.read:
            c.unread_added.add((at.creator, message_id))
            c.unread_removed.discard((at.creator, message_id))

    def _sent(self, message: crm_events.MessageSent, at: _At, c: _Changes) -> None:
        at.count("messages_out")
        conversation = _uuid(message.message.conversation_id)
        if conversation is None:
            return
        since = c.waits.get((at.creator, conversation))
        # A mass message is no reply: the fan still waits for one.
        automated = message.message.sender_kind == crm_pb2.SENDER_KIND_AUTOMATION
        if since is not None and not automated:
            seconds = max(0.0, (at.event.occurred_at - since).total_seconds())
            c.responses[(at.creator, at.day, facts.response_bucket(seconds))] += 1
            c.waits[(at.creator, conversation)] = None

    def _read(self, message: crm_events.MessageRead, at: _At, c: _Changes) -> None:
        for raw in message.message_ids:
            message_id = _uuid(raw)
            if message_id is not None:
                c.unread_removed.add((at.creator, message_id))
                c.unread_added.discard((at.creator, message_id))

    def _fan_deleted(self, message: crm_events.FanDeleted, at: _At, c: _Changes) -> None:
        fan = self._fan(c, at.creator, message.fan_id, at.event.occurred_at, create=False)
        if fan is not None and not fan.deleted:
            fan.deleted = True
            c.creator_counts[at.creator]["fans_total"] -= 1
            if fan.state in SUBSCRIBED:
                c.creator_counts[at.creator]["subscribers"] -= 1

    def _suggestion_created(
        self, message: ai_events.SuggestionCreated, at: _At, c: _Changes
    ) -> None:
        if message.suggestion.status == ai_pb2.SUGGESTION_STATUS_SUGGESTED:
            at.count("ai_shown")

    def _suggestion_resolved(
        self, message: ai_events.SuggestionResolved, at: _At, c: _Changes
    ) -> None:
        column = RESOLUTION_COLUMNS.get(message.outcome)
        if column is not None:
            at.count(column)

    def _attributed(self, message: ai_events.RevenueAttributed, at: _At, c: _Changes) -> None:
        at.amount = message.amount_cents
        at.count("ai_attributed_cents", at.amount)

    def _needs_attention(
        self, message: of_events.AccountNeedsAttention, at: _At, c: _Changes
    ) -> None:
        reason = facts.ATTENTION_REASONS.get(message.reason, "unspecified")
        c.accounts[(at.creator, "onlyfans")] = (True, reason, message.message, at.event.occurred_at)

    def _connected(self, message: of_events.AccountConnected, at: _At, c: _Changes) -> None:
        c.accounts[(at.creator, "onlyfans")] = (False, "", "", at.event.occurred_at)

    def _profile(self, message: auth_events.ProfileUpdated, at: _At, c: _Changes) -> None:
        if valid_timezone(message.timezone):
            c.timezones[at.creator] = message.timezone

    def _fan(
        self,
        c: _Changes,
        creator: uuid.UUID,
        raw_fan_id: str,
        at: datetime,
        *,
        create: bool = True,
    ) -> FanState | None:
        fan_id = _uuid(raw_fan_id)
        if fan_id is None:
            return None
        key = (creator, fan_id)
        fan = c.fans.get(key)
        if fan is None:
            if not create:
                return None
            fan = FanState(creator_id=creator, fan_id=fan_id, first_seen_at=at)
            c.fans[key] = fan
            c.creator_counts[creator]["fans_total"] += 1
        c.dirty_fans.add(key)
        return fan

    def _fan_changed(
        self, message: crm_events.FanCreated | crm_events.FanUpdated, at: _At, c: _Changes
    ) -> None:
        creator, count, event = at.creator, at.count, at.event
        known = (creator, _uuid(message.fan.id)) in c.fans
        fan = self._fan(c, creator, message.fan.id, event.occurred_at)
        if fan is None:
            return
        if isinstance(message, crm_events.FanCreated) and not known:
            count("new_fans")
        if fan.deleted:
            fan.deleted = False
            c.creator_counts[creator]["fans_total"] += 1
            if fan.state in SUBSCRIBED:
                c.creator_counts[creator]["subscribers"] += 1
        fan.display_name = message.fan.display_name
        fan.platform = facts.platform_name(message.fan.platform)
        fan.expires_at = facts.timestamp(message.fan.subscription_expires_at)
        new_state = facts.SUBSCRIPTION_STATES.get(message.fan.subscription_state, fan.state)
        old_state = fan.state
        if new_state != old_state:
            if old_state in SUBSCRIBED and new_state not in SUBSCRIBED:
                c.creator_counts[creator]["subscribers"] -= 1
                if new_state == "expired":
                    count("expired_fans")
                    fan.lapsed = True
            elif new_state in SUBSCRIBED and old_state not in SUBSCRIBED:
                c.creator_counts[creator]["subscribers"] += 1
                if fan.lapsed:
                    count("returning_fans")
                    fan.lapsed = False
            fan.state = new_state

    def _campaign_event(self, event: StoredEvent, creator: uuid.UUID, c: _Changes) -> None:
        last_word = event.event_type.rsplit(".", 1)[-1]
        running: bool | None = None
        if last_word in CAMPAIGN_RUNNING:
            running = True
        elif last_word in CAMPAIGN_OVER:
            running = False
        key = (creator, event.aggregate_id)
        previous = c.campaigns.get(key)
        if running is None and previous is not None:
            running = previous[0]
        c.campaigns[key] = (running, event.event_type, event.occurred_at)

    # -- writing ------------------------------------------------------------------------------

    async def _write(self, conn: asyncpg.Connection, c: _Changes, *, fans: bool = True) -> None:
        """Every table the batch changed, in one statement (one round trip)."""
        w = _Writes()
        _count_rows(w, "daily_rollups", "day", "date", c.daily)
        _count_rows(w, "hourly_rollups", "hour", "timestamp", c.hourly)
        if c.platforms:
            keys = list({k[:3] for k in c.platforms})
            w.add(
                f"INSERT INTO {S}.platform_revenue AS t"
                " (creator_id, day, platform, revenue_cents, purchases)"
                " SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::int8[], $5::int8[])"
                " ON CONFLICT (creator_id, day, platform) DO UPDATE SET"
                " revenue_cents = t.revenue_cents + excluded.revenue_cents,"
                " purchases = t.purchases + excluded.purchases",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [c.platforms[(*k, "cents")] for k in keys],
                [c.platforms[(*k, "n")] for k in keys],
            )
        if c.responses:
            buckets = list(c.responses)
            w.add(
                f"INSERT INTO {S}.response_buckets AS t (creator_id, day, bucket, replies)"
                " SELECT * FROM unnest($1::uuid[], $2::date[], $3::int2[], $4::int8[])"
                " ON CONFLICT (creator_id, day, bucket) DO UPDATE SET"
                " replies = t.replies + excluded.replies",
                [k[0] for k in buckets],
                [k[1] for k in buckets],
                [k[2] for k in buckets],
                [c.responses[k] for k in buckets],
            )
        if c.event_counts:
            types = list({k[:3] for k in c.event_counts})
            w.add(
                f"INSERT INTO {S}.event_counts AS t (creator_id, day, event_type, events,"
                " amount_cents)"
                " SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::int8[], $5::int8[])"
                " ON CONFLICT (creator_id, day, event_type) DO UPDATE SET"
                " events = t.events + excluded.events,"
                " amount_cents = t.amount_cents + excluded.amount_cents",
                [k[0] for k in types],
                [k[1] for k in types],
                [k[2] for k in types],
                [c.event_counts[(*k, "n")] for k in types],
                [c.event_counts[(*k, "cents")] for k in types],
            )
        if c.fan_days:
            days = list(c.fan_days)
            w.add(
                f"INSERT INTO {S}.fan_days (creator_id, day, fan_id)"
                " SELECT * FROM unnest($1::uuid[], $2::date[], $3::uuid[]) ON CONFLICT DO NOTHING",
                [k[0] for k in days],
                [k[1] for k in days],
                [k[2] for k in days],
            )
        if fans:
            self._write_fans(w, c)
        self._write_creators(w, c)
        self._write_waits(w, c)
        self._write_unread(w, c)
        self._write_accounts_and_campaigns(w, c)
        await w.run(conn)

    def _write_fans(self, w: _Writes, c: _Changes) -> None:
        if not c.dirty_fans:
            return
        fans = [c.fans[k] for k in c.dirty_fans]
        types = (
            "uuid", "uuid", "timestamptz", "text", "text", "text", "timestamptz",
            "timestamptz", "timestamptz", "int8", "int8", "int8", "bool", "bool",
        )  # fmt: skip
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, start=1))
        updates = ", ".join(f"{name} = excluded.{name}" for name in FAN_COLUMNS[2:])
        w.add(
            f"INSERT INTO {S}.fans ({', '.join(FAN_COLUMNS)}) SELECT * FROM unnest({arrays})"
            f" ON CONFLICT (creator_id, fan_id) DO UPDATE SET {updates}",
            *([getattr(fan, name) for fan in fans] for name in FAN_COLUMNS),
        )
        # Each fan counted on the day they were last active, so "active since" is a sum.
        moves: Counter[tuple[uuid.UUID, date]] = Counter()
        for fan in fans:
            day = None if fan.deleted else fan.active_day
            if day != fan.counted_day:
                if fan.counted_day is not None:
                    moves[(fan.creator_id, fan.counted_day)] -= 1
                if day is not None:
                    moves[(fan.creator_id, day)] += 1
                fan.counted_day = day
        moved = [key for key, delta in moves.items() if delta]
        if moved:
            w.add(
                f"INSERT INTO {S}.active_days AS t (creator_id, day, fans)"
                " SELECT * FROM unnest($1::uuid[], $2::date[], $3::int8[])"
                " ON CONFLICT (creator_id, day) DO UPDATE SET fans = t.fans + excluded.fans",
                [k[0] for k in moved],
                [k[1] for k in moved],
                [moves[k] for k in moved],
            )

    def _write_creators(self, w: _Writes, c: _Changes) -> None:
        creators = list(set(c.creator_counts) | set(c.timezones))
        if not creators:
            return
        w.add(
            f"UPDATE {S}.creators AS t SET fans_total = t.fans_total + d.fans,"
            " subscribers = t.subscribers + d.subscribers,"
            " timezone = coalesce(d.timezone, t.timezone), updated_at = now()"
            " FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::text[])"
            " AS d(creator_id, fans, subscribers, timezone) WHERE t.creator_id = d.creator_id",
            creators,
            [c.creator_counts[k]["fans_total"] for k in creators],
            [c.creator_counts[k]["subscribers"] for k in creators],
            [c.timezones.get(k) for k in creators],
        )

    def _write_waits(self, w: _Writes, c: _Changes) -> None:
        opened = [k for k, since in c.waits.items() if since is not None]
        closed = [k for k, since in c.waits.items() if since is None and k in c.loaded_waits]
        if opened:
            w.add(
                f"INSERT INTO {S}.open_waits (creator_id, conversation_id, since)"
                " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[])"
                " ON CONFLICT (creator_id, conversation_id) DO UPDATE SET since = excluded.since",
                [k[0] for k in opened],
                [k[1] for k in opened],
                [c.waits[k] for k in opened],
            )
        if closed:
            w.add(
                f"DELETE FROM {S}.open_waits WHERE (creator_id, conversation_id) IN"
                " (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
                [k[0] for k in closed],
                [k[1] for k in closed],
            )

    def _write_unread(self, w: _Writes, c: _Changes) -> None:
        if c.unread_added:
            added = list(c.unread_added)
            w.add(
                f"INSERT INTO {S}.unread_messages (creator_id, message_id)"
                " SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING",
                [k[0] for k in added],
                [k[1] for k in added],
            )
        if c.unread_removed:
            removed = list(c.unread_removed)
            w.add(
                f"DELETE FROM {S}.unread_messages WHERE (creator_id, message_id) IN"
                " (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
                [k[0] for k in removed],
                [k[1] for k in removed],
            )

    def _write_accounts_and_campaigns(self, w: _Writes, c: _Changes) -> None:
        if c.accounts:
            accounts = list(c.accounts.items())
            w.add(
                f"INSERT INTO {S}.accounts AS t"
                " (creator_id, platform, needs_attention, reason, message, since)"
                " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::text[], $5::text[],"
                " $6::timestamptz[]) ON CONFLICT (creator_id, platform) DO UPDATE SET"
                " needs_attention = excluded.needs_attention, reason = excluded.reason,"
                " message = excluded.message, since = excluded.since",
                [k[0] for k, _ in accounts],
                [k[1] for k, _ in accounts],
                *([v[i] for _, v in accounts] for i in range(4)),
            )
        # A campaign event that neither starts nor ends one leaves `active` as it was.
        for known in (True, False):
            rows = [(k, v) for k, v in c.campaigns.items() if (v[0] is not None) == known]
            if not rows:
                continue
            active = "excluded.active" if known else "t.active"
            w.add(
                f"INSERT INTO {S}.campaigns AS t"
                " (creator_id, campaign_id, active, last_event_type, updated_at)"
                " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::text[],"
                " $5::timestamptz[]) ON CONFLICT (creator_id, campaign_id) DO UPDATE SET"
                f" active = {active}, last_event_type = excluded.last_event_type,"
                " updated_at = excluded.updated_at",
                [k[0] for k, _ in rows],
                [k[1] for k, _ in rows],
                [bool(v[0]) for _, v in rows],
                [v[1] for _, v in rows],
                [v[2] for _, v in rows],
            )

    # -- rebuilding ---------------------------------------------------------------------------

    async def rebuild(
        self, conn: asyncpg.Connection, *, creator_id: uuid.UUID | None = None, chunk: int = 2000
    ) -> int:
        """Empties the derived tables (of one creator, or all) and applies the stored events
        again in the order they were stored; answers how many were read. Timezones first: the
        rollups use each creator's latest one."""
        where, args = ("WHERE creator_id = $1", [creator_id]) if creator_id else ("", [])
        if creator_id is None:
            tables = ", ".join(f"{S}.{t.name}" for t in DERIVED_TABLES)
            await conn.execute(f"TRUNCATE {tables}")
        else:
            for table in DERIVED_TABLES:
                if table.name != "creators":
                    await conn.execute(f"DELETE FROM {S}.{table.name} {where}", *args)
            await conn.execute(
                f"UPDATE {S}.creators SET fans_total = 0, subscribers = 0 {where}", *args
            )
        await self._latest_timezones(conn, where, args)
        applied = 0
        after = 0
        # A fan changes many times over a rebuild: each is written once, when flushed.
        fans = _FanStates()
        while True:
            condition = "seq > $1" + (" AND creator_id = $2" if creator_id else "")
            rows = await conn.fetch(
                f"SELECT seq, {STORED_COLUMNS} FROM {S}.events WHERE {condition}"
                " ORDER BY seq LIMIT " + str(chunk),
                after,
                *args,
            )
            if not rows:
                break
            after = rows[-1][0]
            await self.apply(
                conn, [facts.from_row(row[1:]) for row in rows], store=False, fans=fans
            )
            if len(fans.dirty) >= FLUSH_FANS:
                await self._flush_fans(conn, fans)
            applied += len(rows)
        await self._flush_fans(conn, fans)
        return applied

    async def _flush_fans(self, conn: asyncpg.Connection, fans: _FanStates) -> None:
        """Writes the fans changed since the last flush, and forgets them."""
        changes = _Changes()
        changes.fans, changes.dirty_fans = fans.states, fans.dirty
        w = _Writes()
        self._write_fans(w, changes)
        await w.run(conn)
        fans.states.clear()
        fans.dirty.clear()

    async def _latest_timezones(
        self, conn: asyncpg.Connection, where: str, args: list[Any]
    ) -> None:
        rows = await conn.fetch(
            f"SELECT creator_id, message_type, payload FROM {S}.events"
            " WHERE event_type = $1 AND ($2::uuid IS NULL OR creator_id = $2) ORDER BY seq",
            facts.PROFILE_UPDATED,
            args[0] if args else None,
        )
        latest: dict[uuid.UUID, str] = {}
        for creator, message_type, payload in rows:
            profile = facts.decode(facts.PROFILE_UPDATED, message_type, bytes(payload))
            if isinstance(profile, auth_events.ProfileUpdated) and valid_timezone(profile.timezone):
                latest[creator] = profile.timezone
        creators = sorted(latest)
        if creators:
            await conn.execute(
                f"INSERT INTO {S}.creators (creator_id, timezone)"
                " SELECT * FROM unnest($1::uuid[], $2::text[])"
                " ON CONFLICT (creator_id) DO UPDATE SET timezone = excluded.timezone",
                creators,
                [latest[k] for k in creators],
            )


# The fan of the types that change one.
_FAN_OF: dict[type[Any], Callable[[Any], str]] = {
    crm_events.PurchaseRecorded: lambda m: m.purchase.fan_id,
    crm_events.MessageReceived: lambda m: m.message.fan_id,
    crm_events.FanCreated: lambda m: m.fan.id,
    crm_events.FanUpdated: lambda m: m.fan.id,
    crm_events.FanDeleted: lambda m: m.fan_id,
}
# The conversation of the types that open or close a wait for a reply.
_CONVERSATION_OF: dict[type[Any], Callable[[Any], str]] = {
    crm_events.MessageReceived: lambda m: m.message.conversation_id,
    crm_events.MessageSent: lambda m: m.message.conversation_id,
}


def _fan_key(event: StoredEvent) -> tuple[uuid.UUID, uuid.UUID] | None:
    fan_of = _FAN_OF.get(type(event.message))
    if fan_of is None or event.creator_id is None:
        return None
    fan_id = _uuid(fan_of(event.message))
    return None if fan_id is None else (event.creator_id, fan_id)


class _Writes:
    """Statements run together as the data-modifying parts of one `WITH` (one round trip).
    Each is written with its own `$1..$n`; they touch different rows, as PostgreSQL requires."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._args: list[Any] = []

    def add(self, statement: str, *args: Any) -> None:
        offset = len(self._args)
        self._parts.append(_PARAMETER.sub(lambda m: f"${int(m.group(1)) + offset}", statement))
        self._args.extend(args)

    async def run(self, conn: asyncpg.Connection) -> None:
        if self._parts:
            parts = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(self._parts))
            await conn.execute(f"WITH {parts} SELECT 1", *self._args)


_PARAMETER = re.compile(r"\$(\d+)")


def _count_rows(
    w: _Writes,
    table: str,
    key: str,
    key_type: str,
    deltas: dict[tuple[uuid.UUID, Any], Counter[str]],
) -> None:
    rows = [(k, v) for k, v in deltas.items() if any(v.values())]
    if not rows:
        return
    arrays = ", ".join(f"${i}::int8[]" for i in range(3, 3 + len(ROLLUP_COUNTS)))
    updates = ", ".join(f"{name} = t.{name} + excluded.{name}" for name in ROLLUP_COUNTS)
    w.add(
        f"INSERT INTO {S}.{table} AS t (creator_id, {key}, {', '.join(ROLLUP_COUNTS)})"
        f" SELECT * FROM unnest($1::uuid[], $2::{key_type}[], {arrays})"
        f" ON CONFLICT (creator_id, {key}) DO UPDATE SET {updates}",
        [k[0] for k, _ in rows],
        [k[1] for k, _ in rows],
        *([v[name] for _, v in rows] for name in ROLLUP_COUNTS),
    )
