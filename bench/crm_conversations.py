"""The inbox list through the whole stack: `GET /api/crm/conversations` (the first page, 50
conversations with their fans) through the gateway, the CRM's gRPC API and PostgreSQL, with
10,000 fans and 1,000,000 messages seeded, beside the same read served by one plain FastAPI
process that verifies the token itself and runs the same query with asyncpg, and beside the bare
query run with asyncpg from this process. Same machine, same run, same concurrency: the ratios
are the figures to watch (absolute figures drift on shared machines).

    python bench/crm_conversations.py [--duration 10] [--concurrency 64] [--rounds 2]
                                      [--fans 10000] [--messages 1000000] [--tool auto]

The data is written with COPY straight into the crm schema (a benchmark fixture; the service
writes through its API). Load comes from `wrk` when it is installed, else from an asyncio
keep-alive HTTP/1.1 loop in this process (which competes with the servers for the CPU, so its
figures are lower); the output says which. Each serving process's CPU time per request is
printed too.

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here (in a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import orjson
import uvicorn
import uvloop
from _support import (
    DatabaseKeySource,
    Result,
    bearer_principal,
    cpu_per_request,
    load_http,
    no_reset,
    percentile,
    running_suite,
    sign_up,
    wait_http,
)
from fastapi import Depends, FastAPI, Request, Response

from huntaze_devstack.embedded import free_port
from huntaze_kit.db import libpq_url
from huntaze_kit.identity import Principal, TokenVerifier

PATH = "/api/crm/conversations"
SCRIPT = str(Path(__file__).resolve())
AUDIENCE = "huntaze"
ISSUER = "huntaze-auth"
PAGE = 50
WARM_UP_SECONDS = 2.0

# The CRM's default conversation list: the creator's conversations that are not archived, most
# recent activity first, each with its fan (one more row than the page tells whether there is a
# next one).
CONVERSATIONS_SQL = f"""
SELECT c.id, c.fan_id, c.platform, c.unread_count, c.last_message_at, c.last_message_preview,
       c.pinned, c.archived, c.assigned_member_id, c.created_at, c.updated_at,
       f.id AS f_id, f.platform AS f_platform, f.platform_fan_id, f.display_name, f.handle,
       f.avatar_url, f.email, f.tags, f.notes, f.value_cents, f.subscription_state,
       f.subscribed_at, f.subscription_expires_at, f.last_seen_at, f.last_message_at AS f_last,
       f.custom_fields, f.created_at AS f_created_at, f.updated_at AS f_updated_at
