"""Outbox relay, idempotent consumers and dead letters, against real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from huntaze.auth.v1.events_pb2 import UserRegistered
from huntaze_devstack.embedded import EmbeddedPostgres, ensure_database, free_port
from huntaze_kit.consumers import EventConsumer, ReceivedEvent
from huntaze_kit.db import create_engine, libpq_url, session_factory
from huntaze_kit.dlq import list_dead_letters, purge, replay
from huntaze_kit.effects import EffectLedger
from huntaze_kit.logging import current_request_id, request_context
from huntaze_kit.outbox import (
    OutboxEvent,
    OutboxRelay,
    PublishResult,
    create_outbox_tables,
    downgrade_messaging_ddl,
    drop_outbox_tables,
    messaging_tables,
    record_event,
    record_events,
    schema_tables,
    upgrade_messaging_ddl,
)
from huntaze_kit.streams import (
    DLQ,
    Headers,
    StreamSpec,
    connect_nats,
    context_stream,
    ensure_streams,
)

pytestmark = pytest.mark.timeout(90)

# The tests publish events of the auth context, and dead-letter to the DLQ.
STREAMS = (context_stream("auth"), DLQ)

SCHEMA = "t_outbox"
KIT_TABLES = ("outbox", "processed_events", "consumer_failures", "effect_ledger")
SUBJECT = "auth.user.registered"

Handler = Callable[[AsyncSession, ReceivedEvent], Awaitable[None]]


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


def _migrate(connection: Connection) -> None:
    with Operations.context(MigrationContext.configure(connection)):
        create_outbox_tables(SCHEMA)


async def prepare_schema(engine: AsyncEngine) -> None:
    """The kit's tables, and `effects` where test handlers leave a row per applied event
    (`applied` numbers them in the order they were written)."""
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(_migrate)
        await conn.execute(
            text(
                f"CREATE TABLE {SCHEMA}.effects (consumer text NOT NULL, event_id uuid NOT NULL,"
                " aggregate_id text NOT NULL, position int NOT NULL,"
                " applied bigint GENERATED ALWAYS AS IDENTITY)"
            )
        )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, application_name="messaging-test", pool_size=5)
    await prepare_schema(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await connect_nats(nats_url, name="messaging-test")
    await ensure_streams(client.jetstream(), STREAMS)
    try:
        yield client
    finally:
        await client.close()


async def eventually(
    predicate: Callable[[], Awaitable[bool] | bool], *, timeout: float = 20.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = predicate()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def record(
    sessions: async_sessionmaker[AsyncSession],
    items: Iterable[tuple[str, int]],
    *,
    subject: str = SUBJECT,
    commit: bool = True,
) -> list[uuid.UUID]:
    """Records one UserRegistered per (aggregate, position) in ONE transaction."""
    ids: list[uuid.UUID] = []
    async with sessions() as session:
        for aggregate_id, position in items:
            ids.append(
                await record_event(
                    session,
                    schema=SCHEMA,
                    subject=subject,
                    event=UserRegistered(user_id=aggregate_id, name=str(position)),
                    aggregate_type="user",
                    aggregate_id=aggregate_id,
                    creator_id=f"creator-{aggregate_id}",
                )
            )
        if commit:
            await session.commit()
        else:
            await session.rollback()
    return ids


@contextlib.asynccontextmanager
async def running(*workers: OutboxRelay | EventConsumer) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield
    finally:
        for worker in workers:
            await worker.stop(grace=10)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


def effect_handler(consumer: str) -> Handler:
    async def handle(session: AsyncSession, event: ReceivedEvent) -> None:
        message = event.parse(UserRegistered)
        await session.execute(
            text(
                f"INSERT INTO {SCHEMA}.effects (consumer, event_id, aggregate_id, position)"
                " VALUES (:consumer, :event_id, :aggregate_id, :position)"
            ),
            {
                "consumer": consumer,
                "event_id": event.event_id,
                "aggregate_id": message.user_id,
                "position": int(message.name),
            },
        )

    return handle


def make_consumer(
    nc: NatsClient,
    sessions: async_sessionmaker[AsyncSession],
    durable: str,
    handler: Handler | None = None,
    **options: Any,
) -> EventConsumer:
    options.setdefault("fetch_wait", 1.0)
    return EventConsumer(
        nats=nc,
        session_factory=sessions,
        schema=SCHEMA,
        durable=durable,
        stream="AUTH",
        filter_subjects=[SUBJECT],
        handler=handler or effect_handler(durable),
        **options,
    )


async def effect_counts(engine: AsyncEngine, consumer: str) -> dict[uuid.UUID, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT event_id, count(*) FROM {SCHEMA}.effects WHERE consumer = :c"
                " GROUP BY event_id"
            ),
            {"c": consumer},
        )
        return {row[0]: row[1] for row in rows}


async def applied_order(engine: AsyncEngine, consumer: str) -> dict[str, list[int]]:
    """Each aggregate's positions in the order the consumer applied them."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT aggregate_id, position FROM {SCHEMA}.effects WHERE consumer = :c"
                " ORDER BY applied"
            ),
            {"c": consumer},
        )
        order: dict[str, list[int]] = {}
        for aggregate_id, position in rows:
            order.setdefault(aggregate_id, []).append(position)
        return order


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            text(f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL")
        )
        return int(value or 0)


