"""Inbound messages end to end: platform-message events published to NATS at a fixed rate, applied
by the CRM (fan, conversation and message stored, inbox event written), and delivered on the
gateway's Server-Sent Events stream `GET /api/crm/stream`. Prints the sustained rate on the stream
and the delivery latency, from the moment each event was due to be published to the moment its
`message.received` event was read from the stream.

    python bench/crm_inbox.py [--rate 1000] [--seconds 10] [--fans 200]

The publisher keeps to the schedule (it does not wait for one publish to be acknowledged before
the next is due), so a backlog anywhere shows up as latency rather than as a lower offered rate.
Goal: p99 <= 200 ms at 1,000 messages/s. Each process's CPU time over the measured window is
printed too, as a share of one core and per delivered message (the machine has two cores;
everything here shares them).

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here (in a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import httpx
import nats
import orjson
import uvloop
from _support import Child, percentile, running_suite, sign_up
from nats.js import JetStreamContext

from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_kit.streams import Headers

SUBJECT = "onlyfans.message.received"
MAX_IN_FLIGHT = 512
# A backlog is waited for as long as messages keep showing on the stream.
QUIET_SECONDS = 15.0


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


class Publisher:
    """Publishes what the OnlyFans worker would when a fan writes."""

    def __init__(self, js: JetStreamContext, creator_id: str, fans: int) -> None:
        self._js = js
        self._creator_id = creator_id
        self._fans = fans
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
            await self._js.publish(SUBJECT, payload, headers=headers)
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
                    text: str = orjson.loads(line[6:])["message"]["text"]
                    tally.record(int(text[1 : text.index(" ")]), now)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


async def measure(
    args: argparse.Namespace, gateway_url: str, nats_url: str, servers: list[Child]
) -> None:
    token, creator_id = await sign_up(gateway_url)
    nc = await nats.connect(nats_url)
    tally = Tally()
    publisher = Publisher(nc.jetstream(), creator_id, args.fans)
    run = uuid.uuid4().hex[:8]
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=httpx.Timeout(None)) as client,
        client.stream(
            "GET", "/api/crm/stream", headers={"authorization": f"Bearer {token}"}
        ) as response,
    ):
        if response.status_code != 200:
            raise RuntimeError(f"stream: {response.status_code} {await response.aread()!r}")
        reader = asyncio.create_task(read_stream(response, tally))
        try:
            # Warm up: every fan written once (fans and conversations exist), and the CRM has
            # joined this stream to the inbox once the last of them shows.
            warm = args.fans
            await publisher.run(tally, -warm, warm, 200.0, f"{run}-warm")
            deadline = time.monotonic() + 120
            while -1 not in tally.seen:
                if time.monotonic() > deadline:
                    raise RuntimeError("the warm-up messages never reached the stream")
                await asyncio.sleep(0.1)
            tally.seen.clear()
            tally.events = 0

            count = int(args.rate * args.seconds)
            tally.expected = set(range(count))
            before = {child.name: child.cpu_seconds() for child in servers}
            started, finished = await publisher.run(tally, 0, count, args.rate, run)
            # Until every message has shown, or none has for a while (a backlog drains).
            progress, quiet_since = len(tally.seen), time.monotonic()
            while not tally.complete.is_set() and time.monotonic() - quiet_since < QUIET_SECONDS:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.complete.wait(), 1.0)
                if len(tally.seen) != progress:
                    progress, quiet_since = len(tally.seen), time.monotonic()
            after = {child.name: child.cpu_seconds() for child in servers}
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
    await nc.close()

    delivered = [s for s in range(count) if s in tally.seen]
    latencies = [tally.seen[s] - tally.due[s] for s in delivered]
    last = max((tally.seen[s] for s in delivered), default=finished)
    print(
        f"\n{count:,} messages offered at {args.rate:,.0f}/s over {args.fans} fans; "
        f"published in {finished - started:.2f} s "
        f"({count / (finished - started):,.0f}/s), {publisher.failures} publish failures"
    )
    print(
        f"delivered on the SSE stream: {len(delivered):,} of {count:,}"
        f" ({tally.events:,} events in all: received, conversation and fan updates)"
    )
    if delivered:
        span = last - started
        print(f"sustained: {len(delivered) / span:,.0f} messages/s (first due -> last seen)")
        print(
            "latency due -> on the stream, ms: "
            f"p50 {_ms(percentile(latencies, 0.50))}, p90 {_ms(percentile(latencies, 0.90))}, "
            f"p99 {_ms(percentile(latencies, 0.99))}, max {_ms(max(latencies))} "
            "(goal: p99 <= 200 at 1,000/s)"
        )
    window = last - started
    cpu = ", ".join(
        f"{name} {(after[name] - before[name]) / window:.0%}"
        for name in before
        if before[name] is not None and after[name] is not None
    )
    print(f"CPU over the window (of one core): {cpu}")
    if delivered:
        per_message = ", ".join(
            f"{name} {(after[name] - before[name]) * 1000 / len(delivered):.2f} ms"
            for name in before
            if before[name] is not None and after[name] is not None
        )
        print(f"CPU per delivered message: {per_message}")


async def run(args: argparse.Namespace) -> None:
    async with running_suite(("auth", "crm", "gateway")) as suite:
        await measure(
            args,
            suite.gateway_url,
            suite.nats_url,
            [suite.children["crm"], suite.children["gateway"]],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to publish")
    parser.add_argument("--fans", type=int, default=200, help="fans the messages come from")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