FROM crm.conversations c
JOIN crm.fans f ON f.creator_id = c.creator_id AND f.id = c.fan_id
WHERE c.creator_id = $1 AND c.archived IS false
ORDER BY c.last_message_at DESC, c.id DESC
LIMIT {PAGE + 1}
"""


# ---------------------------------------------------------------------------------------------
# The monolith: one FastAPI process doing the whole read itself, answering the same JSON.


async def _json_codec(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog", format="text"
    )


def _fan(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["f_id"]),
        "platform": row["f_platform"],
        "platformFanId": row["platform_fan_id"],
        "displayName": row["display_name"],
        "handle": row["handle"],
        "avatarUrl": row["avatar_url"],
        "email": row["email"],
        "tags": row["tags"],
        "notes": row["notes"],
        "valueCents": row["value_cents"],
        "subscriptionState": row["subscription_state"],
        "subscribedAt": row["subscribed_at"],
        "subscriptionExpiresAt": row["subscription_expires_at"],
        "lastSeenAt": row["last_seen_at"],
        "lastMessageAt": row["f_last"],
        "customFields": row["custom_fields"],
        "createdAt": row["f_created_at"],
        "updatedAt": row["f_updated_at"],
    }


def _conversation(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "fanId": str(row["fan_id"]),
        "platform": row["platform"],
        "unreadCount": row["unread_count"],
        "lastMessageAt": row["last_message_at"],
        "lastMessagePreview": row["last_message_preview"],
        "pinned": row["pinned"],
        "archived": row["archived"],
        "assignedMemberId": str(row["assigned_member_id"]) if row["assigned_member_id"] else None,
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
        "fan": _fan(row),
    }


def monolith_app(database_url: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            libpq_url(database_url), min_size=4, max_size=10, reset=no_reset, init=_json_codec
        )
        app.state.pool = pool
        app.state.verifier = TokenVerifier(
            key_source=DatabaseKeySource(pool), audience=AUDIENCE, issuer=ISSUER
        )
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(PATH)
    async def conversations(
        request: Request, principal: Annotated[Principal, Depends(bearer_principal)]
    ) -> Response:
        pool: asyncpg.Pool = request.app.state.pool
        rows = await pool.fetch(CONVERSATIONS_SQL, uuid.UUID(principal.creator_id))
        page = [_conversation(row) for row in rows[:PAGE]]
        body = {"conversations": page, "nextCursor": "more" if len(rows) > PAGE else None}
        return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")

    return app


def serve_monolith(port: int) -> None:
    uvicorn.run(
        monolith_app(os.environ["HUNTAZE_DATABASE_URL"]),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


# ---------------------------------------------------------------------------------------------
# Seeding.


def _fan_rows(creator: uuid.UUID, fans: int, now: datetime) -> Iterator[tuple[Any, ...]]:
    for n in range(fans):
        yield (
            uuid.uuid4(),
            creator,
            "onlyfans",
            f"of-{n}",
            f"Fan {n}",
            f"@fan{n}",
            ["vip"] if n % 10 == 0 else [],
            (n % 50) * 100,
            "active" if n % 3 else "expired",
            now - timedelta(minutes=n),
            now - timedelta(minutes=n),
        )


async def seed(database_url: str, creator: uuid.UUID, fans: int, messages: int) -> float:
    """Fans, one conversation each, and `messages` spread over them, with COPY; returns the
    seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    per_conversation = max(1, messages // fans)
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        fan_rows = list(_fan_rows(creator, fans, now))
        await connection.copy_records_to_table(
            "fans",
            schema_name="crm",
            columns=[
                "id",
                "creator_id",
                "platform",
                "platform_fan_id",
                "display_name",
                "handle",
                "tags",
                "value_cents",
                "subscription_state",
                "last_seen_at",
                "last_message_at",
            ],
            records=fan_rows,
        )
        conversations = [
            (uuid.uuid4(), creator, fan[0], "onlyfans", n % 4, fan[10], f"Last words of fan {n}")
            for n, fan in enumerate(fan_rows)
        ]
        await connection.copy_records_to_table(
            "conversations",
            schema_name="crm",
            columns=[
                "id",
                "creator_id",
                "fan_id",
                "platform",
                "unread_count",
                "last_message_at",
                "last_message_preview",
            ],
            records=conversations,
        )

        def message_rows() -> Iterator[tuple[Any, ...]]:
            written = 0
            for conversation in conversations:
                last = conversation[5]
                for k in range(per_conversation):
                    if written == messages:
                        return
                    inbound = k % 2 == 0
                    yield (
                        uuid.uuid4(),
                        creator,
                        conversation[0],
                        conversation[2],
                        "onlyfans",
                        "in" if inbound else "out",
                        f"message {k} of a long chat about photos and plans",
                        "received" if inbound else "sent",
                        "fan" if inbound else "creator",
                        True,
                        last - timedelta(minutes=per_conversation - k),
                    )
                    written += 1

        columns = [
            "id",
            "creator_id",
            "conversation_id",
            "fan_id",
            "platform",
            "direction",
            "text",
            "delivery_status",
            "sender_kind",
            "read",
            "created_at",
        ]
        batch: list[tuple[Any, ...]] = []
        for row in message_rows():
            batch.append(row)
            if len(batch) == 100_000:
                await connection.copy_records_to_table(
                    "messages", schema_name="crm", columns=columns, records=batch
                )
                batch = []
        if batch:
            await connection.copy_records_to_table(
                "messages", schema_name="crm", columns=columns, records=batch
            )
        await connection.execute("ANALYZE crm.fans, crm.conversations, crm.messages")
    finally:
        await connection.close()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Load.


async def load_asyncpg(
    pool: asyncpg.Pool, creator: uuid.UUID, concurrency: int, duration: float
) -> Result:
    """The bare query from this process: `concurrency` tasks over the pool."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            rows = await pool.fetch(CONVERSATIONS_SQL, creator)
            assert len(rows) == PAGE + 1
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return Result(
        len(latencies) / elapsed,
        percentile(latencies, 0.50) * 1000,
        percentile(latencies, 0.99) * 1000,
        0,
        len(latencies),
    )


# ---------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    async with running_suite(("auth", "crm", "gateway")) as suite:
        monolith_port = free_port()
        monolith = suite.spawn("monolith", [SCRIPT, "--serve-monolith", str(monolith_port)])
        gateway, crm = suite.children["gateway"], suite.children["crm"]
        database_url, gateway_url = suite.database_url, suite.gateway_url
        monolith_url = f"http://127.0.0.1:{monolith_port}"
        await wait_http(f"{monolith_url}/healthz", suite.processes())
        token, user_id = await sign_up(gateway_url)
        creator = uuid.UUID(user_id)

        print(
            f"seeding {args.fans:,} fans, {args.fans:,} conversations and "
            f"{args.messages:,} messages with COPY ...",
            flush=True,
        )
        seconds = await seed(database_url, creator, args.fans, args.messages)
        print(f"seeded in {seconds:.1f} s", flush=True)

        targets = [
            ("gateway -> crm gRPC", gateway_url + PATH),
            ("FastAPI + asyncpg", monolith_url + PATH),
        ]
        serving = {targets[0][0]: [gateway, crm], targets[1][0]: [monolith]}
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}) as c:
            answers = {}
            for label, url in targets:
                answer = await c.get(url)
                if answer.status_code != 200:
                    logs = "\n".join(child.tail() for child in serving[label])
                    raise RuntimeError(f"{label}: {answer.status_code} {answer.text}\n{logs}")
                answers[label] = answer.json()
        first, second = (answers[label] for label, _ in targets)
        if [x["id"] for x in first["conversations"]] != [x["id"] for x in second["conversations"]]:
            raise RuntimeError("the two servers answered different pages")
        pool = await asyncpg.create_pool(
            libpq_url(database_url), min_size=10, max_size=10, reset=no_reset
        )

        print(
            f"\nGET {PATH} (page of {PAGE}): {args.concurrency} connections, "
            f"{args.duration:g} s per run, {args.rounds} round(s); HTTP load from "
            + ("wrk (1 thread)" if tool == "wrk" else "an asyncio HTTP/1.1 loop in this process")
        )
        print(f"{'round':<6}{'target':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        ratios: list[float] = []
        raw_ratios: list[float] = []
        for round_number in range(1, args.rounds + 1):
            results: dict[str, Result] = {}
            order = targets if round_number % 2 else list(reversed(targets))
            for label, url in order:
                servers = serving[label]
                await load_http(tool, url, token, args.concurrency, WARM_UP_SECONDS)
                before = [child.cpu_seconds() for child in servers]
                result = await load_http(tool, url, token, args.concurrency, args.duration)
                after = [child.cpu_seconds() for child in servers]
                results[label] = result
                print(
                    f"{round_number:<6}{label:<26}{result.requests_per_second:>10.0f}"
                    f"{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}{result.errors:>8}"
                    f"  {cpu_per_request(servers, before, after, result.requests)}",
                    flush=True,
                )
            raw = await load_asyncpg(pool, creator, 10, args.duration)
            print(
                f"{round_number:<6}{'asyncpg query alone':<26}"
                f"{raw.requests_per_second:>10.0f}{raw.p50_ms:>10.2f}{raw.p99_ms:>10.2f}"
                f"{raw.errors:>8}  (10 tasks over a pool of 10, in this process)",
                flush=True,
            )
            gateway_rps = results[targets[0][0]].requests_per_second
            ratios.append(gateway_rps / results[targets[1][0]].requests_per_second)
            raw_ratios.append(gateway_rps / raw.requests_per_second)
        await pool.close()
        print(
            "throughput ratio gateway/monolith: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f" (median {statistics.median(ratios):.2f}; goal >= 0.5)"
        )
        print(
            "throughput ratio gateway/asyncpg query alone: "
            + ", ".join(f"{r:.2f}" for r in raw_ratios)
            + f" (median {statistics.median(raw_ratios):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--concurrency", type=int, default=64, help="open connections")
    parser.add_argument("--rounds", type=int, default=2, help="gateway/monolith pairs")
    parser.add_argument("--fans", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--serve-monolith", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_monolith:
        serve_monolith(args.serve_monolith)
        return
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