async def stream_messages(js: JetStreamContext, stream: str = "AUTH") -> list[Any]:
    info = await js.stream_info(stream)
    return [await js.get_msg(stream, seq=seq) for seq in range(1, info.state.last_seq + 1)]


def relay_for(database_url: str, nats: str | NatsClient, **options: Any) -> OutboxRelay:
    options.setdefault("poll_interval", 0.5)
    return OutboxRelay(database_url=database_url, schema=SCHEMA, nats_url=nats, **options)


# ---------------------------------------------------------------------------------------------
# Outbox and relay
# ---------------------------------------------------------------------------------------------


async def test_migration_helpers_create_and_drop_the_tables(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        tables = await conn.scalars(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": SCHEMA},
        )
        assert set(KIT_TABLES) <= set(tables)
        triggers = await conn.scalars(
            text(
                "SELECT trigger_name FROM information_schema.triggers"
                " WHERE event_object_schema = :s"
            ),
            {"s": SCHEMA},
        )
        assert list(triggers) == ["outbox_notify"]

    # The migration and the Table objects are one definition: autogenerate sees no change.
    def differences(connection: Connection) -> list[Any]:
        metadata = MetaData(schema=SCHEMA)
        messaging_tables(metadata)
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, kind, _: kind != "schema" or name == SCHEMA,
                "include_object": lambda obj, name, kind, *_: kind != "table" or name in KIT_TABLES,
                "compare_type": True,
            },
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []

    def drop(connection: Connection) -> None:
        with Operations.context(MigrationContext.configure(connection)):
            drop_outbox_tables(SCHEMA)

    async with engine.begin() as conn:
        await conn.run_sync(drop)
        left = await conn.scalars(
            text(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = :s AND table_name = ANY(:names)"
            ),
            {"s": SCHEMA, "names": list(KIT_TABLES)},
        )
        assert list(left) == []


