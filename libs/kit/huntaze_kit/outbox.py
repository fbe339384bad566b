"""Transactional outbox: events are rows written in the same transaction as the change they
describe, and a relay publishes them to JetStream afterwards.

Writing side (a service's repository or use case, inside its unit of work)::

    await record_event(
        session, schema="auth", subject="auth.user.registered", event=UserRegistered(...),
        aggregate_type="user", aggregate_id=str(user.id), creator_id=str(user.id),
    )
    await session.commit()  # the service layer commits: the event exists iff the change does

Publishing side (one task in the service process, any number of replicas)::

    relay = OutboxRelay(database_url=settings.database_url, schema="auth", nats_url=nc)
    task = asyncio.create_task(relay.run())
    ...
    await relay.stop()

Guarantees:

* An event recorded in a transaction that rolls back is never published.
* Every committed event is published at least once: the relay claims rows with
  `FOR UPDATE SKIP LOCKED`, publishes them, waits for each PubAck and only then marks them, all
  in the claim's transaction. A crash anywhere leaves the rows unpublished; the next claim
  publishes them again and JetStream drops the copy by `Nats-Msg-Id` (the event id) within the
  stream's duplicate window, and consumers drop any later copy by their inbox.
* Events of one aggregate are published in `seq` order, also with several relays: a row is held
  back while an earlier row of its aggregate is unpublished, and rows of one aggregate inside a
  batch are published one wave after another. A failed row holds back the rest of its aggregate
  until it is published. Writers must serialise changes to one aggregate (they normally do, by
  locking or versioning its row), so that seq order is commit order within an aggregate.

The tables live in each service's schema; `create_outbox_tables(schema)` in a migration creates
them, and `outbox_table(metadata)` / `inbox_table(metadata)` describe them to SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateIndex, CreateTable, SetColumnComment, SetTableComment
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import Executable

from huntaze_kit.db import libpq_url
from huntaze_kit.logging import current_request_id, get_logger
from huntaze_kit.streams import Headers, connect_nats

log = get_logger(__name__)

OUTBOX_TABLE = "outbox"
INBOX_TABLE = "inbox"

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_MAX_ERROR_LENGTH = 2000


def _checked_schema(schema: str) -> str:
    """Schema names end up in SQL text and channel names: plain lower-case identifiers only."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}: use [a-z_][a-z0-9_]*")
    return schema


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel the outbox of `schema` signals on after each insert."""
    return f"{_checked_schema(schema)}_outbox"


def new_event_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so event ids index well and sort roughly by creation."""
    millis = time.time_ns() // 1_000_000
    value = (millis & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


# ---------------------------------------------------------------------------------------------
# Tables: the one definition; migrations and queries both derive from it.
# ---------------------------------------------------------------------------------------------

_UNPUBLISHED = text("published_at IS NULL")
_PUBLISHED = text("published_at IS NOT NULL")


def outbox_table(metadata: MetaData) -> Table:
    """The `outbox` table in `metadata`'s schema: one row per event, id = event id."""
    return Table(
        OUTBOX_TABLE,
        metadata,
        Column("id", Uuid(as_uuid=True), nullable=False, comment="The event id."),
        Column("seq", BigInteger, Identity(always=True), nullable=False),
        Column("subject", Text, nullable=False),
        Column("message_type", Text, nullable=False, comment="Full protobuf message name."),
        Column("aggregate_type", Text, nullable=False),
        Column("aggregate_id", Text, nullable=False),
        Column("creator_id", Text, nullable=True),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column(
            "next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()
        ),
        Column("last_error", Text, nullable=True),
        PrimaryKeyConstraint("id", name="outbox_pkey"),
        UniqueConstraint("seq", name="outbox_seq_key"),
        Index("outbox_due_idx", "next_attempt_at", "seq", postgresql_where=_UNPUBLISHED),
        Index(
            "outbox_aggregate_pending_idx",
            "aggregate_type",
            "aggregate_id",
            "seq",
            postgresql_where=_UNPUBLISHED,
        ),
        Index("outbox_published_at_idx", "published_at", postgresql_where=_PUBLISHED),
        comment="Transactional outbox: events waiting for (or kept after) publication.",
    )


def inbox_table(metadata: MetaData) -> Table:
    """The `inbox` table in `metadata`'s schema: which consumer already applied which event."""
    return Table(
        INBOX_TABLE,
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", Uuid(as_uuid=True), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id", name="inbox_pkey"),
        Index("inbox_processed_at_idx", "processed_at"),
        comment="Idempotent consumers: one row per (consumer, event) applied.",
    )


