"""AI suggestions end to end: fan messages published to NATS as the OnlyFans worker does, stored
by the CRM, drafted by the AI agent, and read as `ai.suggestion_created` from the gateway's
Server-Sent Events stream. Two runs, each on its own suite:

1. The local provider (no LLM) at a fixed rate: latency from the moment each message was due to
   be published to its suggestion on the stream, p50/p99 (goal: p99 under 300 ms at 100/s); and
   the agent's own share, from the message on the stream to its suggestion.
2. An OpenAI-compatible server (started here) that answers each request after 1 s: suggestions
   per second sustained over a burst (goal: at least 50/s, bounded by the agent's draft
   concurrency, not by calls made one at a time).

    python bench/ai_suggestions.py [--rate 100] [--seconds 10] [--burst 600] [--part 1|2|both]

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import nats
import orjson
import uvicorn
import uvloop
from _support import percentile, running_suite, sign_up
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from huntaze.ai.v1 import events_pb2 as ai_events
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze_devstack.embedded import free_port
from huntaze_devstack.testing import PlatformEvents
from huntaze_kit.db import libpq_url

SERVICE_SECRET = "bench-ai-secret"
LLM_SECONDS = 1.0
QUIET_SECONDS = 15.0
SETTINGS = {
    "HUNTAZE_AUTH_SERVICE_ACCOUNTS": json.dumps({"ai": SERVICE_SECRET}),
    "HUNTAZE_AI_POLL_SECONDS": "0.2",
}


@dataclass
class Tally:
    """When each message was due, shown on the stream, and answered by a suggestion."""

    due: dict[int, float] = field(default_factory=dict)
    received: dict[int, float] = field(default_factory=dict)
    suggested: dict[int, float] = field(default_factory=dict)
    sequence_of: dict[str, int] = field(default_factory=dict)
    early: dict[str, float] = field(default_factory=dict)
    # time.time() at perf_counter() == 0, to set database timestamps against the others.
    wall_offset: float = field(default_factory=lambda: time.time() - time.perf_counter())


async def read_stream(response: httpx.Response, tally: Tally) -> None:
    """`message.received` carries the sequence (in the text) and the message id; the
    suggestion names the message id."""
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        *frames, buffer = buffer.split(b"\n\n")
        now = time.perf_counter()
        for frame in frames:
            kind = b"message.received" if b"event: message.received" in frame else None
            if kind is None and b"event: ai.suggestion_created" in frame:
                kind = b"ai.suggestion_created"
            if kind is None:
                continue
            data = next(line[6:] for line in frame.split(b"\n") if line.startswith(b"data: "))
            body = orjson.loads(data)
            if kind == b"message.received":
                text: str = body["message"]["text"]
                sequence = int(text[1 : text.index(" ")])
                tally.received.setdefault(sequence, now)
                tally.sequence_of[body["message"]["id"]] = sequence
                if body["message"]["id"] in tally.early:  # the suggestion came first
                    tally.suggested.setdefault(sequence, tally.early.pop(body["message"]["id"]))
            else:
                message_id = body["ai"]["messageId"]
                found = tally.sequence_of.get(message_id)
                if found is None:
                    tally.early[message_id] = now
                else:
                    tally.suggested.setdefault(found, now)


async def publish(
    platform: PlatformEvents, creator: Any, tally: Tally, count: int, rate: float, fans: int
) -> tuple[float, float]:
    run = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    pending: set[asyncio.Task[str]] = set()
    for sequence in range(count):
        due = started + sequence / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.due[sequence] = due
        task = asyncio.create_task(
            platform.fan_writes(
                creator,
                platform_message_id=f"{run}-{sequence}",
                text=f"#{sequence} hey, how was your day?",
                platform_fan_id=f"of-bench-{sequence % fans}",
                display_name=f"Fan {sequence % fans}",
            )
        )
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    return started, time.perf_counter()


@dataclass(frozen=True)
class Creator:
    id: str


async def drive(
    gateway_url: str, nats_url: str, count: int, rate: float, fans: int
) -> tuple[Tally, float, float]:
    token, creator_id = await sign_up(gateway_url)
    nc = await nats.connect(nats_url)
    platform = PlatformEvents(nc.jetstream())
    tally = Tally()
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=httpx.Timeout(None)) as client,
        client.stream(
            "GET", "/api/crm/stream", headers={"authorization": f"Bearer {token}"}
        ) as response,
    ):
        reader = asyncio.create_task(read_stream(response, tally))
        try:
            # Warm up until a suggestion shows (the stream joined, the agent's workers awake);
            # warm-up messages have negative sequence numbers.
            deadline = time.monotonic() + 120
            attempt = 0
            while not tally.suggested:
                if time.monotonic() > deadline:
                    raise RuntimeError("no suggestion reached the stream")
                attempt += 1
                await platform.fan_writes(
                    Creator(creator_id),
                    platform_message_id=f"warm-{uuid.uuid4().hex}",
                    text=f"#{-attempt} warming up",
                    platform_fan_id="of-bench-warm",
                )
                await asyncio.sleep(0.5)
            tally.suggested.clear()
            tally.received.clear()
            started, _ = await publish(platform, Creator(creator_id), tally, count, rate, fans)
            progress, quiet_since = 0, time.monotonic()
            while (
                sum(1 for s in tally.suggested if s >= 0) < count
                and time.monotonic() - quiet_since < QUIET_SECONDS
            ):
                await asyncio.sleep(0.5)
                if len(tally.suggested) != progress:
                    progress, quiet_since = len(tally.suggested), time.monotonic()
            last = max(tally.suggested.values(), default=time.perf_counter())
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
    await nc.close()
    return tally, started, last


async def stage_times(database_url: str, tally: Tally) -> dict[str, list[float]]:
    """Where each message's time went, from the rows' timestamps (each a transaction's start:
    a relay's is when it took the event to publish): due -> the CRM's ingest -> taken by
    the CRM's relay -> recorded by the agent (its consumer's transaction) -> drafted and settled
    -> taken by the agent's relay -> put on the inbox by the CRM -> on the stream."""
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        rows = await conn.fetch(
            "SELECT s.id, s.message_id, s.incoming_text, s.created_at AS recorded, "
            "s.updated_at AS settled FROM ai.suggestions s"
        )
        crm_outbox = await conn.fetch(
            "SELECT payload, created_at, published_at FROM crm.outbox "
            "WHERE subject = 'crm.message.received'"
        )
        ai_outbox = await conn.fetch(
            "SELECT payload, published_at FROM ai.outbox WHERE subject = 'ai.suggestion.created'"
        )
        notices = await conn.fetch(
            "SELECT payload, created_at FROM crm.inbox_events WHERE type = $1",
            "ai.suggestion_created",
        )
    finally:
        await conn.close()
    ingested: dict[str, tuple[float, float]] = {}
    for row in crm_outbox:
        received = crm_events.MessageReceived.FromString(row["payload"])
        ingested[received.message.id] = (
            row["created_at"].timestamp() - tally.wall_offset,
            _seconds(row["published_at"], tally),
        )
    relayed: dict[str, float] = {}
    for row in ai_outbox:
        created = ai_events.SuggestionCreated.FromString(row["payload"])
        relayed[created.suggestion.id] = _seconds(row["published_at"], tally)
    noticed: dict[str, float] = {}
    for row in notices:
        notice = crm_pb2.AiNotice.FromString(row["payload"])
        noticed[notice.suggestion_id] = row["created_at"].timestamp() - tally.wall_offset
    names = (
        "due -> ingested by the CRM",
        "ingested -> taken by the CRM's relay",
        "taken -> recorded by the agent",
        "recorded -> drafted",
        "drafted -> taken by the agent's relay",
        "taken -> on the CRM's inbox",
        "on the inbox -> on the stream",
    )
    stages: dict[str, list[float]] = {name: [] for name in names}
    for row in rows:
        text: str = row["incoming_text"]
        sequence = int(text[1 : text.index(" ")])
        if sequence < 0 or sequence not in tally.suggested:
            continue
        ingest = ingested.get(str(row["message_id"]))
        suggestion_id = str(row["id"])
        if ingest is None or suggestion_id not in relayed or suggestion_id not in noticed:
            continue
        times = (
            tally.due[sequence],
            *ingest,
            row["recorded"].timestamp() - tally.wall_offset,
            row["settled"].timestamp() - tally.wall_offset,
            relayed[suggestion_id],
            noticed[suggestion_id],
            tally.suggested[sequence],
        )
        for name, start, end in zip(names, times, times[1:], strict=False):
            stages[name].append(end - start)
    return {name: values for name, values in stages.items() if values}


