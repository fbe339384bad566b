"""Inbound messages end to end: platform-message events published to NATS, applied by the CRM (fan,
conversation and message stored, inbox event written), and delivered on the gateway's Server-Sent
Events stream `GET /api/crm/stream`; beside the bare pipeline the suite is measured against, in the
same run.

    python bench/crm_inbox.py [--rate 1000] [--seconds 10] [--fans 200] [--backlog 10000]
                              [--crm-batch N] [--crm-lanes N]

One run, in this order:

1. The bare pipeline: a JetStream pull consumer (its own process) decoding the same events and
   inserting the same message rows into an equivalent table with `executemany`, one NOTIFY per
   batch in the same transaction, read here by a LISTEN connection. `--backlog` messages are
   offered at once; its sustained rate is delivered / (first published -> last seen).
2. The suite (platform event -> CRM -> gateway SSE), the same backlog: its sustained rate, and its
   ratio to the bare pipeline (goal >= 0.5: an absolute rate depends on the machine). The rate at
   which the CRM stored the messages is printed beside it, to tell the CRM's ingest from the way
   to the stream (CRM inbox -> gRPC -> gateway -> SSE).
3. 70% of the suite's sustained rate offered for `--seconds`: p50/p99 latency (goal p99 < 200 ms).
4. `--rate` offered for `--seconds`: the sustained rate and latency at a fixed rate.

Latency runs from the moment each event was due to be published to the moment its
`message.received` event was read from the stream. The publisher keeps to the schedule (it does
not wait for one publish to be acknowledged before the next is due), so a backlog anywhere shows
up as latency rather than as a lower offered rate. Each process's CPU time over a measured window
is printed too, as a share of one core and per delivered message (the machine has two cores;
everything here shares them).

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here (in a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import asyncpg
import httpx
import nats
import orjson
import uvloop
from _support import Child, RunningSuite, percentile, running_suite, sign_up
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_kit.db import libpq_url
from huntaze_kit.streams import Headers

SUBJECT = "onlyfans.message.received"
SCRIPT = str(Path(__file__).resolve())
MAX_IN_FLIGHT = 512
# A backlog is waited for as long as messages keep showing on the stream.
QUIET_SECONDS = 15.0
SUITE_SHARE = 0.70
STORED_POLL_SECONDS = 0.05
STORED_COUNT = "SELECT count(*) FROM crm.messages WHERE direction = 'in'"
WARM_UP_SECONDS = 120.0

# The bare pipeline: its own stream, table and channel, so it never meets the CRM's.
BARE_STREAM = "BENCH_BARE"
BARE_SUBJECT = "bench.bare.message.received"
BARE_DURABLE = "bench-bare"
BARE_CHANNEL = "bench_bare_inbox"
BARE_BATCH = 256
BARE_TABLE = """
CREATE SCHEMA IF NOT EXISTS bench_bare;
CREATE TABLE IF NOT EXISTS bench_bare.messages (
    id uuid PRIMARY KEY,
    creator_id uuid NOT NULL,
    platform_fan_id text NOT NULL,
    platform_message_id text NOT NULL UNIQUE,
    text text NOT NULL,
    sent_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""
BARE_INSERT = """
INSERT INTO bench_bare.messages
    (id, creator_id, platform_fan_id, platform_message_id, text, sent_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (platform_message_id) DO NOTHING
"""


@dataclass
class Tally:
    """When each message was due, and when its event was read from the stream."""

    due: dict[int, float] = field(default_factory=dict)
    seen: dict[int, float] = field(default_factory=dict)
    events: int = 0
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    expected: set[int] = field(default_factory=set)

    def record(self, sequence: int, at: float) -> None:
        self.seen.setdefault(sequence, at)
        if self.expected and self.expected <= self.seen.keys():
            self.complete.set()

    def expect(self, sequences: range) -> None:
        """Starts a measured phase: only `sequences` count from here on."""
        self.due.clear()
        self.seen.clear()
        self.events = 0
        self.complete.clear()
        self.expected = set(sequences)


def sequence_of(text: str) -> int:
    """The sequence number the benchmark wrote at the start of a message's text (`#N ...`)."""
    return int(text[1 : text.index(" ")])


class Publisher:
    """Publishes what the OnlyFans worker would when a fan writes."""

    def __init__(
        self, js: JetStreamContext, creator_id: str, fans: int, subject: str = SUBJECT
    ) -> None:
        self._js = js
        self._creator_id = creator_id
        self._fans = fans
        self._subject = subject
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.failures = 0

    def _event(self, sequence: int, run: str) -> tuple[bytes, dict[str, str]]:
        fan = f"of-bench-{sequence % self._fans}"
        event = of_events.MessageReceived(
            creator_id=self._creator_id,
            platform_message_id=f"{run}-{sequence}",
            fan=of_events.FanProfile(platform_fan_id=fan, display_name=f"Fan {fan}"),
            text=f"#{sequence} hello from the benchmark",
        )
        event.sent_at.GetCurrentTime()
        event_id = str(uuid.uuid4())
        headers = {
            Headers.MSG_ID: event_id,
            Headers.EVENT_ID: event_id,
            Headers.EVENT_TYPE: event.DESCRIPTOR.full_name,
            Headers.CREATOR_ID: self._creator_id,
            Headers.AGGREGATE_TYPE: "fan",
            Headers.AGGREGATE_ID: fan,
        }
        return event.SerializeToString(), headers

    async def _publish(self, payload: bytes, headers: dict[str, str]) -> None:
        try:
            await self._js.publish(self._subject, payload, headers=headers)
        except Exception:
            self.failures += 1
        finally:
            self._slots.release()

    async def run(
        self, tally: Tally, first: int, count: int, rate: float, run: str
    ) -> tuple[float, float]:
        """Publishes `count` messages at `rate` per second; answers (start, end) times."""
        pending: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        for index in range(count):
            sequence = first + index
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            payload, headers = self._event(sequence, run)
            tally.due[sequence] = due
            await self._slots.acquire()
            task = asyncio.create_task(self._publish(payload, headers))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        return started, time.perf_counter()

    async def flood(self, tally: Tally, first: int, count: int, run: str) -> tuple[float, float]:
        """Publishes `count` messages at once, pipelined (`publish_async`), so the consumer
        meets a backlog; the events are built beforehand, so the publisher is not what limits
        the rate. Answers (start, end) times."""
        events = [self._event(first + index, run) for index in range(count)]
        acknowledgements = []
        started = time.perf_counter()
        for index, (payload, headers) in enumerate(events):
            tally.due[first + index] = time.perf_counter()
            acknowledgements.append(
                await self._js.publish_async(self._subject, payload, headers=headers)
            )
        answers = await asyncio.gather(*acknowledgements, return_exceptions=True)
        self.failures += sum(isinstance(answer, BaseException) for answer in answers)
        return started, time.perf_counter()


async def read_stream(response: httpx.Response, tally: Tally) -> None:
    """Reads `message.received` events; the message text carries its sequence number."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        *frames, buffer = buffer.split(b"\n\n")
        now = time.perf_counter()
        for frame in frames:
            tally.events += 1
            if b"event: message.received" not in frame:
                continue
            for line in frame.split(b"\n"):
                if line.startswith(b"data: "):
                    tally.record(sequence_of(orjson.loads(line[6:])["message"]["text"]), now)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


@dataclass
class Phase:
    """One measured window: what was offered and what showed, with the servers' CPU time."""

    count: int
    started: float
    finished: float
    delivered: list[int]
    latencies: list[float]
    last: float
    failures: int
    # Every event read on the way (on the SSE stream: conversation and fan updates too).
    events: int
    cpu: dict[str, float]

    @property
    def sustained(self) -> float:
        """Messages per second from the first due to the last seen."""
        span = self.last - self.started
        return len(self.delivered) / span if self.delivered and span > 0 else 0.0

    def cpu_line(self) -> str:
        window = self.last - self.started
        return ", ".join(f"{name} {seconds / window:.0%}" for name, seconds in self.cpu.items())

    def cpu_per_message(self) -> str:
        return ", ".join(
            f"{name} {seconds * 1000 / len(self.delivered):.2f} ms"
            for name, seconds in self.cpu.items()
        )


async def until_quiet(tally: Tally) -> None:
    """Until every expected message has shown, or none has for a while (a backlog drains)."""
    progress, quiet_since = len(tally.seen), time.monotonic()
    while not tally.complete.is_set() and time.monotonic() - quiet_since < QUIET_SECONDS:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.complete.wait(), 1.0)
        if len(tally.seen) != progress:
            progress, quiet_since = len(tally.seen), time.monotonic()


