"""The real-time inbox behind `WatchInbox`.

Changes write rows to `crm.inbox_events` in their own transaction and `NOTIFY crm_inbox` with
`<creator>:<id>` (delivered at commit). One `InboxHub` per process keeps ONE connection
listening; on a notification for a creator somebody watches, it reads that creator's new rows
once and puts them on each watcher's queue. A watcher resuming from an event id first reads what
it missed from the table (bounded by retention), then follows its queue; ids it has already sent
are skipped, so the switch from replay to live has neither gap nor duplicate. A watcher too slow
for its queue falls back to reading the table from where it was.

`InboxPruner` keeps the table bounded: per creator the last `keep_events` events of the last
`retention`, remembering the highest id it pruned, so a watcher resuming from before it is told
to reload (`inbox.reset`) instead of silently missing events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.crm.v1 import crm_pb2
from huntaze_crm import convert
from huntaze_crm.reads import CrmReader, InboxRecord
from huntaze_crm.repository import INBOX_CHANNEL
from huntaze_crm.service import (
    ACCOUNT_CONNECTED,
    ACCOUNT_NEEDS_ATTENTION,
    AI_HANDOFF_REQUESTED,
    AI_SUGGESTION_CREATED,
    AI_SUGGESTION_RESOLVED,
    CONVERSATION_UPDATED,
    FAN_UPDATED,
    INBOX_RESET,
    MESSAGE_READ,
    MESSAGE_RECEIVED,
    MESSAGE_STATUS_CHANGED,
)
from huntaze_kit.db import libpq_url
from huntaze_kit.logging import get_logger

log = get_logger(__name__)

FETCH_BATCH = 500
QUEUE_SIZE = 1000
START_TIMEOUT = 30.0

# The `InboxEvent` field that carries the payload of each type.
_PAYLOADS: dict[str, str] = {
    MESSAGE_RECEIVED: "message",
    MESSAGE_STATUS_CHANGED: "message",
    MESSAGE_READ: "messages_read",
    FAN_UPDATED: "fan",
    CONVERSATION_UPDATED: "conversation",
    AI_SUGGESTION_CREATED: "ai",
    AI_SUGGESTION_RESOLVED: "ai",
    AI_HANDOFF_REQUESTED: "ai",
    ACCOUNT_NEEDS_ATTENTION: "account",
    ACCOUNT_CONNECTED: "account",
}


def to_proto(row: InboxRecord) -> crm_pb2.InboxEvent:
    if row.created_at is None:  # an `inbox.reset`, made here, never stored
        return crm_pb2.InboxEvent(id=row.id, type=row.type, reset=crm_pb2.InboxReset())
    event = crm_pb2.InboxEvent(
        id=row.id, type=row.type, created_at=convert.timestamp(row.created_at)
    )
    field_name = _PAYLOADS.get(row.type)
    if field_name is not None:
        getattr(event, field_name).MergeFromString(row.payload)
    return event


def to_batch(rows: Sequence[InboxRecord]) -> crm_pb2.InboxEventBatch:
    return crm_pb2.InboxEventBatch(events=[to_proto(row) for row in rows])


@dataclass(eq=False)
class _Watcher:
    """The rows handed to one watcher and not taken yet, a fetched batch per entry (a burst
    costs one wake-up, not one per event)."""

    batches: collections.deque[list[InboxRecord]] = field(default_factory=collections.deque)
    queued: int = 0
    overflowed: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, rows: list[InboxRecord]) -> None:
        if self.queued + len(rows) > QUEUE_SIZE:
            self.overflowed = True
        else:
            self.batches.append(rows)
            self.queued += len(rows)
        self.ready.set()

    def take(self) -> list[InboxRecord]:
        """Every row offered since the last take, in order."""
        batches, self.batches, self.queued = self.batches, collections.deque(), 0
        self.ready.clear()
        if len(batches) == 1:
            return batches[0]
        return [row for batch in batches for row in batch]

    def drop(self) -> None:
        self.batches.clear()
        self.queued = 0
        self.overflowed = False


@dataclass(eq=False)
class _CreatorChannel:
    """The watchers of one creator and the last event id handed to them."""

    creator_id: uuid.UUID
    last_id: int
    watchers: set[_Watcher] = field(default_factory=set)
    dirty: bool = False
    draining: asyncio.Task[None] | None = None


class InboxHub:
    def __init__(
        self,
        *,
        database_url: str,
        reader: CrmReader,
        name: str = "crm-inbox",
    ) -> None:
        self._dsn = libpq_url(database_url)
        self._reader = reader
        self._name = name
        self._channels: dict[uuid.UUID, _CreatorChannel] = {}
        self._join_lock = asyncio.Lock()
        self._listening = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def watcher_count(self) -> int:
        return sum(len(channel.watchers) for channel in self._channels.values())

    async def start(self) -> None:
        """Starts listening and returns once the listener is connected."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._listen_forever(), name=f"{self._name}-listen")
        await asyncio.wait_for(self._listening.wait(), START_TIMEOUT)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for channel in list(self._channels.values()):
            if channel.draining is not None:
                channel.draining.cancel()

    # -- watching -------------------------------------------------------------------------------

    async def watch(
        self, creator_id: uuid.UUID, after_id: int, *, resume: bool = False
    ) -> AsyncIterator[crm_pb2.InboxEvent]:
        """The creator's inbox events after `after_id`, then live ones, one at a time (see
        `watch_batches`)."""
        async for rows in self.watch_batches(creator_id, after_id, resume=resume):
            for row in rows:
                yield to_proto(row)

    async def watch_batches(
        self, creator_id: uuid.UUID, after_id: int, *, resume: bool = False
    ) -> AsyncIterator[list[InboxRecord]]:
        """The creator's inbox events after `after_id`, then live ones, in id order, as many
        at a time as there are (an `inbox.reset` row first when some were pruned). A client
        resuming (`resume`, or any `after_id` above 0) gets every kept event after it, 0
        included; one that is not, only what happens from now on."""
        watcher = _Watcher()
        channel = await self._join(creator_id, watcher)
        try:
            if resume or after_id > 0:
                pruned = await self._reader.inbox_pruned_through(creator_id=creator_id)
                cursor = after_id
                if after_id < pruned:
                    yield [InboxRecord(id=pruned, type=INBOX_RESET, payload=b"", created_at=None)]
                    cursor = pruned
            else:
                cursor = channel.last_id
            async for rows in self._replay(creator_id, cursor):
                cursor = rows[-1].id
                yield rows
            while not self._stopping.is_set():
                if watcher.overflowed:
                    watcher.drop()
                    async for rows in self._replay(creator_id, cursor):
                        cursor = rows[-1].id
                        yield rows
                    continue
                await watcher.ready.wait()
                if watcher.overflowed:
                    continue
                rows = [row for row in watcher.take() if row.id > cursor]
                if rows:
                    cursor = rows[-1].id
                    yield rows
        finally:
            await self._leave(channel, watcher)

    async def _replay(
        self, creator_id: uuid.UUID, after_id: int
    ) -> AsyncIterator[list[InboxRecord]]:
        cursor = after_id
        while True:
            rows = await self._fetch(creator_id, cursor)
            if rows:
                cursor = rows[-1].id
                yield rows
            if len(rows) < FETCH_BATCH:
                return

    async def _fetch(self, creator_id: uuid.UUID, after_id: int) -> list[InboxRecord]:
        return await self._reader.inbox_events_after(
            creator_id=creator_id, after_id=after_id, limit=FETCH_BATCH
        )

    async def _join(self, creator_id: uuid.UUID, watcher: _Watcher) -> _CreatorChannel:
        async with self._join_lock:
            channel = self._channels.get(creator_id)
            if channel is None:
                latest = await self._reader.latest_inbox_event_id(creator_id=creator_id)
                channel = _CreatorChannel(creator_id=creator_id, last_id=latest)
                self._channels[creator_id] = channel
            channel.watchers.add(watcher)
            return channel

    async def _leave(self, channel: _CreatorChannel, watcher: _Watcher) -> None:
        async with self._join_lock:
            channel.watchers.discard(watcher)
            if not channel.watchers and self._channels.get(channel.creator_id) is channel:
                del self._channels[channel.creator_id]
                if channel.draining is not None:
                    channel.draining.cancel()

    # -- fan-out --------------------------------------------------------------------------------

    def _wake(self, channel: _CreatorChannel) -> None:
        channel.dirty = True
        if channel.draining is None or channel.draining.done():
            channel.draining = asyncio.create_task(self._drain(channel))

    async def _drain(self, channel: _CreatorChannel) -> None:
        """Reads the creator's new events once and offers them to every watcher."""
        while channel.dirty and not self._stopping.is_set():
            channel.dirty = False
            try:
                while True:
                    rows = await self._fetch(channel.creator_id, channel.last_id)
                    if rows:
                        for watcher in list(channel.watchers):
                            watcher.offer(rows)
                        channel.last_id = rows[-1].id
                    if len(rows) < FETCH_BATCH:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("inbox.fetch_failed", error=repr(err))
                channel.dirty = True
                await asyncio.sleep(0.5)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        creator, _, _ = payload.partition(":")
        try:
            creator_id = uuid.UUID(creator)
        except ValueError:
            return
        channel = self._channels.get(creator_id)
        if channel is not None:
            self._wake(channel)

    async def _listen_forever(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": f"{self._name}-listen"}
                )
            except (OSError, TimeoutError, asyncpg.PostgresError) as err:
                log.warning("inbox.listen_connect_failed", error=repr(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                await conn.add_listener(INBOX_CHANNEL, self._on_notify)
                delay = 0.2
                self._listening.set()
                for channel in list(self._channels.values()):
                    self._wake(channel)  # catch up with what happened while not listening
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 15.0)
                    if not lost.is_set():
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 5.0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                log.warning("inbox.listen_lost", error=repr(err))
            finally:
                self._listening.clear()
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)
            if not self._stopping.is_set():
                await asyncio.sleep(delay)