@functools.cache
def schema_tables(schema: str) -> tuple[Table, Table]:
    """`(outbox, inbox)` of `schema`, built once per process and shared by all queries."""
    metadata = MetaData(schema=_checked_schema(schema))
    return outbox_table(metadata), inbox_table(metadata)


def _notify_function(schema: str) -> str:
    return f'"{schema}".outbox_notify'


def outbox_ddl(schema: str) -> list[Executable]:
    """Every statement that creates the outbox and inbox of `schema` (which must exist)."""
    outbox, inbox = schema_tables(schema)
    statements: list[Executable] = []
    for table in (outbox, inbox):
        statements.append(CreateTable(table))
        statements.extend(CreateIndex(index) for index in sorted(table.indexes, key=_index_name))
        # PostgreSQL takes comments as separate statements (autogenerate compares them).
        if table.comment:
            statements.append(SetTableComment(table))
        statements.extend(SetColumnComment(column) for column in table.columns if column.comment)
    channel = notify_channel(schema)
    statements.append(
        text(
            f"CREATE FUNCTION {_notify_function(schema)}() RETURNS trigger "
            "LANGUAGE plpgsql AS $body$ "
            f"BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END "
            "$body$"
        )
    )
    statements.append(
        text(
            f'CREATE TRIGGER outbox_notify AFTER INSERT ON "{schema}".{OUTBOX_TABLE} '
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_notify_function(schema)}()"
        )
    )
    return statements


def drop_outbox_ddl(schema: str) -> list[Executable]:
    """The statements that remove what `outbox_ddl` created."""
    _checked_schema(schema)
    return [
        text(f'DROP TRIGGER IF EXISTS outbox_notify ON "{schema}".{OUTBOX_TABLE}'),
        text(f"DROP FUNCTION IF EXISTS {_notify_function(schema)}()"),
        text(f'DROP TABLE IF EXISTS "{schema}".{INBOX_TABLE}'),
        text(f'DROP TABLE IF EXISTS "{schema}".{OUTBOX_TABLE}'),
    ]


def _index_name(index: Index) -> str:
    return str(index.name)


def create_outbox_tables(schema: str) -> None:
    """For a service's Alembic migration (`upgrade()`): creates outbox, inbox and the trigger."""
    from alembic import op  # noqa: PLC0415  (only inside a migration)

    for statement in outbox_ddl(schema):
        op.execute(statement)


def drop_outbox_tables(schema: str) -> None:
    """For a service's Alembic migration (`downgrade()`)."""
    from alembic import op  # noqa: PLC0415

    for statement in drop_outbox_ddl(schema):
        op.execute(statement)


# ---------------------------------------------------------------------------------------------
# Writing events
# ---------------------------------------------------------------------------------------------