async def warm_up(publisher: Publisher, tally: Tally, count: int, run: str) -> None:
    """Offers `count` messages and waits for the last to show: the consumer is attached and
    whatever the messages create first (fans, conversations) exists."""
    await publisher.run(tally, -count, count, 200.0, f"{run}-warm")
    deadline = time.monotonic() + WARM_UP_SECONDS
    while -1 not in tally.seen:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up messages never reached the reader")
        await asyncio.sleep(0.1)


async def measure_phase(
    publisher: Publisher,
    tally: Tally,
    *,
    first: int,
    count: int,
    rate: float | None,
    run: str,
    servers: Sequence[Child],
) -> Phase:
    """Offers `count` messages from sequence `first` and waits until they have shown."""
    tally.expect(range(first, first + count))
    before = {child.name: child.cpu_seconds() for child in servers}
    if rate is None:
        started, finished = await publisher.flood(tally, first, count, run)
    else:
        started, finished = await publisher.run(tally, first, count, rate, run)
    await until_quiet(tally)
    after = {child.name: child.cpu_seconds() for child in servers}
    delivered = [s for s in range(first, first + count) if s in tally.seen]
    return Phase(
        count=count,
        started=started,
        finished=finished,
        delivered=delivered,
        latencies=[tally.seen[s] - tally.due[s] for s in delivered],
        last=max((tally.seen[s] for s in delivered), default=finished),
        failures=publisher.failures,
        events=tally.events,
        cpu={
            name: end - start
            for name, start in before.items()
            if start is not None and (end := after[name]) is not None
        },
    )