_PRUNE = text(
    """
    WITH ranked AS (
        SELECT id, creator_id, created_at,
               row_number() OVER (PARTITION BY creator_id ORDER BY id DESC) AS position
        FROM crm.inbox_events
    ),
    doomed AS (
        SELECT id FROM ranked
        WHERE position > :keep OR created_at < now() - make_interval(secs => :age)
    ),
    deleted AS (
        DELETE FROM crm.inbox_events AS e USING doomed WHERE e.id = doomed.id
        RETURNING e.creator_id, e.id
    ),
    marked AS (
        INSERT INTO crm.inbox_retention AS r (creator_id, pruned_through_id)
        SELECT creator_id, max(id) FROM deleted GROUP BY creator_id
        ON CONFLICT (creator_id) DO UPDATE
            SET pruned_through_id = greatest(r.pruned_through_id, excluded.pruned_through_id)
        RETURNING 1
    )
    SELECT count(*) FROM deleted
    """
)


class InboxPruner:
    """Deletes inbox events beyond the retention, every `interval` seconds."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        retention: timedelta,
        keep_events: int,
        interval: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self._retention = retention
        self._keep = keep_events
        self._interval = interval
        self._stopping = asyncio.Event()

    async def prune(self) -> int:
        """One pass (a maintenance job over every creator's inbox); returns rows deleted."""
        async with self._sessions() as session:
            deleted = (
                await session.execute(
                    _PRUNE, {"keep": self._keep, "age": self._retention.total_seconds()}
                )
            ).scalar_one()
            await session.commit()
        return int(deleted)

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                deleted = await self.prune()
                if deleted:
                    log.info("inbox.pruned", deleted=deleted)
            except Exception as err:
                log.warning("inbox.prune_failed", error=repr(err))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    def stop(self) -> None:
        self._stopping.set()