def _seconds(moment: datetime | None, tally: Tally) -> float:
    # Never None for the events of a suggestion on the stream: they were published.
    return moment.timestamp() - tally.wall_offset if moment is not None else float("inf")


def _cpu(before: dict[str, float | None], after: dict[str, float | None], count: int) -> str:
    """CPU milliseconds per suggestion of each process of the suite."""
    return ", ".join(
        f"{name} {(spent - started) * 1000 / count:.2f}"
        for name, started in before.items()
        if started is not None and (spent := after[name]) is not None
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


async def local_latency(args: argparse.Namespace) -> None:
    count = int(args.rate * args.seconds)
    async with running_suite(("auth", "crm", "ai", "gateway"), settings=SETTINGS) as suite:
        before = {name: child.cpu_seconds() for name, child in suite.children.items()}
        tally, started, last = await drive(
            suite.gateway_url, suite.nats_url, count, args.rate, args.fans
        )
        after = {name: child.cpu_seconds() for name, child in suite.children.items()}
        stages = await stage_times(suite.database_url, tally)
    done = [s for s in range(count) if s in tally.suggested]
    total = [tally.suggested[s] - tally.due[s] for s in done]
    agent = [tally.suggested[s] - tally.received[s] for s in done if s in tally.received]
    print(f"\n1. local provider: {count:,} fan messages offered at {args.rate:,.0f}/s")
    print(f"   suggestions on the stream: {len(done):,} of {count:,}")
    if total:
        print(
            f"   due -> suggestion on the stream, ms: p50 {_ms(percentile(total, 0.5))}, "
            f"p99 {_ms(percentile(total, 0.99))}, max {_ms(max(total))} "
            f"(goal: p99 < 300 at 100/s)"
        )
    if agent:
        print(
            f"   of which message on the stream -> suggestion (the agent), ms: "
            f"p50 {_ms(percentile(agent, 0.5))}, p99 {_ms(percentile(agent, 0.99))}"
        )
    for name, values in stages.items():
        print(
            f"   stage {name}, ms: p50 {_ms(percentile(values, 0.5))}, "
            f"p99 {_ms(percentile(values, 0.99))}"
        )
    if done:
        print(f"   sustained: {len(done) / (last - started):,.0f} suggestions/s")
        print(f"   CPU ms per suggestion (warm-up included): {_cpu(before, after, len(done))}")


def slow_llm() -> Starlette:
    """An OpenAI-compatible chat completions endpoint that takes `LLM_SECONDS` per answer."""

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.sleep(LLM_SECONDS)
        return JSONResponse(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "bench"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Aw thank you, you too!"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 400, "completion_tokens": 20, "total_tokens": 420},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


async def llm_throughput(args: argparse.Namespace) -> None:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(slow_llm(), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.05)
    settings = {
        **SETTINGS,
        "HUNTAZE_AI_LLM_PROVIDER": "compatible",
        "HUNTAZE_AI_LLM_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "HUNTAZE_AI_LLM_MODEL": "bench-model",
    }
    try:
        async with running_suite(("auth", "crm", "ai", "gateway"), settings=settings) as suite:
            before = {name: child.cpu_seconds() for name, child in suite.children.items()}
            tally, started, last = await drive(
                suite.gateway_url, suite.nats_url, args.burst, args.burst_rate, args.fans
            )
            after = {name: child.cpu_seconds() for name, child in suite.children.items()}
    finally:
        server.should_exit = True
        await serving
    done = sorted(at for sequence, at in tally.suggested.items() if sequence >= 0)
    print(
        f"\n2. LLM answering in {LLM_SECONDS:.0f} s: a burst of {args.burst:,} fan messages "
        f"at {args.burst_rate:,.0f}/s"
    )
    print(f"   suggestions on the stream: {len(done):,} of {args.burst:,}")
    if len(done) > 1:
        first = done[0]
        rate = (len(done) - 1) / (done[-1] - first)
        print(
            f"   sustained: {rate:,.1f} suggestions/s from the first to the last "
            f"(goal: >= 50/s; one call at a time would give {1 / LLM_SECONDS:.0f}/s)"
        )
        print(f"   whole burst: {len(done) / (last - started):,.1f} suggestions/s from first due")
        print(f"   CPU ms per suggestion (warm-up included): {_cpu(before, after, len(done))}")


async def run(args: argparse.Namespace) -> None:
    if args.part in ("1", "both"):
        await local_latency(args)
    if args.part in ("2", "both"):
        await llm_throughput(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second (1.)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to publish (1.)")
    parser.add_argument("--burst", type=int, default=600, help="messages of the burst (2.)")
    parser.add_argument("--burst-rate", type=float, default=300.0, help="burst rate (2.)")
    parser.add_argument("--fans", type=int, default=100, help="fans the messages come from")
    parser.add_argument("--part", choices=("1", "2", "both"), default="both", help="which run")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