def report_rate_phase(phase: Phase, rate: float, fans: int, goal: str) -> None:
    """The figures of a phase offered at a fixed rate, as this benchmark always printed them."""
    count, published = phase.count, phase.finished - phase.started
    print(
        f"\n{count:,} messages offered at {rate:,.0f}/s over {fans} fans; "
        f"published in {published:.2f} s "
        f"({count / published:,.0f}/s), {phase.failures} publish failures"
    )
    print(
        f"delivered on the SSE stream: {len(phase.delivered):,} of {count:,}"
        f" ({phase.events:,} events in all: received, conversation and fan updates)"
    )
    if phase.delivered:
        latencies = phase.latencies
        print(f"sustained: {phase.sustained:,.0f} messages/s (first due -> last seen)")
        print(
            "latency due -> on the stream, ms: "
            f"p50 {_ms(percentile(latencies, 0.50))}, p90 {_ms(percentile(latencies, 0.90))}, "
            f"p99 {_ms(percentile(latencies, 0.99))}, max {_ms(max(latencies))} "
            f"(goal: {goal})"
        )
    print(f"CPU over the window (of one core): {phase.cpu_line()}")
    if phase.delivered:
        print(f"CPU per delivered message: {phase.cpu_per_message()}")


def report_backlog_phase(label: str, phase: Phase) -> None:
    published = phase.finished - phase.started
    print(
        f"\n{label}: {phase.count:,} messages offered at once (published in {published:.2f} s, "
        f"{phase.failures} publish failures), {len(phase.delivered):,} delivered"
    )
    print(f"  sustained: {phase.sustained:,.0f} messages/s (first published -> last seen)")
    print(f"  CPU over the window (of one core): {phase.cpu_line()}")
    if phase.delivered:
        print(f"  CPU per delivered message: {phase.cpu_per_message()}")


