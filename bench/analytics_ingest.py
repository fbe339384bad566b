"""Analytics ingest through NATS: the analytics process (a child process, as deployed) taking
CRM events (purchases, fan messages, replies, new fans) from JetStream into the events table
and the rollups.

    python bench/analytics_ingest.py [--events 50000] [--creators 100] [--fans 500]
                                     [--rate 1000] [--duration 20]

1. Sustained ingest: `--events` events are published first, then the process starts and drains
   them; events/s from its first stored event to its last (goal: at least 5,000 on these
   2-core machines). Beside it, in the same run, the bare pipeline: a JetStream pull consumer
   in this process storing the same messages (id, subject, payload) in a plain table, a batch
   per statement, with no rollup at all: the ratio is the figure that holds across machines.
2. Purchase -> dashboard lag: with `--rate` events/s of background load for `--duration`
   seconds, a purchase of a probe creator is published every 200 ms and the probe's revenue of
   today is read (the dashboard's own read) until it shows; p50/p99 of the lag.

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from _support import Child, infrastructure, percentile, spawn, wait_until
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig

from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze_analytics.models import SCHEMA
from huntaze_analytics.server import MIGRATIONS_PACKAGE
from huntaze_devstack.embedded import drop_database, ensure_database, free_port
from huntaze_kit.db import libpq_url
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.streams import Headers, connect_nats, context_stream, ensure_streams

CRM = context_stream("crm")
PAYLOADS = 5000


class Events:
    """A pool of CRM events of `creators` creators with `fans` fans each (payloads are reused:
    analytics reads them, it does not need them unique), published with fresh event ids."""

    def __init__(self, creators: int, fans: int) -> None:
        rng = random.Random(11)
        now = datetime.now(UTC)
        self.creators = [str(uuid.uuid4()) for _ in range(creators)]
        self.pool: list[tuple[str, str, str, bytes]] = []
        for _ in range(PAYLOADS):
            creator = rng.choice(self.creators)
            fan = str(uuid.UUID(int=rng.getrandbits(128) % (fans * creators) + 1))
            roll = rng.random()
            message: Any
            if roll < 0.05:
                fan_message = crm_pb2.Fan(
                    id=fan, platform=crm_pb2.PLATFORM_ONLYFANS, display_name="Fan",
                    subscription_state=crm_pb2.SUBSCRIPTION_STATE_ACTIVE,
                )  # fmt: skip
                fan_message.created_at.FromDatetime(now)
                message, subject = (
                    crm_events.FanCreated(creator_id=creator, fan=fan_message),
                    ("crm.fan.created"),
                )
            elif roll < 0.45:
                purchase = crm_pb2.Purchase(
                    id=str(uuid.uuid4()), fan_id=fan, platform=crm_pb2.PLATFORM_ONLYFANS,
                    kind=crm_pb2.PURCHASE_KIND_TIP, amount_cents=rng.randrange(100, 5000),
                )  # fmt: skip
                purchase.occurred_at.FromDatetime(now)
                message = crm_events.PurchaseRecorded(creator_id=creator, purchase=purchase)
                subject = "crm.purchase.recorded"
            else:
                inbound = roll < 0.8
                body = crm_pb2.Message(
                    id=str(uuid.uuid4()), conversation_id=fan, fan_id=fan,
                    direction=(
                        crm_pb2.MESSAGE_DIRECTION_IN if inbound else crm_pb2.MESSAGE_DIRECTION_OUT
                    ),
                )  # fmt: skip
                body.created_at.FromDatetime(now)
                if inbound:
                    message = crm_events.MessageReceived(creator_id=creator, message=body)
                    subject = "crm.message.received"
                else:
                    body.sent_at.FromDatetime(now)
                    message = crm_events.MessageSent(creator_id=creator, message=body)
                    subject = "crm.message.sent"
            self.pool.append(
                (subject, creator, message.DESCRIPTOR.full_name, message.SerializeToString())
            )
        self.next = 0

    async def publish(self, js: Any, count: int) -> list[Any]:
        futures = []
        for _ in range(count):
            subject, creator, message_type, payload = self.pool[self.next % PAYLOADS]
            self.next += 1
            event_id = str(uuid.uuid4())
            futures.append(
                await js.publish_async(
                    subject,
                    payload,
                    headers={
                        Headers.MSG_ID: event_id,
                        Headers.EVENT_ID: event_id,
                        Headers.EVENT_TYPE: message_type,
                        Headers.CREATOR_ID: creator,
                        Headers.AGGREGATE_TYPE: "fan",
                        Headers.AGGREGATE_ID: creator,
                    },
                )
            )
        return futures


async def stored(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.events"))


async def sustained(
    pool: asyncpg.Pool, child: Child, total: int, within: float = 600.0
) -> tuple[float, float]:
    """(events/s from the first stored event to the last, seconds taken)."""
    first_seen: tuple[float, int] | None = None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"analytics exited:\n{child.tail()}")
        count = await stored(pool)
        now = time.perf_counter()
        if count and first_seen is None:
            first_seen = (now, count)
        if count >= total and first_seen is not None:
            took = now - first_seen[0]
            return (count - first_seen[1]) / took if took else float("inf"), took
        await asyncio.sleep(0.1)
    raise RuntimeError("analytics did not store every event in time")


async def bare_pipeline(nc: NatsClient, pool: asyncpg.Pool, total: int) -> float:
    """Messages/s of a pull consumer storing id, subject and payload, a batch per statement."""
    js = nc.jetstream()
    await pool.execute(
        "CREATE TABLE bench_bare (event_id uuid PRIMARY KEY, subject text, payload bytea)"
    )
    await js.add_consumer(
        CRM.name,
        ConsumerConfig(durable_name="bench-bare", ack_policy=AckPolicy.EXPLICIT),
    )
    subscription = await js.pull_subscribe_bind("bench-bare", stream=CRM.name)
    done = 0
    started = time.perf_counter()
    try:
        while done < total:
            messages = await subscription.fetch(256, timeout=5)
            await pool.execute(
                "INSERT INTO bench_bare SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[])"
                " ON CONFLICT DO NOTHING",
                [m.headers[Headers.EVENT_ID] for m in messages],  # type: ignore[index]
                [m.subject for m in messages],
                [m.data for m in messages],
            )
            for message in messages:
                await message.ack()
            done += len(messages)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    return done / (time.perf_counter() - started)


async def lag_at_rate(
    js: Any, pool: asyncpg.Pool, events: Events, rate: int, duration: float
) -> tuple[list[float], float]:
    """Probe lags (ms) with `rate` events/s of load, and the rate achieved."""
    probe = str(uuid.uuid4())
    today = date.today()
    published = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal published
        tick = 0.02
        began = time.perf_counter()
        while not stop.is_set():
            due = int((time.perf_counter() - began) * rate) - published
            if due > 0:
                await asyncio.gather(*await events.publish(js, due))
                published += due
            await asyncio.sleep(tick)

    async def revenue() -> int:
        value = await pool.fetchval(
            f"SELECT coalesce(sum(revenue_cents), 0) FROM {SCHEMA}.daily_rollups"
            " WHERE creator_id = $1 AND day >= $2",
            uuid.UUID(probe),
            today,
        )
        return int(value)

    loader = asyncio.create_task(load())
    lags = []
    began = time.perf_counter()
    try:
        seen = 0
        while time.perf_counter() - began < duration:
            purchase = crm_pb2.Purchase(
                id=str(uuid.uuid4()), fan_id=str(uuid.uuid4()), kind=crm_pb2.PURCHASE_KIND_TIP,
                platform=crm_pb2.PLATFORM_ONLYFANS, amount_cents=100,
            )  # fmt: skip
            purchase.occurred_at.GetCurrentTime()
            message = crm_events.PurchaseRecorded(creator_id=probe, purchase=purchase)
            event_id = str(uuid.uuid4())
            sent = time.perf_counter()
            await js.publish(
                "crm.purchase.recorded",
                message.SerializeToString(),
                headers={
                    Headers.MSG_ID: event_id,
                    Headers.EVENT_ID: event_id,
                    Headers.EVENT_TYPE: message.DESCRIPTOR.full_name,
                    Headers.CREATOR_ID: probe,
                },
            )
            seen += 100
            await _until(revenue, seen)
            lags.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await loader
    return lags, published / (time.perf_counter() - began)


async def main(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="huntaze-bench-") as scratch,
        infrastructure(Path(scratch)) as (server_url, nats_url),
    ):
        database = f"bench_{uuid.uuid4().hex[:10]}"
        database_url = await ensure_database(server_url, database)
        nc = await connect_nats(nats_url, name="bench-analytics")
        js = nc.jetstream()
        pool = await asyncpg.create_pool(libpq_url(database_url), min_size=1, max_size=4)
        child: Child | None = None
        try:
            for info in await js.streams_info():
                if info.config.name == CRM.name:
                    await js.delete_stream(CRM.name)
            await ensure_streams(js, [CRM])
            await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
            events = Events(args.creators, args.fans)
            began = time.perf_counter()
            await asyncio.gather(*await events.publish(js, args.events))
            print(f"published {args.events:,} events in {time.perf_counter() - began:.1f} s")

            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("HUNTAZE_")},
                "HUNTAZE_DATABASE_URL": database_url,
                "HUNTAZE_NATS_URL": nats_url,
                "HUNTAZE_LOG_LEVEL": "WARNING",
                "HUNTAZE_ANALYTICS_GRPC_PORT": str(free_port()),
                "HUNTAZE_ANALYTICS_METRICS_PORT": str(free_port()),
            }
            child = spawn("analytics", ["-m", "huntaze_analytics.server"], env, Path(scratch))
            rate, took = await sustained(pool, child, args.events)
            cpu = child.cpu_seconds()
            bare = await bare_pipeline(nc, pool, args.events)
            print(f"\nsustained ingest of {args.events:,} CRM events (events table and rollups)")
            print(f"  analytics:     {rate:10,.0f} events/s ({took:.1f} s; goal >= 5,000)")
            print(f"  bare pipeline: {bare:10,.0f} events/s (store only, no rollups)")
            print(f"  ratio: {rate / bare:.2f}x the bare pipeline")
            if cpu is not None:
                print(f"  analytics process CPU: {cpu * 1e6 / args.events:.0f} us per event")

            await wait_until(lambda: _caught_up(pool, args.events), [child])
            lags, achieved = await lag_at_rate(js, pool, events, args.rate, args.duration)
            print(
                f"\npurchase -> dashboard at {achieved:,.0f} events/s of load, {len(lags)} probes"
            )
            print(f"  p50 {percentile(lags, 0.5):.0f} ms, p99 {percentile(lags, 0.99):.0f} ms,"
                  f" max {max(lags):.0f} ms")  # fmt: skip
        finally:
            if child is not None:
                child.stop()
            await pool.close()
            await nc.close()
            await drop_database(server_url, database)


async def _until(read: Any, at_least: int) -> None:
    """Reads every 2 ms until the value reaches `at_least` (the probe's wait)."""
    value = await read()
    while value < at_least:
        await asyncio.sleep(0.002)
        value = await read()


async def _caught_up(pool: asyncpg.Pool, total: int) -> bool:
    return await stored(pool) >= total


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--creators", type=int, default=100)
    parser.add_argument("--fans", type=int, default=500)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20.0)
    uvloop.run(main(parser.parse_args()))
