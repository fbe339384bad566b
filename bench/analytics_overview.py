"""The analytics overview of one creator with 1,000,000 events and 100,000 fans: its latency
(p50/p95 over repeated reads, as the service answers `GET /api/analytics/overview?period=30d`),
beside the same figures computed by aggregate queries over the raw events, in the same run.

    python bench/analytics_overview.py [--events 1000000] [--fans 100000] [--reads 200]
                                       [--naive-reads 5]

The events are written with COPY into `analytics.events` (a benchmark fixture: the service
takes them from NATS), then the rollups are built by the service's own rebuild, timed (it is
also the rebuild command's throughput). The naive side is the plain relational form a first
implementation would keep (one row per event: type, fan, kind, platform, amount, time) with an
index on (creator, time), filled with the same events, and the same overview figures computed
from it with GROUP BY queries; both answers are checked to agree.

PostgreSQL: `HUNTAZE_BENCH_DATABASE_URL` when set, else an embedded server started here.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from _support import infrastructure, percentile

from huntaze.analytics.v1 import analytics_pb2 as pb
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze_analytics.models import SCHEMA
from huntaze_analytics.server import MIGRATIONS_PACKAGE
from huntaze_analytics.service import AnalyticsService
from huntaze_analytics.summaries import FactsWriter
from huntaze_devstack.embedded import drop_database, ensure_database
from huntaze_kit.db import create_engine, create_read_pool, libpq_url, session_factory
from huntaze_kit.migrations import upgrade_async

DAYS = 120
KINDS = [
    (crm_pb2.PURCHASE_KIND_TIP, "tip"),
    (crm_pb2.PURCHASE_KIND_PPV_UNLOCK, "ppv"),
    (crm_pb2.PURCHASE_KIND_SUBSCRIPTION, "subscription"),
    (crm_pb2.PURCHASE_KIND_RENEWAL, "renewal"),
]
PLATFORMS = [(crm_pb2.PLATFORM_ONLYFANS, "onlyfans"), (crm_pb2.PLATFORM_REDDIT, "reddit")]
NAIVE_TABLE = "bench_raw.events"


def _stamp(message: Any, name: str, when: datetime) -> None:
    getattr(message, name).FromDatetime(when)


def generate(
    creator: uuid.UUID, events: int, fans: int, now: datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(rows for analytics.events, rows for the naive table): fans joining, then purchases,
    fan messages and replies spread over `DAYS` days."""
    rng = random.Random(7)
    fan_ids = [uuid.uuid4() for _ in range(fans)]
    conversations = [uuid.uuid4() for _ in range(fans)]
    stored: list[tuple[Any, ...]] = []
    naive: list[tuple[Any, ...]] = []
    start = now - timedelta(days=DAYS)
    span = int((now - start).total_seconds())

    def add(subject: str, message: Any, when: datetime, row: tuple[Any, ...]) -> None:
        stored.append(
            (
                uuid.uuid4(),
                subject,
                message.DESCRIPTOR.full_name,
                creator,
                "fan",
                "",
                when,
                message.SerializeToString(),
            )
        )
        naive.append((creator, *row, when))

    for index, fan_id in enumerate(fan_ids):
        when = start + timedelta(seconds=span * index // fans)
        fan = crm_pb2.Fan(
            id=str(fan_id),
            platform=crm_pb2.PLATFORM_ONLYFANS,
            display_name=f"Fan {index}",
            subscription_state=crm_pb2.SUBSCRIPTION_STATE_ACTIVE,
        )
        _stamp(fan, "created_at", when)
        created = crm_events.FanCreated(creator_id=str(creator), fan=fan)
        add("crm.fan.created", created, when, (fan_id, "fan", "", "", 0))
    for _ in range(events - fans):
        index = rng.randrange(fans)
        fan_id = fan_ids[index]
        when = now - timedelta(seconds=rng.randrange(span))
        roll = rng.random()
        if roll < 0.45:
            kind, kind_name = rng.choice(KINDS)
            platform, platform_name = PLATFORMS[0] if rng.random() < 0.85 else PLATFORMS[1]
            cents = rng.randrange(100, 5000)
            purchase = crm_pb2.Purchase(
                id=str(uuid.uuid4()),
                fan_id=str(fan_id),
                platform=platform,
                kind=kind,
                amount_cents=cents,
                currency="USD",
            )
            _stamp(purchase, "occurred_at", when)
            event = crm_events.PurchaseRecorded(creator_id=str(creator), purchase=purchase)
            add(
                "crm.purchase.recorded",
                event,
                when,
                (fan_id, "purchase", kind_name, platform_name, cents),
            )
        else:
            inbound = roll < 0.8
            message = crm_pb2.Message(
                id=str(uuid.uuid4()),
                conversation_id=str(conversations[index]),
                fan_id=str(fan_id),
                direction=crm_pb2.MESSAGE_DIRECTION_IN
                if inbound
                else crm_pb2.MESSAGE_DIRECTION_OUT,
                sender_kind=crm_pb2.SENDER_KIND_FAN if inbound else crm_pb2.SENDER_KIND_CREATOR,
                read=True,
            )
            _stamp(message, "created_at", when)
            if inbound:
                received = crm_events.MessageReceived(creator_id=str(creator), message=message)
                add("crm.message.received", received, when, (fan_id, "message_in", "", "", 0))
            else:
                _stamp(message, "sent_at", when)
                sent = crm_events.MessageSent(creator_id=str(creator), message=message)
                add("crm.message.sent", sent, when, (fan_id, "message_out", "", "", 0))
    # The service applies events in the order they were stored; store them as they happened.
    order = sorted(range(len(stored)), key=lambda i: stored[i][6])
    return [stored[i] for i in order], [naive[i] for i in order]


async def load(
    database_url: str, creator: uuid.UUID, events: int, fans: int, now: datetime
) -> None:
    began = time.perf_counter()
    stored, naive = generate(creator, events, fans, now)
    print(f"generated {len(stored):,} events in {time.perf_counter() - began:.1f} s", flush=True)
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        months = sorted({(row[6].year, row[6].month) for row in stored})
        await conn.execute(
            f"SELECT {SCHEMA}.ensure_event_partition(m) FROM unnest($1::timestamptz[]) AS m",
            [datetime(y, m, 1, tzinfo=UTC) for y, m in months],
        )
        began = time.perf_counter()
        await conn.copy_records_to_table(
            "events",
            schema_name=SCHEMA,
            columns=[
                "event_id", "event_type", "message_type", "creator_id", "aggregate_type",
                "aggregate_id", "occurred_at", "payload",
            ],
            records=stored,
        )  # fmt: skip
        await conn.execute("CREATE SCHEMA bench_raw")
        await conn.execute(
            f"CREATE TABLE {NAIVE_TABLE} (creator_id uuid, fan_id uuid, type text, kind text,"
            " platform text, amount_cents int8, occurred_at timestamptz)"
        )
        await conn.copy_records_to_table(
            "events",
            schema_name="bench_raw",
            columns=[
                "creator_id",
                "fan_id",
                "type",
                "kind",
                "platform",
                "amount_cents",
                "occurred_at",
            ],
            records=naive,
        )
        await conn.execute(f"CREATE INDEX ON {NAIVE_TABLE} (creator_id, occurred_at)")
        await conn.execute(f"ANALYZE {NAIVE_TABLE}")
        print(f"copied both forms in {time.perf_counter() - began:.1f} s", flush=True)
    finally:
        await conn.close()


async def naive_overview(
    pool: asyncpg.Pool, creator: uuid.UUID, start: datetime, previous: datetime, now: datetime
) -> dict[str, Any]:
    """The overview's figures by aggregate queries over the raw events."""
    by_kind = await pool.fetch(
        f"SELECT occurred_at >= $2 AS current, kind, sum(amount_cents)::int8, count(*)"
        f" FROM {NAIVE_TABLE} WHERE creator_id = $1 AND type = 'purchase'"
        " AND occurred_at >= $3 AND occurred_at <= $4 GROUP BY 1, 2",
        creator, start, previous, now,
    )  # fmt: skip
    platforms = await pool.fetch(
        f"SELECT platform, sum(amount_cents)::int8, count(*) FROM {NAIVE_TABLE}"
        " WHERE creator_id = $1 AND type = 'purchase' AND occurred_at >= $2"
        " AND occurred_at <= $3 GROUP BY 1",
        creator, start, now,
    )  # fmt: skip
    counts = await pool.fetch(
        f"SELECT occurred_at >= $2 AS current, type, count(*) FROM {NAIVE_TABLE}"
        " WHERE creator_id = $1 AND occurred_at >= $3 AND occurred_at <= $4 GROUP BY 1, 2",
        creator, start, previous, now,
    )  # fmt: skip
    active = await pool.fetchval(
        f"SELECT count(DISTINCT fan_id) FROM {NAIVE_TABLE} WHERE creator_id = $1"
        " AND type IN ('purchase', 'message_in') AND occurred_at >= $2 AND occurred_at <= $3",
        creator, start, now,
    )  # fmt: skip
    top = await pool.fetch(
        f"SELECT fan_id, sum(amount_cents)::int8 FROM {NAIVE_TABLE}"
        " WHERE creator_id = $1 AND type = 'purchase' GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
        creator,
    )
    total = sum(row[2] for row in by_kind if row[0])
    return {
        "revenue": total,
        "previous": sum(row[2] for row in by_kind if not row[0]),
        "platforms": {row[0]: row[1] for row in platforms},
        "messages_in": sum(row[2] for row in counts if row[0] and row[1] == "message_in"),
        "active": active,
        "top": [row[1] for row in top],
    }


async def main(args: argparse.Namespace) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    creator = uuid.uuid4()
    with (
        tempfile.TemporaryDirectory(prefix="huntaze-bench-") as scratch,
        infrastructure(Path(scratch)) as (server_url, _),
    ):
        database = f"bench_{uuid.uuid4().hex[:10]}"
        database_url = await ensure_database(server_url, database)
        try:
            await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
            await load(database_url, creator, args.events, args.fans, now)
            engine = create_engine(database_url, application_name="bench")
            reads = await create_read_pool(database_url, application_name="bench", max_size=10)
            service = AnalyticsService(
                session_factory(engine),
                reads,
                writer=FactsWriter(),
                snapshot_max_age=timedelta(hours=1),
                clock=lambda: now,
            )
            try:
                await figures(service, reads, creator, now, args)
            finally:
                await reads.close()
                await engine.dispose()
        finally:
            await drop_database(server_url, database)


async def figures(
    service: AnalyticsService,
    reads: asyncpg.Pool,
    creator: uuid.UUID,
    now: datetime,
    args: argparse.Namespace,
) -> None:
    began = time.perf_counter()
    applied = await service.rebuild()
    took = time.perf_counter() - began
    print(f"rollups rebuilt from the events table: {applied:,} events in {took:.1f} s "
          f"({applied / took:,.0f} events/s)", flush=True)  # fmt: skip
    # What autovacuum does after a load: statistics, and the visibility map that lets counts
    # read an index alone.
    await reads.execute("VACUUM ANALYZE")

    began = time.perf_counter()
    overview = await service.overview(creator_id=creator, period=pb.PERIOD_30D)
    first = (time.perf_counter() - began) * 1000
    print(f"first overview (takes the insight snapshot): {first:.0f} ms")
    timings = []
    for _ in range(args.reads):
        began = time.perf_counter()
        await service.overview(creator_id=creator, period=pb.PERIOD_30D)
        timings.append((time.perf_counter() - began) * 1000)

    start_day = date.fromisoformat(overview.start_day)
    start = datetime.combine(start_day, datetime.min.time(), tzinfo=UTC)
    previous = start - timedelta(days=30)
    naive_timings = []
    naive: dict[str, Any] = {}
    for _ in range(args.naive_reads):
        began = time.perf_counter()
        naive = await naive_overview(reads, creator, start, previous, now)
        naive_timings.append((time.perf_counter() - began) * 1000)

    agree = (
        naive["revenue"] == overview.revenue.total_cents.current
        and naive["previous"] == overview.revenue.total_cents.previous
        and naive["platforms"] == {p.platform: p.revenue_cents for p in overview.platforms}
        and naive["messages_in"] == overview.messages.received.current
        and naive["active"] == overview.fans.active
        and naive["top"] == [p.spend_cents for p in overview.top_performers]
    )
    p50, p95 = percentile(timings, 0.5), percentile(timings, 0.95)
    naive_p50, naive_p95 = percentile(naive_timings, 0.5), percentile(naive_timings, 0.95)
    print(f"\noverview of 30 days over {args.events:,} events and {args.fans:,} fans")
    print(f"  from the rollups:      p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  ({args.reads} reads)")
    print(f"  aggregating raw events: p50 {naive_p50:7.1f} ms  p95 {naive_p95:7.1f} ms"
          f"  ({args.naive_reads} reads)")  # fmt: skip
    print(
        f"  speed-up at p95: {naive_p95 / p95:.0f}x (goal >= 20x); at the median "
        f"{statistics.median(naive_timings) / statistics.median(timings):.0f}x"
    )
    print(f"  p95 goal < 50 ms: {'met' if p95 < 50 else 'missed'}; both answers agree: {agree}")
    if not agree:
        raise SystemExit("the rollups and the raw events disagree")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fans", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--naive-reads", type=int, default=5)
    uvloop.run(main(parser.parse_args()))
