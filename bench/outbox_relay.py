"""Outbox relay: throughput against raw JetStream publishing, and lag at a fixed event rate.

    python bench/outbox_relay.py [--events 20000] [--rate 1000] [--seconds 10]

Prints, from one run (this machine's speed drifts, so compare figures of the same run):

1. raw `publish_async` msgs/s and relay events/s (rows committed first, then relayed), and
   their ratio; two rounds, interleaved. Goal: ratio >= 0.5.
2. lag at a fixed rate (default 1,000 events/s for 10 s, one event per transaction, written
   with `record_event` in a producer process): commit -> the relay (this process) has the
   PubAck and marked the row, and commit -> handler call in an `EventConsumer` running in a
   third process (its `processed_events` insert included). Goal: p99 <= 100 ms.

Uses HUNTAZE_BENCH_DATABASE_URL and HUNTAZE_BENCH_NATS_URL when set; otherwise starts an
embedded PostgreSQL and NATS in a temporary directory and removes them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from huntaze.auth.v1.events_pb2 import UserRegistered
from huntaze_kit.consumers import EventConsumer, ReceivedEvent
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.logging import configure_logging
from huntaze_kit.outbox import OutboxRecord, OutboxRelay, outbox_ddl, record_event
from huntaze_kit.streams import Headers, StreamSpec, connect_nats, ensure_streams

SCHEMA = "bench_outbox"
STREAM = StreamSpec("BENCH", ("bench.>",), "Outbox relay benchmark.")
RAW_SUBJECT = "bench.raw.published"
EVENT_SUBJECT = "bench.user.registered"
DURABLE = "bench-lag"


# ---------------------------------------------------------------------------------------------
# Infrastructure
# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def infrastructure() -> AsyncIterator[tuple[str, str]]:
    """(database URL, NATS URL): the configured ones, or embedded servers for this run."""
    database_url = os.environ.get("HUNTAZE_BENCH_DATABASE_URL")
    nats_url = os.environ.get("HUNTAZE_BENCH_NATS_URL")
    with contextlib.ExitStack() as stack:
        if not database_url or not nats_url:
            from huntaze_devstack.embedded import (  # noqa: PLC0415
                EmbeddedNats,
                EmbeddedPostgres,
                ensure_database,
                free_port,
            )

            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hz-bench-")))
            if not database_url:
                postgres = EmbeddedPostgres(scratch / "pg", free_port())
                server_url = postgres.start()
                stack.callback(postgres.stop)
                database_url = await ensure_database(server_url, "bench")
            if not nats_url:
                nats_server = EmbeddedNats(scratch / "nats", free_port())
                nats_url = nats_server.start()
                stack.callback(nats_server.stop)
        yield database_url, nats_url


async def prepare(database_url: str, nats_url: str) -> None:
    engine = create_engine(database_url, application_name="bench-setup")
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
            for statement in outbox_ddl(SCHEMA):
                await conn.execute(statement)
    finally:
        await engine.dispose()
    nc = await connect_nats(nats_url, name="bench-setup")
    try:
        js = nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(STREAM.name)
        await ensure_streams(js, (STREAM,))
    finally:
        await nc.close()


async def cleanup(database_url: str, nats_url: str) -> None:
    engine = create_engine(database_url, application_name="bench-cleanup")
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    finally:
        await engine.dispose()
    nc = await connect_nats(nats_url, name="bench-cleanup")
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(STREAM.name)
    finally:
        await nc.close()


def event(i: int) -> UserRegistered:
    return UserRegistered(
        user_id=f"user-{i % 997}", email=f"fan{i}@example.com", name=f"Fan number {i}"
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# ---------------------------------------------------------------------------------------------
# 1. Throughput
# ---------------------------------------------------------------------------------------------


async def raw_publish_rate(nats_url: str, count: int) -> float:
    """Messages/s of bare `publish_async` with the same headers and payloads the relay sends."""
    nc = await connect_nats(nats_url, name="bench-raw")
    try:
        js = nc.jetstream()
        payloads = [event(i).SerializeToString() for i in range(count)]
        ids = [str(uuid.uuid4()) for _ in range(count)]
        started = time.perf_counter()
        futures = []
        for i in range(count):
            futures.append(
                await js.publish_async(
                    RAW_SUBJECT,
                    payloads[i],
                    headers={
                        Headers.MSG_ID: ids[i],
                        Headers.EVENT_ID: ids[i],
                        Headers.EVENT_TYPE: "huntaze.auth.v1.UserRegistered",
                        Headers.OCCURRED_AT: "2026-01-01T00:00:00+00:00",
                        Headers.AGGREGATE_TYPE: "user",
                        Headers.AGGREGATE_ID: f"user-{i % 997}",
                        Headers.CREATOR_ID: "creator",
                    },
                )
            )
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - started)
    finally:
        await nc.close()


async def relay_rate(database_url: str, nats_url: str, count: int) -> float:
    """Events/s of the relay draining `count` rows committed in one transaction."""
    engine = create_engine(database_url, application_name="bench-writer")
    sessions = session_factory(engine)
    done = asyncio.Event()
    published = 0

    def on_published(records: Sequence[OutboxRecord]) -> None:
        nonlocal published
        published += len(records)
        if published >= count:
            done.set()

    relay = OutboxRelay(
        database_url=database_url,
        schema=SCHEMA,
        nats_url=nats_url,
        name="bench-relay",
        on_published=on_published,
    )
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.wait_listening(), 30)
        await asyncio.sleep(0.2)
        async with sessions() as session:
            for i in range(count):
                await record_event(
                    session,
                    schema=SCHEMA,
                    subject=EVENT_SUBJECT,
                    event=event(i),
                    aggregate_type="user",
                    aggregate_id=f"user-{i % 997}",
                    creator_id="creator",
                )
            await session.commit()
        started = time.perf_counter()
        await asyncio.wait_for(done.wait(), 300)
        return count / (time.perf_counter() - started)
    finally:
        await relay.stop()
        await task
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {SCHEMA}.outbox"))
        await engine.dispose()


# ---------------------------------------------------------------------------------------------
# 2. Lag at a fixed rate
# ---------------------------------------------------------------------------------------------


async def consumer_process(database_url: str, nats_url: str, count: int, limit: float) -> None:
    """The receiving side, in its own process: prints `ready`, then one JSON of receipts."""
    engine = create_engine(database_url, application_name="bench-consumer", pool_size=8)
    nc = await connect_nats(nats_url, name="bench-consumer")
    received: dict[str, float] = {}
    complete = asyncio.Event()

    async def handler(session: AsyncSession, incoming: ReceivedEvent) -> None:
        received[str(incoming.event_id)] = time.time()
        if len(received) >= count:
            complete.set()

    consumer = EventConsumer(
        nats=nc,
        session_factory=session_factory(engine),
        schema=SCHEMA,
        durable=DURABLE,
        stream=STREAM.name,
        filter_subjects=[EVENT_SUBJECT],
        handler=handler,
        batch=128,
        concurrency=4,
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), limit)
    await consumer.stop()
    await task
    await nc.close()
    await engine.dispose()
    sys.stdout.write(orjson.dumps(received).decode() + "\n")
    sys.stdout.flush()


async def producer_process(database_url: str, count: int, rate: float) -> None:
    """The writing side, in its own process (a service's request handlers): `count` events at
    `rate` per second, one per transaction; prints one JSON of commit times."""
    engine = create_engine(database_url, application_name="bench-producer", pool_size=8)
    sessions = session_factory(engine)
    committed: dict[str, float] = {}
    writers = 16
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1

    async def writer(offset: int) -> None:
        for i in range(offset, count, writers):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with sessions() as session:
                event_id = await record_event(
                    session,
                    schema=SCHEMA,
                    subject=EVENT_SUBJECT,
                    event=event(i),
                    aggregate_type="user",
                    aggregate_id=f"user-{i}",
                    creator_id="creator",
                )
                await session.commit()
            committed[str(event_id)] = time.time()

    await asyncio.gather(*(writer(k) for k in range(writers)))
    elapsed = loop.time() - start
    await engine.dispose()
    sys.stdout.write(orjson.dumps({"elapsed": elapsed, "committed": committed}).decode() + "\n")
    sys.stdout.flush()


async def child(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE
    )


async def lag_run(database_url: str, nats_url: str, rate: int, seconds: float) -> dict[str, float]:
    """Producer, relay (this process) and consumer in three processes, as in production."""
    count = int(rate * seconds)
    nc = await connect_nats(nats_url, name="bench-lag-setup")
    try:
        await nc.jetstream().purge_stream(STREAM.name)  # only this phase's events
    finally:
        await nc.close()
    consumer = await child("--consumer", database_url, nats_url, str(count), str(seconds + 60))
    assert consumer.stdout is not None
    ready = await asyncio.wait_for(consumer.stdout.readline(), 60)
    if ready.strip() != b"ready":
        raise RuntimeError(f"consumer process failed to start: {ready!r}")

    acked: dict[str, float] = {}

    def on_published(records: Sequence[OutboxRecord]) -> None:
        now = time.time()
        for record in records:
            acked[str(record.id)] = now

    relay = OutboxRelay(
        database_url=database_url,
        schema=SCHEMA,
        nats_url=nats_url,
        name="bench-lag-relay",
        on_published=on_published,
    )
    relay_task = asyncio.create_task(relay.run())
    await asyncio.wait_for(relay.wait_listening(), 30)
    await asyncio.sleep(0.3)

    producer = await child("--producer", database_url, str(count), str(rate))
    produced_out, _ = await asyncio.wait_for(producer.communicate(), seconds + 120)
    produced = orjson.loads(produced_out.splitlines()[-1])
    committed: dict[str, float] = produced["committed"]
    consumed_out, _ = await asyncio.wait_for(consumer.communicate(), seconds + 120)
    received: dict[str, float] = orjson.loads(consumed_out.splitlines()[-1])
    await relay.stop()
    await relay_task

    to_ack = [(acked[k] - t) * 1000 for k, t in committed.items() if k in acked]
    to_consumer = [(received[k] - t) * 1000 for k, t in committed.items() if k in received]
    return {
        "events": count,
        "achieved_rate": count / produced["elapsed"],
        "received": len(to_consumer),
        "ack_p50": percentile(to_ack, 0.50),
        "ack_p99": percentile(to_ack, 0.99),
        "e2e_p50": percentile(to_consumer, 0.50),
        "e2e_p99": percentile(to_consumer, 0.99),
        "e2e_max": max(to_consumer),
    }


# ---------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    configure_logging(service="bench", level="WARNING", fmt="console")
    async with infrastructure() as (database_url, nats_url):
        await prepare(database_url, nats_url)
        try:
            raw: list[float] = []
            relayed: list[float] = []
            for _ in range(args.rounds):
                raw.append(await raw_publish_rate(nats_url, args.events))
                relayed.append(await relay_rate(database_url, nats_url, args.events))
            print(f"throughput, {args.events:,} events a round, {args.rounds} rounds interleaved:")
            for n, (r, e) in enumerate(zip(raw, relayed, strict=True), 1):
                print(f"  round {n}: raw publish_async {r:10,.0f} msgs/s   relay {e:10,.0f} ev/s")
            if raw:
                best_raw, best_relay = max(raw), max(relayed)
                print(
                    f"  best: raw {best_raw:,.0f} msgs/s, relay {best_relay:,.0f} events/s, "
                    f"ratio {best_relay / best_raw:.2f} (goal >= 0.5)"
                )
            lag = await lag_run(database_url, nats_url, args.rate, args.seconds)
            print(
                f"lag at {args.rate:,} events/s for {args.seconds:g} s "
                f"(achieved {lag['achieved_rate']:,.0f}/s, {lag['received']:,.0f} of "
                f"{lag['events']:,.0f} received):"
            )
            print(
                f"  commit -> published and marked:     p50 {lag['ack_p50']:6.1f} ms   "
                f"p99 {lag['ack_p99']:6.1f} ms"
            )
            print(
                f"  commit -> consumer handler (e2e):   p50 {lag['e2e_p50']:6.1f} ms   "
                f"p99 {lag['e2e_p99']:6.1f} ms   max {lag['e2e_max']:.1f} ms (goal p99 <= 100)"
            )
        finally:
            await cleanup(database_url, nats_url)


def child_logging(service: str) -> None:
    configure_logging(service=service, level="WARNING", fmt="console")
    for handler in logging.getLogger().handlers:  # stdout carries the results
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


def cli() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "--consumer":
        database_url, nats_url, count, limit = sys.argv[2:6]
        child_logging("bench-consumer")
        asyncio.run(consumer_process(database_url, nats_url, int(count), float(limit)))
        return
    if role == "--producer":
        database_url, count, rate = sys.argv[2:5]
        child_logging("bench-producer")
        asyncio.run(producer_process(database_url, int(count), float(rate)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events per throughput round")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (0: none)")
    parser.add_argument("--rate", type=int, default=1_000, help="events/s of the lag phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag phase")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