# ---------------------------------------------------------------------------------------------
# The bare pipeline.


def serve_bare() -> None:
    """The bare pipeline's consumer process: fetch a batch, insert its rows and NOTIFY their
    sequence numbers in one transaction, then acknowledge. Runs until stopped."""
    uvloop.run(consume_bare(os.environ["HUNTAZE_DATABASE_URL"], os.environ["HUNTAZE_NATS_URL"]))


async def consume_bare(database_url: str, nats_url: str) -> None:
    connection = await asyncpg.connect(libpq_url(database_url))
    nc = await nats.connect(nats_url)
    subscription = await nc.jetstream().pull_subscribe(
        BARE_SUBJECT, durable=BARE_DURABLE, stream=BARE_STREAM
    )
    while True:
        try:
            batch = await subscription.fetch(BARE_BATCH, timeout=1.0)
        except NatsTimeoutError:
            continue
        rows, sequences = [], []
        for message in batch:
            event = of_events.MessageReceived.FromString(message.data)
            rows.append(
                (
                    uuid.uuid4(),
                    uuid.UUID(event.creator_id),
                    event.fan.platform_fan_id,
                    event.platform_message_id,
                    event.text,
                    event.sent_at.ToDatetime(tzinfo=UTC),
                )
            )
            sequences.append(str(sequence_of(event.text)))
        async with connection.transaction():
            await connection.executemany(BARE_INSERT, rows)
            await connection.execute("SELECT pg_notify($1, $2)", BARE_CHANNEL, ",".join(sequences))
        for message in batch:
            await message.ack()


async def measure_bare(
    args: argparse.Namespace, suite: RunningSuite, creator_id: str, run: str
) -> Phase:
    """The bare pipeline's sustained rate on a backlog of `--backlog` messages."""
    listener = await asyncpg.connect(libpq_url(suite.database_url))
    nc = await nats.connect(suite.nats_url)
    js = nc.jetstream()
    tally = Tally()

    def notified(_connection: object, _pid: int, _channel: str, payload: str) -> None:
        now = time.perf_counter()
        for sequence in payload.split(","):
            tally.record(int(sequence), now)

    try:
        await listener.execute(BARE_TABLE)
        await js.add_stream(name=BARE_STREAM, subjects=[BARE_SUBJECT])
        await listener.add_listener(BARE_CHANNEL, notified)
        consumer = suite.spawn("bare", [SCRIPT, "--serve-bare"])
        try:
            publisher = Publisher(js, creator_id, args.fans, BARE_SUBJECT)
            await warm_up(publisher, tally, args.fans, f"{run}-bare")
            return await measure_phase(
                publisher,
                tally,
                first=0,
                count=args.backlog,
                rate=None,
                run=f"{run}-bare",
                servers=[consumer],
            )
        finally:
            consumer.stop()
    finally:
        await listener.close()
        await js.delete_stream(BARE_STREAM)
        await nc.close()


# ---------------------------------------------------------------------------------------------
# The suite.


