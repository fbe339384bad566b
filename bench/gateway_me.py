"""The cost of the microservice hop: `GET /api/auth/me` through the gateway and auth's gRPC API,
beside the same read served by one plain FastAPI process that verifies the token itself and
reads the user with asyncpg. Same machine, same run, same fixed concurrency; the ratio of the
two throughputs is the figure to watch (absolute figures drift on shared machines).

    python bench/gateway_me.py [--duration 10] [--concurrency 64] [--rounds 2] [--tool auto]

Load comes from `wrk` when it is installed (Debian package `wrk`), else from a plain asyncio
keep-alive HTTP/1.1 client in this process, which competes with the servers for the CPU (so its
figures are lower); the output says which. It also prints each server's CPU time per request.

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here (in a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import asyncpg
import httpx
import uvicorn
import uvloop
from _support import (
    DatabaseKeySource,
    Result,
    bearer_principal,
    cpu_per_request,
    load_http,
    no_reset,
    running_suite,
    sign_up,
    wait_http,
)
from fastapi import Depends, FastAPI, HTTPException, Request

from huntaze_devstack.embedded import (
    free_port,
)
from huntaze_gateway.auth_routes import UserOut
from huntaze_gateway.models import ApiModel
from huntaze_kit.db import libpq_url
from huntaze_kit.identity import Principal, TokenVerifier

PATH = "/api/auth/me"
SCRIPT = str(Path(__file__).resolve())
AUDIENCE = "huntaze"
ISSUER = "huntaze-auth"
WARM_UP_SECONDS = 2.0


# ---------------------------------------------------------------------------------------------
# The monolith: one FastAPI process doing the whole read itself.


class ProfileOut(ApiModel):
    """The profile of `GET /api/auth/me`, as the gateway answers it (from auth's proto)."""

    display_name: str
    bio: str
    timezone: str
    niche: str
    goals: list[str]
    onboarding_completed: bool
    onboarding_completed_at: datetime | None
    updated_at: datetime | None


class MeOut(ApiModel):
    user: UserOut
    profile: ProfileOut | None


SESSION_ACTIVE = (
    "SELECT 1 FROM auth.sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()"
)
USER_AND_PROFILE = """
SELECT u.id, u.email, u.name, u.email_verified_at, u.totp_enabled_at, u.created_at,
       p.display_name, p.bio, p.timezone, p.niche, p.goals, p.onboarding_completed_at,
       p.updated_at
FROM auth.users u LEFT JOIN auth.user_profiles p ON p.user_id = u.id
WHERE u.id = $1
"""


def monolith_app(database_url: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            libpq_url(database_url), min_size=4, max_size=10, reset=no_reset
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
    async def me(
        request: Request, principal: Annotated[Principal, Depends(bearer_principal)]
    ) -> MeOut:
        pool: asyncpg.Pool = request.app.state.pool
        async with pool.acquire() as conn:
            if await conn.fetchval(SESSION_ACTIVE, uuid.UUID(principal.session_id)) is None:
                raise HTTPException(401, "Session revoked.")
            row = await conn.fetchrow(USER_AND_PROFILE, uuid.UUID(principal.subject))
        assert row is not None
        completed = row["onboarding_completed_at"]
        return MeOut(
            user=UserOut(
                id=str(row["id"]),
                email=row["email"],
                name=row["name"],
                email_verified=row["email_verified_at"] is not None,
                two_factor_enabled=row["totp_enabled_at"] is not None,
                onboarding_completed=completed is not None,
                created_at=row["created_at"],
            ),
            profile=ProfileOut(
                display_name=row["display_name"] or "",
                bio=row["bio"] or "",
                timezone=row["timezone"] or "UTC",
                niche=row["niche"] or "",
                goals=list(row["goals"] or []),
                onboarding_completed=completed is not None,
                onboarding_completed_at=completed,
                updated_at=row["updated_at"],
            ),
        )

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


# What `/me` needs of the gateway's readiness checks (the other upstreams do not run here).
ME_READINESS = {"auth": "SERVING", "revocations": "FOLLOWING"}


# ---------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    async with running_suite(("auth", "gateway"), readiness=ME_READINESS) as suite:
        monolith_port = free_port()
        suite.spawn("monolith", [SCRIPT, "--serve-monolith", str(monolith_port)])
        gateway = suite.gateway_url
        monolith = f"http://127.0.0.1:{monolith_port}"
        await wait_http(f"{monolith}/healthz", suite.processes())
        token, _ = await sign_up(gateway)
        targets = [
            ("gateway -> auth gRPC", gateway + PATH),
            ("FastAPI + asyncpg", monolith + PATH),
        ]
        serving = {
            targets[0][0]: [suite.children["gateway"], suite.children["auth"]],
            targets[1][0]: [suite.children["monolith"]],
        }
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}) as c:
            for label, url in targets:
                answer = await c.get(url)
                if answer.status_code != 200:
                    raise RuntimeError(f"{label}: {answer.status_code} {answer.text}")

        print(
            f"\nGET {PATH}: {args.concurrency} connections, {args.duration:g} s per run, "
            f"{args.rounds} round(s); load from "
            + ("wrk (1 thread)" if tool == "wrk" else "an asyncio HTTP/1.1 loop in this process")
        )
        print(f"{'round':<6}{'target':<24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        ratios: list[float] = []
        for round_number in range(1, args.rounds + 1):
            results: dict[str, Result] = {}
            order = targets if round_number % 2 else list(reversed(targets))
            for label, url in order:
                servers = serving[label]
                await load_http(tool, url, token, args.concurrency, WARM_UP_SECONDS)
                before = [c.cpu_seconds() for c in servers]
                result = await load_http(tool, url, token, args.concurrency, args.duration)
                after = [c.cpu_seconds() for c in servers]
                results[label] = result
                print(
                    f"{round_number:<6}{label:<24}{result.requests_per_second:>10.0f}"
                    f"{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}{result.errors:>8}"
                    f"  {cpu_per_request(servers, before, after, result.requests)}",
                    flush=True,
                )
            ratios.append(
                results[targets[0][0]].requests_per_second
                / results[targets[1][0]].requests_per_second
            )
        print(
            "throughput ratio gateway/monolith: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f" (median {statistics.median(ratios):.2f}; goal >= 0.5)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--concurrency", type=int, default=64, help="open connections")
    parser.add_argument("--rounds", type=int, default=2, help="gateway/monolith pairs")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--serve-monolith", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_monolith:
        serve_monolith(args.serve_monolith)
        return
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
