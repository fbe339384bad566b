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
  stream's duplicate window, and consumers drop any later copy by their `processed_events`.
* Events of one aggregate are published in `seq` order, also with several relays: a row is held
  back while an earlier row of its aggregate is unpublished, and rows of one aggregate inside a
  batch are published one wave after another. A failed row holds back the rest of its aggregate
  until it is published. Writers must serialise changes to one aggregate (they normally do, by
  locking or versioning its row), so that seq order is commit order within an aggregate.
* A row that cannot be published is never silently stuck: each failure counts in `attempts`
  with `last_error`; from `stuck_after` attempts on, every failure is logged as
  `outbox.row_stuck`, and the `huntaze_outbox_stuck_rows` gauge counts such rows. An operator
  lists them with `python -m huntaze_kit.dlq outbox list`, then parks them (no more attempts;
  the rest of the aggregate keeps waiting, since skipping an event would break its order) or
  retries them at once (`outbox park` / `outbox retry`).

Metrics (default Prometheus registry, labelled by schema): backlog and age of the oldest unsent
row, publish attempts and failures, stuck and parked rows.

The tables live in each service's schema: the outbox, `processed_events` (which consumer
applied which event, see `huntaze_kit.consumers`), `consumer_failures` (handler failures per
event, which decide dead-lettering) and `effect_ledger` (external side effects, see
`huntaze_kit.effects`). `create_outbox_tables(schema)` in a service's first migration creates
them in their current shape; `upgrade_messaging_tables(schema)` in a later revision brings a
schema made by an older kit up to date (data kept) and changes nothing on a current one.
`messaging_tables(metadata)` describes them all to SQLAlchemy.
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
from prometheus_client import Counter, Gauge
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
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg as postgresql_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateIndex, CreateTable, SetColumnComment, SetTableComment
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import Executable

from huntaze_kit.db import libpq_url
from huntaze_kit.logging import current_request_id, get_logger
from huntaze_kit.streams import Headers, close_nats, connect_nats

log = get_logger(__name__)

OUTBOX_TABLE = "outbox"
PROCESSED_EVENTS_TABLE = "processed_events"
CONSUMER_FAILURES_TABLE = "consumer_failures"
EFFECT_LEDGER_TABLE = "effect_ledger"
# The name the deduplication table had before it became `processed_events`.
_LEGACY_INBOX_TABLE = "inbox"

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_MAX_ERROR_LENGTH = 2000
DEFAULT_STUCK_AFTER = 10