async def test_record_event_writes_in_the_callers_transaction(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outbox = schema_tables(SCHEMA).outbox
    with request_context("req-42"):
        (event_id,) = await record(sessions, [("u1", 1)])
    async with engine.connect() as conn:
        row = (await conn.execute(outbox.select())).one()
    assert row.id == event_id
    assert event_id.version == 7
    assert row.message_type == "huntaze.auth.v1.UserRegistered"
    assert row.headers == {Headers.REQUEST_ID: "req-42"}
    assert row.creator_id == "creator-u1"
    assert row.published_at is None
    assert UserRegistered.FromString(row.payload).user_id == "u1"


async def test_record_events_writes_many_in_order_each_with_its_request_id(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outbox = schema_tables(SCHEMA).outbox
    events = [
        OutboxEvent(
            SUBJECT,
            UserRegistered(user_id="u1", name=str(n)),
            "user",
            "u1",
            creator_id="creator-u1",
            request_id=f"req-{n}" if n else None,
        )
        for n in range(3)
    ]
    async with sessions() as session:
        assert await record_events(session, schema=SCHEMA, events=[]) == []
        with request_context("req-current"):
            ids = await record_events(session, schema=SCHEMA, events=events)
        await session.rollback()  # nothing of it stays
    async with engine.connect() as conn:
        assert (await conn.execute(outbox.select())).all() == []
    async with sessions() as session:
        with request_context("req-current"):
            ids = await record_events(session, schema=SCHEMA, events=events)
        await session.commit()
    async with engine.connect() as conn:
        rows = (await conn.execute(outbox.select().order_by(outbox.c.seq))).all()
    assert [row.id for row in rows] == ids
    assert [UserRegistered.FromString(row.payload).name for row in rows] == ["0", "1", "2"]
    assert [row.headers[Headers.REQUEST_ID] for row in rows] == ["req-current", "req-1", "req-2"]
    assert {row.aggregate_id for row in rows} == {"u1"}


async def test_events_of_a_rolled_back_transaction_are_never_published(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    await record(sessions, [("gone", 1), ("gone", 2)], commit=False)
    (kept,) = await record(sessions, [("kept", 1)])
    relay = relay_for(database_url, nc)
    async with running(relay):
        await eventually(lambda: relay.published == 1, what="the committed event")
        await asyncio.sleep(0.3)  # time enough to publish anything else there were
    messages = await stream_messages(nc.jetstream())
    assert [m.headers[Headers.EVENT_ID] for m in messages] == [str(kept)]
    assert relay.published == 1
    assert await unpublished(engine) == 0


async def test_events_committed_while_no_relay_runs_are_published_when_one_starts(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    ids = await record(sessions, [(f"u{i}", 1) for i in range(10)])
    consumer = make_consumer(nc, sessions, "test-effects")
    relay = relay_for(database_url, nc, retention=timedelta(0))
    async with running(relay, consumer):
        await eventually(lambda: consumer.processed == 10, what="10 events applied")
        assert await relay.cleanup() == 10  # retention 0: every published row goes
    assert await effect_counts(engine, "test-effects") == dict.fromkeys(ids, 1)
    messages = await stream_messages(nc.jetstream())
    headers = messages[0].headers
    assert headers[Headers.MSG_ID] == headers[Headers.EVENT_ID] == str(ids[0])
    assert headers[Headers.EVENT_TYPE] == "huntaze.auth.v1.UserRegistered"
    assert headers[Headers.CREATOR_ID] == "creator-u0"
    assert headers[Headers.AGGREGATE_ID] == "u0"
    assert Headers.OCCURRED_AT in headers


async def test_per_aggregate_order_holds_with_two_relays(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    aggregates = [f"agg{i}" for i in range(12)]
    per_aggregate = 20
    relays = [relay_for(database_url, nc, batch_size=7, name=f"relay-{n}") for n in (1, 2)]
    async with running(*relays):
        # Each transaction writes two consecutive events for each of three aggregates.
        for position in range(0, per_aggregate, 2):
            for start in range(0, len(aggregates), 3):
                group = aggregates[start : start + 3]
                await record(sessions, [(a, p) for a in group for p in (position, position + 1)])
        total = len(aggregates) * per_aggregate
        await eventually(
            lambda: sum(r.published for r in relays) >= total, what="every event published"
        )
    assert await unpublished(engine) == 0
    messages = await stream_messages(nc.jetstream())
    assert len(messages) == total
    assert len({m.headers[Headers.EVENT_ID] for m in messages}) == total
    seen: dict[str, list[int]] = {}
    for message in messages:
        event = UserRegistered.FromString(message.data)
        seen.setdefault(event.user_id, []).append(int(event.name))
    assert seen == {a: list(range(per_aggregate)) for a in aggregates}
    assert all(r.published > 0 for r in relays), [r.published for r in relays]


class CrashBeforeMark(OutboxRelay):
    """Publishes, then hangs before marking: the test kills it there, as a crash would."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.reached_mark = asyncio.Event()

    async def _mark(self, conn: asyncpg.Connection, result: PublishResult) -> None:
        self.reached_mark.set()
        await asyncio.Event().wait()


async def test_a_crash_between_publish_and_mark_is_deduplicated(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    ids = await record(sessions, [(f"u{i}", 1) for i in range(5)])
    consumer = make_consumer(nc, sessions, "test-effects")
    async with running(consumer):
        doomed = CrashBeforeMark(database_url=database_url, schema=SCHEMA, nats_url=nc)
        task = asyncio.create_task(doomed.run())
        await asyncio.wait_for(doomed.reached_mark.wait(), 20)
        task.cancel()  # the process dies: its transaction never commits
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert await unpublished(engine) == 5

        relay = relay_for(database_url, nc)
        async with running(relay):
            await eventually(lambda: relay.published == 5, what="the republish")
            await eventually(lambda: consumer.processed == 5, what="5 events applied")
    assert relay.duplicates == 5  # JetStream recognised every copy
    assert len(await stream_messages(nc.jetstream())) == 5
    assert await effect_counts(engine, "test-effects") == dict.fromkeys(ids, 1)
    assert await unpublished(engine) == 0


async def test_an_unpublishable_event_backs_off_and_holds_back_its_aggregate(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    # No stream stores `orphan.>` yet: publishing fails until one does.
    (first,) = await record(sessions, [("stuck", 1)], subject="orphan.user.registered")
    (second,) = await record(sessions, [("stuck", 2)])
    (other,) = await record(sessions, [("free", 1)])
    relay = relay_for(database_url, nc, ack_timeout=1.0, retry_base=0.3, retry_max=0.5)
    outbox = schema_tables(SCHEMA).outbox
    async with running(relay):
        await eventually(lambda: relay.failed >= 1, what="a failed publish")
        await eventually(lambda: relay.published == 1, what="the free aggregate")
        async with engine.connect() as conn:
            rows = {r.id: r for r in await conn.execute(outbox.select())}
        assert rows[first].attempts >= 1
        assert rows[first].last_error
        assert rows[second].published_at is None  # waits behind the failed one
        assert rows[other].published_at is not None

        orphan = StreamSpec("ORPHAN", ("orphan.>",), "test stream")
        await ensure_streams(nc.jetstream(), (orphan,))
        await eventually(lambda: relay.published == 3, what="the held-back events")
    assert await unpublished(engine) == 0
    auth_ids = [m.headers[Headers.EVENT_ID] for m in await stream_messages(nc.jetstream())]
    assert auth_ids == [str(second), str(other)] or auth_ids == [str(other), str(second)]


async def test_listen_notify_wakes_the_relay_and_survives_a_lost_connection(
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    relay = relay_for(database_url, nc, poll_interval=30.0, name="relay-listen")
    async with running(relay):
        await asyncio.wait_for(relay.wait_listening(), 10)
        await asyncio.sleep(0.2)  # let the first (empty) cycle pass

        async def latency(expected: int) -> float:
            await record(sessions, [("u", expected)])
            committed = time.monotonic()
            await eventually(lambda: relay.published == expected, timeout=5, what="wake-up")
            return time.monotonic() - committed

        first = await latency(1)

        conn = await asyncpg.connect(libpq_url(database_url))
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                "relay-listen-listen",
            )
        finally:
            await conn.close()
        assert killed == 1
        await eventually(lambda: not relay.listening, timeout=5, what="the loss")
        await asyncio.wait_for(relay.wait_listening(), 10)
        await asyncio.sleep(0.2)
        second = await latency(2)
    assert first < 1.0, first
    assert second < 1.0, second


async def test_events_flow_through_a_nats_restart(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    embedded_nats: Any,
) -> None:
    url = embedded_nats.url
    consumer_nc = await connect_nats(url, name="restart-consumer", reconnect_time_wait=0.2)
    try:
        await ensure_streams(consumer_nc.jetstream(), STREAMS)
        consumer = make_consumer(consumer_nc, sessions, "test-effects", batch=32)
        relay = relay_for(database_url, url, ack_timeout=1.0, retry_base=0.2, retry_max=1.0)
        ids: list[uuid.UUID] = []

        async def produce() -> None:
            for i in range(80):
                ids.extend(await record(sessions, [(f"u{i % 7}", i), (f"v{i % 5}", i)]))
                await asyncio.sleep(0.01)

        async with running(relay, consumer):
            producing = asyncio.create_task(produce())
            await asyncio.sleep(0.3)
            await asyncio.to_thread(embedded_nats.restart)  # events keep being committed
            await producing
            await eventually(
                lambda: consumer.processed == len(ids), timeout=45, what="every event applied"
            )
            await asyncio.sleep(0.3)
        counts = await effect_counts(engine, "test-effects")
        assert counts == dict.fromkeys(ids, 1)
        assert await unpublished(engine) == 0
        assert consumer.dead_lettered == 0
        assert await list_dead_letters(consumer_nc.jetstream()) == []
    finally:
        await consumer_nc.close()


# ---------------------------------------------------------------------------------------------
# Consumers and dead letters
# ---------------------------------------------------------------------------------------------


async def publish_event(
    js: JetStreamContext,
    event_id: uuid.UUID,
    *,
    aggregate_id: str = "u1",
    position: int = 1,
    msg_id: str | None = None,
    request_id: str | None = None,
    ordered: bool = False,
) -> None:
    """Publishes a UserRegistered; `ordered` names its aggregate in the headers, as the outbox
    relay does, so the consumer keeps the aggregate's events in order."""
    headers = {
        Headers.MSG_ID: msg_id or str(event_id),
        Headers.EVENT_ID: str(event_id),
        Headers.EVENT_TYPE: UserRegistered.DESCRIPTOR.full_name,
    }
    if request_id:
        headers[Headers.REQUEST_ID] = request_id
    if ordered:
        headers[Headers.AGGREGATE_TYPE] = "user"
        headers[Headers.AGGREGATE_ID] = aggregate_id
    payload = UserRegistered(user_id=aggregate_id, name=str(position)).SerializeToString()
    await js.publish(SUBJECT, payload, headers=headers)


async def test_a_duplicate_delivery_applies_the_effect_once(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    js = nc.jetstream()
    event_id = uuid.uuid4()
    # Two copies that JetStream cannot recognise (different Nats-Msg-Id): the inbox must.
    await publish_event(js, event_id, msg_id="copy-1")
    await publish_event(js, event_id, msg_id="copy-2")
    consumer = make_consumer(nc, sessions, "test-effects")
    async with running(consumer):
        await eventually(lambda: consumer.processed + consumer.duplicates == 2, what="2 copies")
    assert (consumer.processed, consumer.duplicates) == (1, 1)
    assert await effect_counts(engine, "test-effects") == {event_id: 1}


async def test_a_transient_handler_failure_is_retried_until_it_succeeds(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    effects = effect_handler("test-flaky")
    event_id = uuid.uuid4()
    seen: list[tuple[int, str | None]] = []

    async def flaky(session: AsyncSession, event: ReceivedEvent) -> None:
        await effects(session, event)  # written, then taken back by the failure below
        if event.event_id == event_id:
            seen.append((event.delivery_count, current_request_id()))
            if event.delivery_count < 3:
                raise ConnectionError("the mail server is down")

    # Its neighbours arrive in the same batch and must not be disturbed by its failures.
    before, after = uuid.uuid4(), uuid.uuid4()
    js = nc.jetstream()
    await publish_event(js, before, position=1)
    await publish_event(js, event_id, position=2, request_id="req-7")
    await publish_event(js, after, position=3)
    consumer = make_consumer(nc, sessions, "test-flaky", flaky, backoff=[0.05])
    async with running(consumer):
        await eventually(lambda: consumer.processed == 3, what="the third delivery")
    assert seen == [(1, "req-7"), (2, "req-7"), (3, "req-7")]
    assert consumer.retried == 2
    assert consumer.dead_lettered == 0
    assert await effect_counts(engine, "test-flaky") == dict.fromkeys([before, event_id, after], 1)


async def test_a_poison_message_is_dead_lettered_listed_and_replayed(
    nats_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    js = nc.jetstream()
    broken = {"yes": True}
    effects = effect_handler("test-picky")

    async def picky(session: AsyncSession, event: ReceivedEvent) -> None:
        if broken["yes"]:
            raise ValueError("cannot handle\nthis one")
        await effects(session, event)

    picky_consumer = make_consumer(nc, sessions, "test-picky", picky, max_deliver=3, backoff=[0.05])
    healthy = make_consumer(nc, sessions, "test-healthy")
    event_id = uuid.uuid4()
    await publish_event(js, event_id)
    async with running(picky_consumer, healthy):
        await eventually(lambda: picky_consumer.dead_lettered == 1, what="the dead letter")
        await eventually(lambda: healthy.processed == 1, what="the healthy consumer")

        (letter,) = await list_dead_letters(js)
        assert letter.consumer == "test-picky"
        assert letter.original_subject == SUBJECT
        assert letter.event_id == str(event_id)
        assert letter.deliveries == 3
        assert letter.error == "ValueError: cannot handle this one"
        assert await list_dead_letters(js, consumer="test-healthy") == []

        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "huntaze_kit.dlq",
            "list",
            "--json",
            "--nats-url",
            nats_url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 0
        listed = [orjson.loads(line) for line in out.splitlines() if line.startswith(b"{")]
        assert [(item["seq"], item["consumer"]) for item in listed] == [(letter.seq, "test-picky")]

        broken["yes"] = False
        ack = await replay(js, letter.seq)
        assert ack.stream == "AUTH"
        await eventually(lambda: picky_consumer.processed == 1, what="the replay applied")
        await eventually(lambda: healthy.duplicates == 1, what="the replay skipped")
        assert await list_dead_letters(js) == []

        # No event id at all: dead-lettered on the first delivery.
        await js.publish(SUBJECT, b"garbage", headers={Headers.MSG_ID: "garbage-1"})
        await eventually(lambda: healthy.dead_lettered == 1, what="the garbage")
        await eventually(lambda: picky_consumer.dead_lettered == 2, what="the garbage")
    (garbage,) = await list_dead_letters(js, consumer="test-healthy")
    assert garbage.deliveries == 1
    assert "Huntaze-Event-Id" in (garbage.error or "")
    assert await purge(js, consumer="test-healthy") == 1
    assert [letter.consumer for letter in await list_dead_letters(js)] == ["test-picky"]
    assert await purge(js) == 1
    assert await list_dead_letters(js) == []
    assert await effect_counts(engine, "test-picky") == {event_id: 1}
    assert await effect_counts(engine, "test-healthy") == {event_id: 1}


async def test_a_batch_handler_applies_a_chunk_at_once_and_isolates_a_poison_event(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    effects = effect_handler("test-batch")
    poison = uuid.uuid4()
    calls: list[list[uuid.UUID]] = []

    async def apply_all(session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        calls.append([event.event_id for event in events])
        for event in events:
            await effects(session, event)  # written, then taken back if a later one fails
            if event.event_id == poison:
                raise ValueError("cannot handle this one")

    def batch_consumer() -> EventConsumer:
        return EventConsumer(
            nats=nc,
            session_factory=sessions,
            schema=SCHEMA,
            durable="test-batch",
            stream="AUTH",
            filter_subjects=[SUBJECT],
            batch_handler=apply_all,
            max_deliver=2,
            backoff=[0.05],
            fetch_wait=1.0,
        )

    js = nc.jetstream()
    ids = [uuid.uuid4() for _ in range(5)]
    ids[2] = poison
    for position, event_id in enumerate(ids):
        await publish_event(js, event_id, position=position)
    # A second copy in the same fetch is recognised before the batch handler sees it.
    await publish_event(js, ids[0], position=0, msg_id="copy")
    consumer = batch_consumer()
    async with running(consumer):
        await eventually(lambda: consumer.dead_lettered == 1, what="the poison dead-lettered")
        await eventually(lambda: consumer.processed == 4, what="the four healthy events")
    assert consumer.duplicates == 1
    # The whole chunk in one call, which failed; then one call per event; then the poison
    # alone, redelivered, until it is dead-lettered.
    assert calls == [ids, *([event_id] for event_id in ids), [poison]]
    healthy = [event_id for event_id in ids if event_id != poison]
    assert await effect_counts(engine, "test-batch") == dict.fromkeys(healthy, 1)

    # Healthy events fetched together are applied by one call.
    calls.clear()
    more = [uuid.uuid4() for _ in range(4)]
    for position, event_id in enumerate(more):
        await publish_event(js, event_id, position=position)
    again = batch_consumer()
    async with running(again):
        await eventually(lambda: again.processed == 4, what="the next four")
    assert calls == [more]
    assert await effect_counts(engine, "test-batch") == dict.fromkeys(healthy + more, 1)


def test_a_consumer_needs_a_handler(
    sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    with pytest.raises(ValueError, match="handler"):
        EventConsumer(
            nats=nc,
            session_factory=sessions,
            schema=SCHEMA,
            durable="test-nothing",
            stream="AUTH",
            filter_subjects=[SUBJECT],
        )


async def test_stop_finishes_the_message_in_hand_and_hands_back_the_rest(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    js = nc.jetstream()
    ids = [uuid.uuid4() for _ in range(3)]
    for position, event_id in enumerate(ids):
        await publish_event(js, event_id, position=position)
    effects = effect_handler("test-effects")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(session: AsyncSession, event: ReceivedEvent) -> None:
        entered.set()
        await release.wait()
        await effects(session, event)

    consumer = make_consumer(nc, sessions, "test-effects", slow)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(entered.wait(), 10)
    stopping = asyncio.create_task(consumer.stop(grace=10))
    await asyncio.sleep(0.2)
    assert not stopping.done()  # waits for the message in hand
    release.set()
    await asyncio.wait_for(stopping, 10)
    await asyncio.wait_for(task, 10)
    assert consumer.processed == 1
    assert await effect_counts(engine, "test-effects") == {ids[0]: 1}

    # The other two were handed back: redelivered at once, not after ack_wait (30 s).
    again = make_consumer(nc, sessions, "test-effects")
    started = time.monotonic()
    async with running(again):
        await eventually(lambda: again.processed == 2, timeout=10, what="the rest")
    assert time.monotonic() - started < 5
    assert again.duplicates == 0
    assert await effect_counts(engine, "test-effects") == dict.fromkeys(ids, 1)


async def test_streams_are_declared_idempotently(nc: NatsClient) -> None:
    js = nc.jetstream()
    await ensure_streams(js, STREAMS)  # the fixture already did once
    for spec in STREAMS:
        info = await js.stream_info(spec.name)
        assert info.config.subjects == list(spec.subjects)
        assert info.config.duplicate_window == 3600
        assert info.config.storage == "file"


# ---------------------------------------------------------------------------------------------
# Schema upgrades, order across failures, effects, outages and stuck outbox rows
# ---------------------------------------------------------------------------------------------


async def test_the_upgrade_from_the_first_shape_keeps_every_row(engine: AsyncEngine) -> None:
    def run(statements: Callable[[str], list[Any]]) -> Callable[[Connection], None]:
        def apply(connection: Connection) -> None:
            for statement in statements(SCHEMA):
                connection.execute(statement)

        return apply

    async with engine.begin() as conn:
        await conn.run_sync(run(downgrade_messaging_ddl))
        await conn.execute(
            text(f"INSERT INTO {SCHEMA}.inbox (consumer, event_id) VALUES ('c', :id)"),
            {"id": uuid.UUID(int=7)},
        )
    async with engine.begin() as conn:
        await conn.run_sync(run(upgrade_messaging_ddl))
    async with engine.begin() as conn:
        await conn.run_sync(run(upgrade_messaging_ddl))  # a current schema stays as it is
    async with engine.connect() as conn:
        kept = await conn.scalars(text(f"SELECT event_id FROM {SCHEMA}.processed_events"))
        assert list(kept) == [uuid.UUID(int=7)]
    await test_migration_helpers_create_and_drop_the_tables(engine)


async def test_a_failed_event_holds_back_the_later_events_of_its_aggregate(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    effects = effect_handler("test-order")
    failures: dict[str, int] = {}

    async def fussy(session: AsyncSession, event: ReceivedEvent) -> None:
        message = event.parse(UserRegistered)
        key = f"{message.user_id}{message.name}"
        if key == "c1" or (key == "a2" and failures.get(key, 0) < 2):
            failures[key] = failures.get(key, 0) + 1
            raise ValueError(f"{key} fails")
        await effects(session, event)

    sequence = [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("c", 1), ("a", 4), ("c", 2)]
    sequence.append(("b", 3))
    js = nc.jetstream()
    for aggregate_id, position in sequence:
        await publish_event(
            js, uuid.uuid4(), aggregate_id=aggregate_id, position=position, ordered=True
        )
    consumer = make_consumer(nc, sessions, "test-order", fussy, max_deliver=3, backoff=[0.2])
    async with running(consumer):
        await eventually(lambda: consumer.processed == 8, what="every healthy event")
        await eventually(lambda: consumer.dead_lettered == 1, what="c1 dead-lettered")
    assert await applied_order(engine, "test-order") == {
        "a": [1, 2, 3, 4],
        "b": [1, 2, 3],
        "c": [2],  # after c1 gave up
    }
    assert failures == {"a2": 2, "c1": 3}
    assert consumer.deferred >= 3  # a3, a4 and c2 waited at least once
    (letter,) = await list_dead_letters(js)
    assert letter.deliveries == 3


async def test_an_effect_happens_once_although_the_commit_failed_after_it(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    async with engine.begin() as conn:
        # Checked at COMMIT only: two equal rows make the whole transaction fail there.
        await conn.execute(
            text(
                f"CREATE TABLE {SCHEMA}.commit_trap (id int,"
                " CONSTRAINT commit_trap_once UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    ledger = EffectLedger(session_factory=sessions, schema=SCHEMA, consumer="test-effects")
    effects = effect_handler("test-effects")
    sent: list[uuid.UUID] = []
    refused: set[uuid.UUID] = set()
    trap = {"armed": True}
    js = nc.jetstream()
    ids = [uuid.uuid4() for _ in range(5)]

    async def send(event_id: uuid.UUID) -> None:
        if event_id == ids[3] and event_id not in refused:
            refused.add(event_id)
            raise ConnectionError("the mail server refused the connection")  # not sent
        sent.append(event_id)

    async def notify(session: AsyncSession, event: ReceivedEvent) -> None:
        await ledger.once(
            event_id=event.event_id, effect="notify", action=lambda: send(event.event_id)
        )
        await effects(session, event)
        if trap["armed"]:
            trap["armed"] = False
            await session.execute(text(f"INSERT INTO {SCHEMA}.commit_trap VALUES (1), (1)"))

    for position, event_id in enumerate(ids):
        await publish_event(js, event_id, position=position)
    consumer = make_consumer(nc, sessions, "test-effects", notify, backoff=[0.05])
    async with running(consumer):
        await eventually(lambda: consumer.processed == 5, what="every event applied")
    assert consumer.outage_pauses == 1  # the failed commit, retried as a whole
    assert sorted(sent) == sorted(ids)  # each once: the retry found the ledger's rows
    assert refused == {ids[3]}  # its effect failed, was withdrawn, and went out on the retry
    assert await effect_counts(engine, "test-effects") == dict.fromkeys(ids, 1)
    async with engine.connect() as conn:
        completed = await conn.scalar(
            text(f"SELECT count(*) FROM {SCHEMA}.effect_ledger WHERE completed_at IS NOT NULL")
        )
    assert completed == 5
    # The history goes after the retention: 5 applied events and their 5 effects (the one
    # failure count went when its event was applied).
    forgetful = make_consumer(nc, sessions, "test-effects", processed_retention=timedelta(0))
    assert await forgetful.cleanup_history() == 10


async def outbox_cli(database_url: str, *args: str) -> tuple[int, bytes]:
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "huntaze_kit.dlq",
        "outbox",
        *args,
        "--schema",
        SCHEMA,
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(cli.communicate(), 30)
    assert cli.returncode is not None
    return cli.returncode, out


async def test_an_unpublishable_row_is_surfaced_then_parked_and_retried_by_an_operator(
    database_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    nc: NatsClient,
) -> None:
    (stuck,) = await record(sessions, [("stuck", 1)], subject="orphan.user.registered")
    (behind,) = await record(sessions, [("stuck", 2)])
    relay = relay_for(
        database_url, nc, ack_timeout=0.5, retry_base=0.1, retry_max=0.2, stuck_after=2
    )
    async with running(relay):
        await eventually(lambda: relay.failed >= 2, what="two failed attempts")
        backlog = await relay.backlog()
        assert (backlog.pending, backlog.stuck, backlog.parked) == (2, 1, 0)
        assert REGISTRY.get_sample_value("huntaze_outbox_stuck_rows", {"schema": SCHEMA}) == 1

        code, out = await outbox_cli(database_url, "list", "--json")
        assert code == 0
        (listed,) = [orjson.loads(line) for line in out.splitlines()]
        assert listed["id"] == str(stuck)
        assert listed["attempts"] >= 2
        assert listed["last_error"]
        assert listed["waiting_behind"] == 1
        assert listed["parked_at"] is None

        code, out = await outbox_cli(database_url, "park", str(stuck))
        assert (code, out) == (0, b"parked 1 of 1 row(s)\n")
        attempts = relay.failed
        await asyncio.sleep(1.0)  # retries every 0.2 s at most: none while parked
        assert relay.failed == attempts
        assert relay.published == 0  # the aggregate keeps its order: `behind` waits
        backlog = await relay.backlog()
        assert (backlog.stuck, backlog.parked) == (0, 1)

        await ensure_streams(nc.jetstream(), (StreamSpec("ORPHAN", ("orphan.>",), "test"),))
        code, out = await outbox_cli(database_url, "retry", str(stuck))
        assert (code, out) == (0, b"retried 1 of 1 row(s)\n")
        await eventually(lambda: relay.published == 2, what="both rows, in order")
    assert await unpublished(engine) == 0
    (message,) = await stream_messages(nc.jetstream())
    assert message.headers[Headers.EVENT_ID] == str(behind)
    assert await stuck_rows_of(database_url) == []


async def stuck_rows_of(database_url: str) -> list[Any]:
    code, out = await outbox_cli(database_url, "list", "--json")
    assert code == 0
    return [orjson.loads(line) for line in out.splitlines()]


@pytest.fixture
def stoppable_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test alone, which it may stop and start again."""
    scratch = Path(tempfile.mkdtemp(prefix="huntaze-pg-outage-"))
    try:
        with EmbeddedPostgres(scratch / "data", free_port(), durable=False) as server:
            yield server
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.timeout(120)
async def test_a_postgres_outage_longer_than_the_redelivery_schedule_loses_no_event(
    stoppable_postgres: EmbeddedPostgres, nc: NatsClient
) -> None:
    url = await ensure_database(stoppable_postgres.url, "outage")
    engine = create_engine(url, application_name="outage-test", pool_size=3)
    try:
        await prepare_schema(engine)
        js = nc.jetstream()
        ids: list[uuid.UUID] = []

        async def publish(count: int) -> None:
            for _ in range(count):
                event_id = uuid.uuid4()
                position = len(ids)
                ids.append(event_id)
                await publish_event(
                    js, event_id, aggregate_id=f"a{position % 6}", position=position, ordered=True
                )
                await asyncio.sleep(0.02)

        # Under JetStream's own redelivery the outage below would have spent every delivery:
        # ack_wait 1 s x max_deliver 3, with 0.1 s backoff, is over after about 3.3 s.
        consumer = make_consumer(
            nc,
            session_factory(engine),
            "test-outage",
            max_deliver=3,
            backoff=[0.1],
            ack_wait=1.0,
            outage_backoff=[0.2, 0.5],
            batch=8,
            fetch_wait=0.5,
        )
        async with running(consumer):
            await publish(10)
            await eventually(lambda: consumer.processed == 10, what="the first ten")
            await asyncio.to_thread(stoppable_postgres.stop)
            await publish(20)  # they arrive while PostgreSQL is down
            await asyncio.sleep(6.0)
            await eventually(lambda: consumer.outage_pauses >= 1, what="the pause")
            await asyncio.to_thread(stoppable_postgres.start)
            await publish(10)
            await eventually(
                lambda: consumer.processed == len(ids), timeout=45, what="every event applied"
            )
        assert await effect_counts(engine, "test-outage") == dict.fromkeys(ids, 1)
        order = await applied_order(engine, "test-outage")
        assert all(positions == sorted(positions) for positions in order.values()), order
        assert (consumer.retried, consumer.dead_lettered) == (0, 0)
        assert await list_dead_letters(js) == []
        labels = {"consumer": "test-outage"}
        assert REGISTRY.get_sample_value("huntaze_consumer_outage_pauses_total", labels) >= 1
        assert REGISTRY.get_sample_value("huntaze_consumer_processed_total", labels) == len(ids)
        assert REGISTRY.get_sample_value("huntaze_consumer_handler_failures_total", labels) == 0
        assert REGISTRY.get_sample_value("huntaze_consumer_paused", labels) == 0
        info = await js.consumer_info("AUTH", "test-outage")
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
    finally:
        await engine.dispose()


async def test_a_handler_losing_its_database_connection_is_no_failure_of_the_event(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], nc: NatsClient
) -> None:
    effects = effect_handler("test-effects")
    cut = {"done": False}

    async def unlucky(session: AsyncSession, event: ReceivedEvent) -> None:
        if not cut["done"]:
            cut["done"] = True
            # The server ends this very session, as a PostgreSQL restart or failover would.
            await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        await effects(session, event)

    ids = [uuid.uuid4() for _ in range(3)]
    js = nc.jetstream()
    for position, event_id in enumerate(ids):
        await publish_event(js, event_id, position=position)
    consumer = make_consumer(nc, sessions, "test-effects", unlucky, outage_backoff=[0.05])
    async with running(consumer):
        await eventually(lambda: consumer.processed == 3, what="every event applied")
    assert (consumer.outage_pauses, consumer.retried, consumer.dead_lettered) == (1, 0, 0)
    assert await effect_counts(engine, "test-effects") == dict.fromkeys(ids, 1)
    async with engine.connect() as conn:
        assert await conn.scalar(text(f"SELECT count(*) FROM {SCHEMA}.consumer_failures")) == 0
