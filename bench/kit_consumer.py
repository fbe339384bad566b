"""The kit consumer's own cost per event: `EventConsumer` (deduplication, one transaction per
pull, ack after commit) over JetStream with a batch handler that does nothing, as analytics
runs it (pulls and transactions of 1,000).

    python bench/kit_consumer.py [--events 50000]

Prints events/s and the process CPU per event (the figure that holds across machines), then
the CPU the pieces of a message cost on their own: its header block read by nats-py and by the
kit's client (`huntaze_kit.nats_headers`), and `ReceivedEvent.from_msg`. The load average is
printed beside, since these 2-core machines are shared.

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import uvloop
from _support import infrastructure
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from nats.aio.client import Client
from nats.aio.msg import Msg
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze_devstack.embedded import drop_database, ensure_database
from huntaze_kit.consumers import EventConsumer, ReceivedEvent
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.nats_headers import FastHeadersClient
from huntaze_kit.outbox import create_outbox_tables
from huntaze_kit.streams import Headers, connect_nats, context_stream, ensure_streams

STREAM = context_stream("kitbench")
SCHEMA = "kit_bench"
SUBJECT = "kitbench.thing.happened"
PAYLOAD = bytes(120)


def event_headers() -> dict[str, str]:
    """The headers the outbox relay writes on every event."""
    event_id = str(uuid.uuid4())
    return {
        Headers.MSG_ID: event_id,
        Headers.EVENT_ID: event_id,
        Headers.EVENT_TYPE: "huntaze.kitbench.v1.ThingHappened",
        Headers.CREATOR_ID: str(uuid.uuid4()),
        Headers.OCCURRED_AT: "2026-12-01T02:00:00.123456+00:00",
        Headers.AGGREGATE_TYPE: "fan",
        Headers.AGGREGATE_ID: str(uuid.uuid4()),
    }


def header_block(headers: dict[str, str]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


ROUNDS = 20_000


async def per_call(call: Callable[[], object]) -> float:
    """CPU microseconds per call of `call` (and await of what it returns, a coroutine): CPU
    time, since other processes share the cores."""
    began = time.process_time()
    for _ in range(ROUNDS):
        result = call()
        if asyncio.iscoroutine(result):
            await result
    return (time.process_time() - began) * 1e6 / ROUNDS


def _migrate(connection: Connection) -> None:
    with Operations.context(MigrationContext.configure(connection)):
        create_outbox_tables(SCHEMA)


async def consume(database_url: str, nats_url: str, total: int) -> tuple[float, float]:
    """(events/s, process CPU us per event) of the kit consumer from its first applied event
    to its last."""
    engine = create_engine(database_url, application_name="bench-kit-consumer", pool_size=4)
    nc = await connect_nats(nats_url, name="bench-kit-consumer")
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
            await conn.run_sync(_migrate)
        js = nc.jetstream()
        await ensure_streams(js, [STREAM])
        began = time.perf_counter()
        futures = [
            await js.publish_async(SUBJECT, PAYLOAD, headers=event_headers()) for _ in range(total)
        ]
        await asyncio.gather(*futures)
        print(f"published {total:,} events in {time.perf_counter() - began:.1f} s")

        async def nothing(session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
            return None

        consumer = EventConsumer(
            nats=nc,
            session_factory=session_factory(engine),
            schema=SCHEMA,
            durable="bench-kit-consumer",
            stream=STREAM.name,
            filter_subjects=[SUBJECT],
            batch_handler=nothing,
            batch=1000,
            max_per_transaction=1000,
        )
        running = asyncio.create_task(consumer.run())
        # The consumer's counter is polled: it signals nothing per event.
        while consumer.processed == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        first, cpu, wall = consumer.processed, time.process_time(), time.perf_counter()
        while consumer.processed < total:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        applied = consumer.processed - first
        await consumer.stop()
        await running
        return applied / wall, cpu * 1e6 / applied
    finally:
        await nc.close()
        await engine.dispose()


async def main(args: argparse.Namespace) -> None:
    print(f"load average {os.getloadavg()[0]:.2f}")
    with (
        tempfile.TemporaryDirectory(prefix="huntaze-bench-") as scratch,
        infrastructure(Path(scratch)) as (server_url, nats_url),
    ):
        database = f"bench_{uuid.uuid4().hex[:10]}"
        database_url = await ensure_database(server_url, database)
        try:
            rate, cpu = await consume(database_url, nats_url, args.events)
        finally:
            await drop_database(server_url, database)
    print(f"\nkit consumer, {args.events:,} events, a batch handler that does nothing")
    print(f"  {rate:10,.0f} events/s, process CPU {cpu:.1f} us per event")

    headers = event_headers()
    block = header_block(headers)
    plain, fast = Client(), FastHeadersClient()
    # A message of its own per call: nats-py keeps a message's metadata once read.
    messages = iter(
        [
            Msg(
                _client=plain,
                subject=SUBJECT,
                reply=f"$JS.ACK.{STREAM.name}.bench-kit-consumer.1.{seq}.{seq}.1764554400000000000.9",
                data=PAYLOAD,
                headers=headers,
            )
            for seq in range(1, ROUNDS + 1)
        ]
    )
    pieces = {
        "headers read by nats-py": await per_call(lambda: plain._process_headers(block)),
        "headers read by the kit": await per_call(lambda: fast._process_headers(block)),
        "ReceivedEvent.from_msg": await per_call(lambda: ReceivedEvent.from_msg(next(messages))),
    }
    print("\none message's pieces")
    for piece, micros in pieces.items():
        print(f"  {piece + ':':26} {micros:5.1f} us")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    uvloop.run(main(parser.parse_args()))