async def record_event(
    session: AsyncSession,
    *,
    schema: str,
    subject: str,
    event: Message,
    aggregate_type: str,
    aggregate_id: str,
    creator_id: str | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Adds `event` to the outbox of `schema` in the session's transaction; returns its id.

    Never commits: the event becomes visible (and is published) when the caller commits, and
    disappears with a rollback. The current request id travels in the event's headers.
    """
    if not subject or any(ch in subject for ch in " \t\r\n*>"):
        raise ValueError(f"invalid subject {subject!r}")
    for name, value in (("aggregate_type", aggregate_type), ("aggregate_id", aggregate_id)):
        if not value or "\r" in value or "\n" in value:
            raise ValueError(f"invalid {name} {value!r}: it travels in a NATS header")
    if creator_id is not None and ("\r" in creator_id or "\n" in creator_id):
        raise ValueError(f"invalid creator_id {creator_id!r}: it travels in a NATS header")
    identifier = event_id or new_event_id()
    headers: dict[str, str] = {}
    request_id = current_request_id()
    if request_id:
        headers[Headers.REQUEST_ID] = request_id
    await session.execute(
        _insert_statement(schema),
        {
            "id": identifier,
            "subject": subject,
            "message_type": event.DESCRIPTOR.full_name,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "creator_id": creator_id,
            "payload": event.SerializeToString(deterministic=True),
            "headers": headers,
        },
    )
    return identifier


@functools.cache
def _insert_statement(schema: str) -> Insert:
    """One statement object per schema: SQLAlchemy finds its compiled form at once."""
    outbox, _ = schema_tables(schema)
    return insert(outbox)


# ---------------------------------------------------------------------------------------------
# Relay
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One claimed outbox row, ready to publish."""

    id: uuid.UUID
    seq: int
    subject: str
    message_type: str
    aggregate_type: str
    aggregate_id: str
    creator_id: str | None
    payload: bytes
    headers: dict[str, str]
    created_at: datetime
    attempts: int

    @property
    def aggregate_key(self) -> tuple[str, str]:
        return self.aggregate_type, self.aggregate_id

    def nats_headers(self) -> dict[str, str]:
        event_id = str(self.id)
        headers = dict(self.headers)
        headers.update(
            {
                Headers.MSG_ID: event_id,
                Headers.EVENT_ID: event_id,
                Headers.EVENT_TYPE: self.message_type,
                Headers.OCCURRED_AT: self.created_at.isoformat(),
                Headers.AGGREGATE_TYPE: self.aggregate_type,
                Headers.AGGREGATE_ID: self.aggregate_id,
            }
        )
        if self.creator_id:
            headers[Headers.CREATOR_ID] = self.creator_id
        return headers


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim found: rows to publish now, and how many it had to hold back because an
    earlier row of their aggregate is in flight elsewhere."""

    ready: list[OutboxRecord]
    held_back: int


@dataclass(slots=True)
class PublishResult:
    published: list[OutboxRecord] = field(default_factory=list)
    failed: list[tuple[OutboxRecord, str]] = field(default_factory=list)
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class Backlog:
    """Unpublished events of one outbox: how many, and the age in seconds of the oldest."""

    pending: int
    oldest_age: float


def _describe(error: BaseException) -> str:
    message = f"{type(error).__name__}: {error}".replace("\r", " ").replace("\n", " ")
    return message[:_MAX_ERROR_LENGTH]


class OutboxRelay:
    """Publishes the outbox of one schema to JetStream; run one or more per service.

    Wakes on the schema's NOTIFY channel (a dedicated connection, reconnected when lost) and
    polls every `poll_interval` seconds as a safety net. Hooks `_claim`, `_publish` and `_mark`
    are the three steps of a cycle, all inside one transaction.
    """

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        nats_url: str | NatsClient,
        batch_size: int = 500,
        concurrency: int = 2,
        poll_interval: float = 1.0,
        ack_timeout: float = 5.0,
        retry_base: float = 0.5,
        retry_max: float = 60.0,
        retention: timedelta = timedelta(days=3),
        cleanup_interval: float = 300.0,
        name: str | None = None,
        on_published: Callable[[Sequence[OutboxRecord]], None] | None = None,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.schema = _checked_schema(schema)
        self.channel = notify_channel(schema)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.ack_timeout = ack_timeout
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.name = name or f"{schema}-outbox-relay"
        self.on_published = on_published

        # Counters, read by metrics and benchmarks.
        self.published = 0
        self.duplicates = 0
        self.failed = 0
        self.cycles = 0
        self.cycle_errors = 0
        self.cleaned = 0

        self._dsn = libpq_url(database_url)
        self._nats_url = nats_url if isinstance(nats_url, str) else None
        self._nc: NatsClient | None = None if isinstance(nats_url, str) else nats_url
        self._js: JetStreamContext | None = None
        self._pool: asyncpg.Pool | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._listening = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[Any] | None = None
        self._log = log.bind(relay=self.name, schema=self.schema)

        # The schema name is checked to be a plain identifier: safe to put in SQL text.
        q = f'"{self.schema}".{OUTBOX_TABLE}'
        blocker = (
            f"SELECT 1 FROM {q} AS p WHERE p.published_at IS NULL "  # noqa: S608
            "AND p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id "
            "AND p.seq < o.seq"
        )
        # Candidates: due rows nobody else holds, minus those waiting behind a row in backoff.
        # Then each candidate is held back when an earlier unpublished row of its aggregate is
        # not among the candidates (in flight with another relay, or not due yet).
        self._claim_sql = (
            "WITH candidates AS MATERIALIZED ("  # noqa: S608
            f" SELECT o.id FROM {q} AS o"
            " WHERE o.published_at IS NULL AND o.next_attempt_at <= now()"
            f" AND NOT EXISTS ({blocker} AND p.next_attempt_at > now())"
            " ORDER BY o.next_attempt_at, o.seq"
            " LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " SELECT o.id, o.seq, o.subject, o.message_type, o.aggregate_type, o.aggregate_id,"
            " o.creator_id, o.payload, o.headers::text AS headers, o.created_at, o.attempts,"
            f" EXISTS ({blocker} AND p.id NOT IN (SELECT id FROM candidates)) AS held_back"
            f" FROM candidates AS c JOIN {q} AS o ON o.id = c.id"
            " ORDER BY o.seq"
        )
        self._mark_published_sql = (
            f"UPDATE {q} SET published_at = now(), last_error = NULL WHERE id = ANY($1::uuid[])"  # noqa: S608
        )
        self._mark_failed_sql = (
            f"UPDATE {q} AS o SET attempts = o.attempts + 1,"  # noqa: S608
            " next_attempt_at = now() + make_interval(secs => least($3::float8,"
            " $2::float8 * power(2, least(o.attempts, 30))) * (0.8 + random() * 0.4)),"
            " last_error = f.error"
            " FROM unnest($1::uuid[], $4::text[]) AS f(id, error) WHERE o.id = f.id"
        )
        self._cleanup_sql = (
            f"DELETE FROM {q} WHERE id IN (SELECT id FROM {q}"  # noqa: S608
            " WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1)"
            " ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        )
        self._backlog_sql = (
            "SELECT count(*) AS pending,"  # noqa: S608
            " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age"
            f" FROM {q} WHERE published_at IS NULL"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up (wake-ups are instant, not polled)."""
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        """Returns once the LISTEN connection is up (bound it with `asyncio.timeout`)."""
        await self._listening.wait()

    async def run(self) -> None:
        """Relays until `stop()`; survives database and NATS outages. A stopped relay stays
        stopped: make a new one to start again."""
        if self._running:
            raise RuntimeError("this relay is already running")
        self._running = True
        self._stopped.clear()
        self._task = asyncio.current_task()
        owned_nc = False
        helpers: list[asyncio.Task[None]] = []
        try:
            if self._nc is None:
                assert self._nats_url is not None
                self._nc = await connect_nats(self._nats_url, name=self.name)
                owned_nc = True
            self._js = self._nc.jetstream(
                publish_async_max_pending=max(4000, 2 * self.batch_size * self.concurrency)
            )
            self._pool = await self._create_pool()
            if self._pool is None:
                return  # stopped while waiting for the database
            helpers = [
                asyncio.create_task(self._listen_forever(), name=f"{self.name}-listen"),
                asyncio.create_task(self._cleanup_forever(), name=f"{self.name}-cleanup"),
            ]
            self._log.info("outbox.relay_started", batch_size=self.batch_size)
            await self._loop()
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pool.close(), 10)
                self._pool = None
            if owned_nc and self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()
                self._nc = None
            self._js = None
            self._running = False
            self._stopped.set()
            self._log.info("outbox.relay_stopped", published=self.published, failed=self.failed)

    async def stop(self, grace: float = 30.0) -> None:
        """Asks `run()` to return after the cycles in progress, and waits for it; after `grace`
        seconds, cancels it (whatever was not marked yet is published again later)."""
        self._stopping.set()
        self._wake.set()
        if not self._running:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), grace)
        except TimeoutError:
            self._log.warning("outbox.stop_timeout", grace=grace)
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task

    async def _create_pool(self) -> asyncpg.Pool | None:
        """The pool of the cycles; waits for the database to come up (None when stopped)."""
        delay = 0.2
        while True:
            try:
                pool: asyncpg.Pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self.concurrency + 1,  # the cycles and the cleanup
                    # Our sessions change no settings and hold no locks or LISTENs between
                    # uses: skip the reset query on every release.
                    reset=_keep_session,
                    server_settings={"application_name": self.name},
                )
            except (OSError, TimeoutError, asyncpg.PostgresError) as err:
                self._log.warning("outbox.db_unavailable", error=_describe(err), retry_in=delay)
                await self._sleep(delay)
                if self._stopping.is_set():
                    return None
                delay = min(delay * 2, 5.0)
            else:
                return pool

    async def _sleep(self, seconds: float) -> None:
        """Sleeps, but returns at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_for_wake(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _loop(self) -> None:
        # Several cycles at once overlap one batch's database work with another's publishing;
        # SKIP LOCKED keeps their batches apart, as it does for separate relays.
        await asyncio.gather(*(self._worker() for _ in range(self.concurrency)))

    async def _worker(self) -> None:
        assert self._nc is not None
        failure_delay = 0.1
        while not self._stopping.is_set():
            if not self._nc.is_connected:
                # Publishing now would only burn attempts; the reconnect is on its way.
                await self._sleep(0.1)
                continue
            self._wake.clear()
            try:
                claimed, held_back = await self.relay_once()
            except Exception as err:
                self.cycle_errors += 1
                self._log.warning("outbox.cycle_failed", error=_describe(err), exc_info=True)
                await self._sleep(failure_delay)
                failure_delay = min(failure_delay * 2, 5.0)
                continue
            failure_delay = 0.1
            if held_back:
                # Another relay is publishing earlier rows of these aggregates: look again soon.
                await self._wait_for_wake(0.02)
            elif claimed < self.batch_size:
                await self._wait_for_wake(self.poll_interval)
            # else: a full batch, probably more waiting: go on at once.

    # -- one cycle ------------------------------------------------------------------------------

    async def relay_once(self) -> tuple[int, int]:
        """Claims, publishes and marks one batch; returns (rows claimed, rows held back)."""
        if self._pool is None or self._js is None:
            raise RuntimeError("relay_once() needs a running relay")
        js = self._js
        async with self._pool.acquire() as conn, conn.transaction():
            claim = await self._claim(conn)
            if not claim.ready:
                return claim.held_back, claim.held_back
            result = await self._publish(js, claim.ready)
            await self._mark(conn, result)
        self.cycles += 1
        self.published += len(result.published)
        self.duplicates += result.duplicates
        self.failed += len(result.failed)
        if result.failed:
            first_error = result.failed[0][1]
            self._log.warning(
                "outbox.publish_failed", count=len(result.failed), first_error=first_error
            )
        if self.on_published is not None and result.published:
            try:
                self.on_published(result.published)
            except Exception:
                self._log.exception("outbox.on_published_failed")
        return len(claim.ready) + claim.held_back, claim.held_back

    async def _claim(self, conn: asyncpg.Connection) -> Claim:
        rows = await conn.fetch(self._claim_sql, self.batch_size)
        ready: list[OutboxRecord] = []
        held_back = 0
        for row in rows:
            if row["held_back"]:
                held_back += 1
                continue
            ready.append(
                OutboxRecord(
                    id=row["id"],
                    seq=row["seq"],
                    subject=row["subject"],
                    message_type=row["message_type"],
                    aggregate_type=row["aggregate_type"],
                    aggregate_id=row["aggregate_id"],
                    creator_id=row["creator_id"],
                    payload=bytes(row["payload"]),
                    headers=_decode_headers(row["headers"]),
                    created_at=row["created_at"],
                    attempts=row["attempts"],
                )
            )
        return Claim(ready=ready, held_back=held_back)

    async def _publish(
        self, js: JetStreamContext, records: Sequence[OutboxRecord]
    ) -> PublishResult:
        """Publishes with many acks in flight; rows of one aggregate go in successive waves, and
        a failure stops the rest of its aggregate, so per-aggregate order holds."""
        result = PublishResult()
        stopped: set[tuple[str, str]] = set()
        for wave in _waves(records):
            in_flight: list[tuple[OutboxRecord, asyncio.Future[PubAck]]] = []
            for record in wave:
                if record.aggregate_key in stopped:
                    continue
                try:
                    # No `wait_stall`: it costs a timer per message, and the client allows
                    # more acks in flight (at least twice a batch) than one cycle uses.
                    future = await js.publish_async(
                        record.subject, record.payload, headers=record.nats_headers()
                    )
                except Exception as err:
                    result.failed.append((record, _describe(err)))
                    stopped.add(record.aggregate_key)
                    continue
                in_flight.append((record, future))
            if not in_flight:
                continue
            _, pending = await asyncio.wait(
                [future for _, future in in_flight], timeout=self.ack_timeout
            )
            for future in pending:
                future.cancel()
            for record, future in in_flight:
                error: str | None = None
                if future.cancelled():
                    error = f"no PubAck within {self.ack_timeout:g} s"
                elif (exc := future.exception()) is not None:
                    error = _describe(exc)
                if error is not None:
                    result.failed.append((record, error))
                    stopped.add(record.aggregate_key)
                    continue
                result.published.append(record)
                if future.result().duplicate:
                    result.duplicates += 1
        return result

    async def _mark(self, conn: asyncpg.Connection, result: PublishResult) -> None:
        if result.published:
            await conn.execute(self._mark_published_sql, [record.id for record in result.published])
        if result.failed:
            await conn.execute(
                self._mark_failed_sql,
                [record.id for record, _ in result.failed],
                self.retry_base,
                self.retry_max,
                [error for _, error in result.failed],
            )

    # -- observation ----------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        """How far behind the relay is: unpublished rows and the age of the oldest."""
        if self._pool is None:
            conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
            try:
                row = await conn.fetchrow(self._backlog_sql)
            finally:
                await conn.close()
        else:
            row = await self._pool.fetchrow(self._backlog_sql)
        return Backlog(pending=int(row["pending"]), oldest_age=float(row["oldest_age"]))

    # -- background helpers ---------------------------------------------------------------------

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _listen_forever(self) -> None:
        """Keeps one connection LISTENing; reconnects with backoff when it is lost."""
        delay = 0.2
        while not self._stopping.is_set():
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": f"{self.name}-listen"}
                )
            except (OSError, TimeoutError, asyncpg.PostgresError) as err:
                self._log.warning("outbox.listen_connect_failed", error=_describe(err))
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                await conn.add_listener(self.channel, self._on_notify)
                self._listening.set()
                self._wake.set()  # catch up with anything committed while not listening
                delay = 0.2
                self._log.info("outbox.listening", channel=self.channel)
                while not self._stopping.is_set() and not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 15.0)
                    if not lost.is_set() and not self._stopping.is_set():
                        # A silent network failure leaves no trace until we use the socket.
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 5.0)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                self._log.warning("outbox.listen_lost", error=_describe(err))
            finally:
                self._listening.clear()
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)
            if not self._stopping.is_set():
                self._log.warning("outbox.listen_reconnecting", retry_in=delay)
                await self._sleep(delay)

    async def _cleanup_forever(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.cleanup_interval)
            if self._stopping.is_set():
                return
            try:
                await self.cleanup()
            except Exception as err:
                self._log.warning("outbox.cleanup_failed", error=_describe(err))

    async def cleanup(self, chunk: int = 5000) -> int:
        """Deletes rows published longer than `retention` ago; returns how many."""
        if self._pool is None:
            raise RuntimeError("cleanup() needs a running relay")
        total = 0
        while not self._stopping.is_set():
            status: str = await self._pool.execute(
                self._cleanup_sql, self.retention.total_seconds(), chunk
            )
            deleted = int(status.rsplit(maxsplit=1)[-1])
            total += deleted
            if deleted < chunk:
                break
            await asyncio.sleep(0.05)  # leave room for the relay between chunks
        if total:
            self.cleaned += total
            self._log.info("outbox.cleaned", deleted=total)
        return total


async def _keep_session(_conn: asyncpg.Connection) -> None:
    return None


def _decode_headers(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    decoded = orjson.loads(raw)
    if not isinstance(decoded, dict):
        return {}
    return {str(key): str(value) for key, value in decoded.items()}


def _waves(records: Sequence[OutboxRecord]) -> list[list[OutboxRecord]]:
    """Splits seq-ordered records so each wave holds at most one record per aggregate."""
    waves: list[list[OutboxRecord]] = []
    depth: dict[tuple[str, str], int] = {}
    for record in records:
        level = depth.get(record.aggregate_key, 0)
        depth[record.aggregate_key] = level + 1
        if level == len(waves):
            waves.append([])
        waves[level].append(record)
    return waves