OUTBOX_BACKLOG = Gauge(
    "huntaze_outbox_backlog", "Outbox rows not published yet (parked ones included).", ["schema"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "huntaze_outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not published yet.",
    ["schema"],
)
OUTBOX_STUCK = Gauge(
    "huntaze_outbox_stuck_rows",
    "Unpublished outbox rows that failed at least `stuck_after` times, parked ones excluded.",
    ["schema"],
)
OUTBOX_PARKED = Gauge(
    "huntaze_outbox_parked_rows", "Outbox rows an operator parked (not published).", ["schema"]
)
OUTBOX_PUBLISH_ATTEMPTS = Counter(
    "huntaze_outbox_publish_attempts", "Events the relay tried to publish.", ["schema"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "huntaze_outbox_publish_failures", "Publications that failed (and will be retried).", ["schema"]
)


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
        Column(
            "parked_at",
            DateTime(timezone=True),
            nullable=True,
            comment="Set by an operator: not published, and its aggregate's later rows wait.",
        ),
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


def processed_events_table(metadata: MetaData) -> Table:
    """`processed_events`: which consumer already applied which event (deduplication)."""
    return Table(
        PROCESSED_EVENTS_TABLE,
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", Uuid(as_uuid=True), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id", name="processed_events_pkey"),
        Index("processed_events_processed_at_idx", "processed_at"),
        comment="Idempotent consumers: one row per (consumer, event) applied.",
    )


def consumer_failures_table(metadata: MetaData) -> Table:
    """`consumer_failures`: how often a consumer's handler failed on an event not applied yet."""
    return Table(
        CONSUMER_FAILURES_TABLE,
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", Uuid(as_uuid=True), nullable=False),
        Column("failures", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id", name="consumer_failures_pkey"),
        Index("consumer_failures_failed_at_idx", "failed_at"),
        comment="Handler failures per event: they, not NATS deliveries, lead to the DLQ.",
    )


def effect_ledger_table(metadata: MetaData) -> Table:
    """`effect_ledger`: external side effects started (and completed) per event."""
    return Table(
        EFFECT_LEDGER_TABLE,
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", Uuid(as_uuid=True), nullable=False),
        Column("effect", Text, nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("completed_at", DateTime(timezone=True), nullable=True),
        PrimaryKeyConstraint("consumer", "event_id", "effect", name="effect_ledger_pkey"),
        Index("effect_ledger_started_at_idx", "started_at"),
        comment="At most once per event: an effect is recorded here before it happens.",
    )


@dataclass(frozen=True, slots=True)
class MessagingTables:
    """The kit's tables in one schema."""

    outbox: Table
    processed_events: Table
    consumer_failures: Table
    effect_ledger: Table

    def all(self) -> tuple[Table, ...]:
        return (self.outbox, self.processed_events, self.consumer_failures, self.effect_ledger)


def messaging_tables(metadata: MetaData) -> MessagingTables:
    """Every table of the kit, added to `metadata` (whose schema they take)."""
    return MessagingTables(
        outbox=outbox_table(metadata),
        processed_events=processed_events_table(metadata),
        consumer_failures=consumer_failures_table(metadata),
        effect_ledger=effect_ledger_table(metadata),
    )


@functools.cache
def schema_tables(schema: str) -> MessagingTables:
    """The kit's tables of `schema`, built once per process and shared by all queries."""
    return messaging_tables(MetaData(schema=_checked_schema(schema)))


def _notify_function(schema: str) -> str:
    return f'"{schema}".outbox_notify'


def _table_ddl(table: Table) -> list[Executable]:
    statements: list[Executable] = [CreateTable(table)]
    statements.extend(CreateIndex(index) for index in sorted(table.indexes, key=_index_name))
    # PostgreSQL takes comments as separate statements (autogenerate compares them).
    if table.comment:
        statements.append(SetTableComment(table))
    statements.extend(SetColumnComment(column) for column in table.columns if column.comment)
    return statements


def outbox_ddl(schema: str) -> list[Executable]:
    """Every statement that creates the kit's tables in `schema` (which must exist)."""
    statements: list[Executable] = []
    for table in schema_tables(schema).all():
        statements.extend(_table_ddl(table))
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
    """The statements that remove what `outbox_ddl` created (in any of its shapes)."""
    _checked_schema(schema)
    tables = (
        EFFECT_LEDGER_TABLE,
        CONSUMER_FAILURES_TABLE,
        PROCESSED_EVENTS_TABLE,
        _LEGACY_INBOX_TABLE,
        OUTBOX_TABLE,
    )
    return [
        text(f'DROP TRIGGER IF EXISTS outbox_notify ON "{schema}".{OUTBOX_TABLE}'),
        text(f"DROP FUNCTION IF EXISTS {_notify_function(schema)}()"),
        *(text(f'DROP TABLE IF EXISTS "{schema}".{table}') for table in tables),
    ]


def upgrade_messaging_ddl(schema: str) -> list[Executable]:
    """From the first shape (an `inbox` table, no failures, ledger or parking) to the current
    one, keeping every row; on a schema already current, nothing changes."""
    tables = schema_tables(schema)
    q = f'"{_checked_schema(schema)}"'
    statements: list[Executable] = [
        text(
            "DO $body$ BEGIN"
            f" IF to_regclass('{q}.{_LEGACY_INBOX_TABLE}') IS NOT NULL"
            f" AND to_regclass('{q}.{PROCESSED_EVENTS_TABLE}') IS NULL THEN"
            f" ALTER TABLE {q}.{_LEGACY_INBOX_TABLE} RENAME TO {PROCESSED_EVENTS_TABLE};"
            f" ALTER TABLE {q}.{PROCESSED_EVENTS_TABLE}"
            " RENAME CONSTRAINT inbox_pkey TO processed_events_pkey;"
            f" ALTER INDEX {q}.inbox_processed_at_idx RENAME TO processed_events_processed_at_idx;"
            f" COMMENT ON TABLE {q}.{PROCESSED_EVENTS_TABLE} IS"
            f" '{tables.processed_events.comment}';"
            " END IF; END $body$"
        ),
        text(f"ALTER TABLE {q}.{OUTBOX_TABLE} ADD COLUMN IF NOT EXISTS parked_at timestamptz"),
        SetColumnComment(tables.outbox.c.parked_at),
    ]
    for table in (tables.consumer_failures, tables.effect_ledger):
        statements.append(
            text(
                f"DO $body$ BEGIN IF to_regclass('{q}.{table.name}') IS NULL THEN"
                f" {_compiled(CreateTable(table))};"
                + "".join(
                    f" {_compiled(CreateIndex(index))};"
                    for index in sorted(table.indexes, key=_index_name)
                )
                + f" {_compiled(SetTableComment(table))};"
                " END IF; END $body$"
            )
        )
    return statements


def downgrade_messaging_ddl(schema: str) -> list[Executable]:
    """Back to the first shape: what `upgrade_messaging_ddl` added goes, `inbox` comes back."""
    q = f'"{_checked_schema(schema)}"'
    return [
        text(f"DROP TABLE IF EXISTS {q}.{EFFECT_LEDGER_TABLE}"),
        text(f"DROP TABLE IF EXISTS {q}.{CONSUMER_FAILURES_TABLE}"),
        text(f"ALTER TABLE {q}.{OUTBOX_TABLE} DROP COLUMN IF EXISTS parked_at"),
        text(f"ALTER TABLE {q}.{PROCESSED_EVENTS_TABLE} RENAME TO {_LEGACY_INBOX_TABLE}"),
        text(
            f"ALTER TABLE {q}.{_LEGACY_INBOX_TABLE}"
            " RENAME CONSTRAINT processed_events_pkey TO inbox_pkey"
        ),
        text(f"ALTER INDEX {q}.processed_events_processed_at_idx RENAME TO inbox_processed_at_idx"),
    ]


def _compiled(statement: Executable) -> str:
    """A DDL statement as PostgreSQL text, to run inside a DO block."""
    return str(statement.compile(dialect=postgresql_dialect()))  # type: ignore[no-untyped-call,attr-defined]


def _index_name(index: Index) -> str:
    return str(index.name)


def _execute_in_migration(statements: Sequence[Executable]) -> None:
    from alembic import op  # noqa: PLC0415  (only inside a migration)

    for statement in statements:
        op.execute(statement)


def create_outbox_tables(schema: str) -> None:
    """For a service's first Alembic migration (`upgrade()`): creates the kit's tables in their
    current shape, and the outbox's trigger."""
    _execute_in_migration(outbox_ddl(schema))


def drop_outbox_tables(schema: str) -> None:
    """For a service's first Alembic migration (`downgrade()`)."""
    _execute_in_migration(drop_outbox_ddl(schema))


def upgrade_messaging_tables(schema: str) -> None:
    """For a later revision (`upgrade()`): brings the kit's tables up to date, data kept."""
    _execute_in_migration(upgrade_messaging_ddl(schema))


def downgrade_messaging_tables(schema: str) -> None:
    """For that revision's `downgrade()`: back to the first shape, data kept."""
    _execute_in_migration(downgrade_messaging_ddl(schema))


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
    identifier = event_id or new_event_id()
    event_row = OutboxEvent(subject, event, aggregate_type, aggregate_id, creator_id)
    await session.execute(
        _insert_statement(schema), _outbox_row(event_row, identifier, current_request_id())
    )
    return identifier


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event to record with `record_events`; `request_id` goes in its headers (None: the
    current request's)."""

    subject: str
    event: Message
    aggregate_type: str
    aggregate_id: str
    creator_id: str | None = None
    request_id: str | None = None


async def record_events(
    session: AsyncSession, *, schema: str, events: Sequence[OutboxEvent]
) -> list[uuid.UUID]:
    """`record_event` for many events in one statement (in the given order); their ids."""
    current = current_request_id()
    ids = [new_event_id() for _ in events]
    if events:
        rows = [
            _outbox_row(event, identifier, event.request_id or current)
            for event, identifier in zip(events, ids, strict=True)
        ]
        await session.execute(_insert_statement(schema), rows)
    return ids


def _outbox_row(
    event: OutboxEvent, identifier: uuid.UUID, request_id: str | None
) -> dict[str, Any]:
    subject, creator_id = event.subject, event.creator_id
    if not subject or any(ch in subject for ch in " \t\r\n*>"):
        raise ValueError(f"invalid subject {subject!r}")
    for name, value in (
        ("aggregate_type", event.aggregate_type),
        ("aggregate_id", event.aggregate_id),
    ):
        if not value or "\r" in value or "\n" in value:
            raise ValueError(f"invalid {name} {value!r}: it travels in a NATS header")
    if creator_id is not None and ("\r" in creator_id or "\n" in creator_id):
        raise ValueError(f"invalid creator_id {creator_id!r}: it travels in a NATS header")
    headers: dict[str, str] = {}
    if request_id:
        headers[Headers.REQUEST_ID] = request_id
    return {
        "id": identifier,
        "subject": subject,
        "message_type": event.event.DESCRIPTOR.full_name,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "creator_id": creator_id,
        "payload": event.event.SerializeToString(deterministic=True),
        "headers": headers,
    }


@functools.cache
def _insert_statement(schema: str) -> Insert:
    """One statement object per schema: SQLAlchemy finds its compiled form at once."""
    return insert(schema_tables(schema).outbox)


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
    """Unpublished events of one outbox: how many, the age in seconds of the oldest, and how
    many of them are stuck (`stuck_after` failed attempts or more) or parked."""

    pending: int
    oldest_age: float
    stuck: int = 0
    parked: int = 0


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
        stuck_after: int = DEFAULT_STUCK_AFTER,
        observe_interval: float = 15.0,
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
        self.stuck_after = stuck_after
        self.observe_interval = observe_interval
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
        self._attempts_metric = OUTBOX_PUBLISH_ATTEMPTS.labels(self.schema)
        self._failures_metric = OUTBOX_PUBLISH_FAILURES.labels(self.schema)

        # The schema name is checked to be a plain identifier: safe to put in SQL text.
        q = f'"{self.schema}".{OUTBOX_TABLE}'
        blocker = (
            f"SELECT 1 FROM {q} AS p WHERE p.published_at IS NULL "  # noqa: S608
            "AND p.aggregate_type = o.aggregate_type AND p.aggregate_id = o.aggregate_id "
            "AND p.seq < o.seq"
        )
        # Candidates: due rows nobody else holds, minus those waiting behind a row in backoff
        # (a parked row is never due: see `park_rows`). Then each candidate is held back when an
        # earlier unpublished row of its aggregate is not among the candidates (in flight with
        # another relay, or not due yet).
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
            " RETURNING o.id, o.seq, o.subject, o.aggregate_type, o.aggregate_id, o.attempts,"
            " o.last_error"
        )
        self._cleanup_sql = (
            f"DELETE FROM {q} WHERE id IN (SELECT id FROM {q}"  # noqa: S608
            " WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1)"
            " ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
        )
        self._backlog_sql = _backlog_sql(self.schema)

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
                asyncio.create_task(self._observe_forever(), name=f"{self.name}-observe"),
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
                    await close_nats(self._nc)
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
                    max_size=self.concurrency + 2,  # the cycles, the cleanup, the gauges
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
        self._attempts_metric.inc(len(result.published) + len(result.failed))
        if result.published:
            await conn.execute(self._mark_published_sql, [record.id for record in result.published])
        if result.failed:
            self._failures_metric.inc(len(result.failed))
            rows = await conn.fetch(
                self._mark_failed_sql,
                [record.id for record, _ in result.failed],
                self.retry_base,
                self.retry_max,
                [error for _, error in result.failed],
            )
            for row in rows:
                if row["attempts"] >= self.stuck_after:
                    # Every failure from here on is an alert until an operator steps in.
                    self._log.error(
                        "outbox.row_stuck",
                        event_id=str(row["id"]),
                        seq=row["seq"],
                        subject=row["subject"],
                        aggregate=f"{row['aggregate_type']}:{row['aggregate_id']}",
                        attempts=row["attempts"],
                        last_error=row["last_error"],
                        hint="python -m huntaze_kit.dlq outbox list",
                    )

    # -- observation ----------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        """How far behind the relay is (also sets the backlog gauges)."""
        if self._pool is None:
            conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
            try:
                found = await outbox_backlog(conn, self.schema, stuck_after=self.stuck_after)
            finally:
                await conn.close()
        else:
            async with self._pool.acquire() as conn:
                found = await outbox_backlog(conn, self.schema, stuck_after=self.stuck_after)
        OUTBOX_BACKLOG.labels(self.schema).set(found.pending)
        OUTBOX_OLDEST_AGE.labels(self.schema).set(found.oldest_age)
        OUTBOX_STUCK.labels(self.schema).set(found.stuck)
        OUTBOX_PARKED.labels(self.schema).set(found.parked)
        return found

    async def _observe_forever(self) -> None:
        """Keeps the backlog gauges current."""
        while not self._stopping.is_set():
            try:
                await self.backlog()
            except Exception as err:
                self._log.warning("outbox.observe_failed", error=_describe(err))
            await self._sleep(self.observe_interval)

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


# ---------------------------------------------------------------------------------------------
# Operators: stuck and parked rows
# ---------------------------------------------------------------------------------------------


def _backlog_sql(schema: str) -> str:
    q = f'"{_checked_schema(schema)}".{OUTBOX_TABLE}'
    return (
        "SELECT count(*) AS pending,"  # noqa: S608
        " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age,"
        " count(*) FILTER (WHERE parked_at IS NULL AND attempts >= $1) AS stuck,"
        " count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked"
        f" FROM {q} WHERE published_at IS NULL"
    )


async def outbox_backlog(
    conn: asyncpg.Connection, schema: str, *, stuck_after: int = DEFAULT_STUCK_AFTER
) -> Backlog:
    """Unpublished rows of `schema`'s outbox: count, age of the oldest, stuck and parked."""
    row = await conn.fetchrow(_backlog_sql(schema), stuck_after)
    return Backlog(
        pending=int(row["pending"]),
        oldest_age=float(row["oldest_age"]),
        stuck=int(row["stuck"]),
        parked=int(row["parked"]),
    )


@dataclass(frozen=True, slots=True)
class StuckRow:
    """An unpublished row that failed or was parked, and how many rows of its aggregate wait
    behind it."""

    id: uuid.UUID
    seq: int
    subject: str
    aggregate_type: str
    aggregate_id: str
    created_at: datetime
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    parked_at: datetime | None
    waiting_behind: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "seq": self.seq,
            "subject": self.subject,
            "aggregate": f"{self.aggregate_type}:{self.aggregate_id}",
            "created_at": self.created_at.isoformat(),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "parked_at": self.parked_at.isoformat() if self.parked_at else None,
            "waiting_behind": self.waiting_behind,
        }


async def stuck_rows(
    conn: asyncpg.Connection, schema: str, *, min_attempts: int = 1, limit: int = 100
) -> list[StuckRow]:
    """Unpublished rows that failed at least `min_attempts` times or are parked, oldest first."""
    q = f'"{_checked_schema(schema)}".{OUTBOX_TABLE}'
    rows = await conn.fetch(
        "SELECT o.id, o.seq, o.subject, o.aggregate_type, o.aggregate_id, o.created_at,"  # noqa: S608
        " o.attempts, o.last_error, o.next_attempt_at, o.parked_at,"
        f" (SELECT count(*) FROM {q} AS w WHERE w.published_at IS NULL"
        " AND w.aggregate_type = o.aggregate_type AND w.aggregate_id = o.aggregate_id"
        " AND w.seq > o.seq) AS waiting_behind"
        f" FROM {q} AS o WHERE o.published_at IS NULL"
        " AND (o.attempts >= $1 OR o.parked_at IS NOT NULL) ORDER BY o.seq LIMIT $2",
        min_attempts,
        limit,
    )
    return [StuckRow(**dict(row)) for row in rows]


async def park_rows(conn: asyncpg.Connection, schema: str, ids: Sequence[uuid.UUID]) -> int:
    """Stops publishing these unpublished rows (their aggregates wait); returns how many.

    A parked row is due at `infinity`: the relay's claim, which skips rows not due and holds
    back the rows behind them, needs no other condition (and keeps its plan)."""
    q = f'"{_checked_schema(schema)}".{OUTBOX_TABLE}'
    status: str = await conn.execute(
        f"UPDATE {q} SET parked_at = now(), next_attempt_at = 'infinity'"  # noqa: S608
        " WHERE id = ANY($1::uuid[]) AND published_at IS NULL AND parked_at IS NULL",
        list(ids),
    )
    return int(status.rsplit(maxsplit=1)[-1])


async def retry_rows(conn: asyncpg.Connection, schema: str, ids: Sequence[uuid.UUID]) -> int:
    """Unparks these unpublished rows and makes them due now; returns how many. The relay
    wakes at once (NOTIFY)."""
    q = f'"{_checked_schema(schema)}".{OUTBOX_TABLE}'
    async with conn.transaction():
        status: str = await conn.execute(
            f"UPDATE {q} SET parked_at = NULL, next_attempt_at = now()"  # noqa: S608
            " WHERE id = ANY($1::uuid[]) AND published_at IS NULL",
            list(ids),
        )
        await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
    return int(status.rsplit(maxsplit=1)[-1])
