"""Outbox relay, idempotent consumers and dead letters, against real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from huntaze.auth.v1.events_pb2 import UserRegistered
from huntaze_kit.consumers import EventConsumer, ReceivedEvent
from huntaze_kit.db import create_engine, libpq_url, session_factory
from huntaze_kit.dlq import list_dead_letters, purge, replay
from huntaze_kit.logging import current_request_id, request_context
from huntaze_kit.outbox import (
    OutboxRelay,
    PublishResult,
    create_outbox_tables,
    drop_outbox_tables,
    inbox_table,
    outbox_table,
    record_event,
    schema_tables,
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
SUBJECT = "auth.user.registered"

Handler = Callable[[AsyncSession, ReceivedEvent], Awaitable[None]]


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


def _migrate(connection: Connection) -> None:
    with Operations.context(MigrationContext.configure(connection)):
        create_outbox_tables(SCHEMA)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, application_name="messaging-test", pool_size=5)
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(_migrate)
        await conn.execute(
            text(
                f"CREATE TABLE {SCHEMA}.effects (consumer text NOT NULL, event_id uuid NOT NULL,"
                " aggregate_id text NOT NULL, position int NOT NULL)"
            )
        )
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
        assert {"outbox", "inbox"} <= set(tables)
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
        outbox_table(metadata)
        inbox_table(metadata)
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, kind, _: kind != "schema" or name == SCHEMA,
                "include_object": lambda obj, name, kind, *_: (
                    kind != "table" or name in ("outbox", "inbox")
                ),
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
                " WHERE table_schema = :s AND table_name IN ('outbox', 'inbox')"
            ),
            {"s": SCHEMA},
        )
        assert list(left) == []


async def test_record_event_writes_in_the_callers_transaction(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    outbox, _ = schema_tables(SCHEMA)
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
    outbox, _ = schema_tables(SCHEMA)
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
) -> None:
    headers = {
        Headers.MSG_ID: msg_id or str(event_id),
        Headers.EVENT_ID: str(event_id),
        Headers.EVENT_TYPE: UserRegistered.DESCRIPTOR.full_name,
    }
    if request_id:
        headers[Headers.REQUEST_ID] = request_id
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