async def stored_rate(
    database_url: str, count: int, phase: Awaitable[Phase]
) -> tuple[Phase, float]:
    """Runs `phase` (a backlog of `count`), and the messages per second the CRM stored meanwhile:
    from the phase's start to the moment the last of them was stored."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        target = await connection.fetchval(STORED_COUNT) + count
        started = time.perf_counter()
        running = asyncio.ensure_future(phase)
        while not running.done():
            if await connection.fetchval(STORED_COUNT) >= target:
                break
            await asyncio.sleep(STORED_POLL_SECONDS)
        # (Should the phase end first, the last of them was stored by the next look at most.)
        stored = await connection.fetchval(STORED_COUNT) >= target
        rate = count / (time.perf_counter() - started) if stored else 0.0
        return await running, rate
    finally:
        await connection.close()


async def measure_suite(
    args: argparse.Namespace, suite: RunningSuite, token: str, creator_id: str, run: str
) -> tuple[Phase, float, Phase, Phase]:
    """The suite's phases: backlog (with the CRM's storing rate), 70% of its sustained rate,
    `--rate`."""
    servers = [suite.children["crm"], suite.children["gateway"]]
    nc = await nats.connect(suite.nats_url)
    tally = Tally()
    publisher = Publisher(nc.jetstream(), creator_id, args.fans)
    async with (
        httpx.AsyncClient(base_url=suite.gateway_url, timeout=httpx.Timeout(None)) as client,
        client.stream(
            "GET", "/api/crm/stream", headers={"authorization": f"Bearer {token}"}
        ) as response,
    ):
        if response.status_code != 200:
            raise RuntimeError(f"stream: {response.status_code} {await response.aread()!r}")
        reader = asyncio.create_task(read_stream(response, tally))
        try:
            # Every fan written once (fans and conversations exist), and the CRM has joined
            # this stream to the inbox once the last of them shows.
            await warm_up(publisher, tally, args.fans, run)

            async def phase(first: int, count: int, rate: float | None) -> Phase:
                return await measure_phase(
                    publisher, tally, first=first, count=count, rate=rate, run=run, servers=servers
                )

            backlog, stored = await stored_rate(
                suite.database_url, args.backlog, phase(0, args.backlog, None)
            )
            share_rate = max(1.0, SUITE_SHARE * backlog.sustained)
            share = await phase(args.backlog, int(share_rate * args.seconds), share_rate)
            fixed = await phase(
                args.backlog + share.count, int(args.rate * args.seconds), args.rate
            )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
    await nc.close()
    return backlog, stored, share, fixed


async def run(args: argparse.Namespace) -> None:
    settings = {
        name: str(value)
        for name, value in (
            ("HUNTAZE_CRM_CONSUMER_BATCH_SIZE", args.crm_batch),
            ("HUNTAZE_CRM_CONSUMER_CONCURRENCY", args.crm_lanes),
        )
        if value is not None
    }
    async with running_suite(("auth", "crm", "gateway"), settings=settings) as suite:
        token, creator_id = await sign_up(suite.gateway_url)
        run_id = uuid.uuid4().hex[:8]
        bare = await measure_bare(args, suite, creator_id, run_id)
        backlog, stored, share, fixed = await measure_suite(args, suite, token, creator_id, run_id)

    report_backlog_phase(
        "bare pipeline (JetStream pull consumer -> executemany + NOTIFY -> LISTEN)", bare
    )
    report_backlog_phase("suite (platform event -> CRM -> gateway SSE)", backlog)
    print(f"  stored by the CRM: {stored:,.0f} messages/s (first published -> last stored)")
    ratio = backlog.sustained / bare.sustained if bare.sustained else 0.0
    print(f"sustained ratio suite/bare: {ratio:.2f} (goal >= 0.5)")
    share_rate = share.count / args.seconds
    print(f"\nat {SUITE_SHARE:.0%} of the suite's sustained rate:", end="")
    report_rate_phase(share, share_rate, args.fans, "p99 < 200 at 70% of the sustained rate")
    print(f"\nat --rate {args.rate:,.0f}/s:", end="")
    report_rate_phase(fixed, args.rate, args.fans, "p99 <= 200 at 1,000/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to publish")
    parser.add_argument("--fans", type=int, default=200, help="fans the messages come from")
    parser.add_argument(
        "--backlog",
        type=int,
        default=10_000,
        help="messages offered at once for the sustained rate",
    )
    parser.add_argument(
        "--crm-batch", type=int, help="the CRM's consumer batch size (default: its setting)"
    )
    parser.add_argument(
        "--crm-lanes", type=int, help="the CRM's consumer lanes (default: its setting)"
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare()
        return
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
