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
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import uvicorn
import uvloop
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from huntaze_devstack.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    drop_database,
    ensure_database,
    free_port,
)
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_gateway.auth_routes import MeOut, ProfileOut, UserOut
from huntaze_kit.db import libpq_url
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.identity import Principal, TokenVerifier
from huntaze_kit.migrations import upgrade_async

PATH = "/api/auth/me"
SCRIPT = str(Path(__file__).resolve())
PASSWORD = "Violet-Harbour-Lantern-42"
AUDIENCE = "huntaze"
ISSUER = "huntaze-auth"
WARM_UP_SECONDS = 2.0


# ---------------------------------------------------------------------------------------------
# The monolith: one FastAPI process doing the whole read itself.


class DatabaseKeySource:
    """The public keys straight from the signing-key table (a monolith owns it)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fetch_jwks(self) -> dict[str, Any]:
        rows = await self._pool.fetch("SELECT public_jwk FROM auth.signing_keys")
        return {"keys": [json.loads(row["public_jwk"]) for row in rows]}


async def _no_reset(connection: asyncpg.Connection) -> None:
    """No session state is ever left behind: skip the reset query on each release."""


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


_bearer = HTTPBearer(auto_error=False)


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(401, "Authentication required.")
    try:
        principal: Principal = await request.app.state.verifier.verify(credentials.credentials)
    except Unauthenticated as error:
        raise HTTPException(401, error.message) from error
    return principal


def monolith_app(database_url: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            libpq_url(database_url), min_size=4, max_size=10, reset=_no_reset
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
    async def me(request: Request, principal: Annotated[Principal, Depends(_caller)]) -> MeOut:
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


# ---------------------------------------------------------------------------------------------
# Processes and infrastructure.


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()

    def tail(self) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process used so far (Linux `/proc`), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(name: str, args: list[str], env: dict[str, str], logs: Path) -> Child:
    log_path = logs / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 (closed by Child.stop)
    popen = subprocess.Popen(
        [sys.executable, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Child(name, popen, log, log_path)


@contextlib.contextmanager
def infrastructure(scratch: Path) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, NATS URL): the configured ones, else embedded ones."""
    database = os.environ.get("HUNTAZE_BENCH_DATABASE_URL")
    nats_url = os.environ.get("HUNTAZE_BENCH_NATS_URL")
    with contextlib.ExitStack() as stack:
        if not database:
            print("starting embedded PostgreSQL ...", flush=True)
            server = EmbeddedPostgres(scratch / "pg", free_port(), durable=False)
            database = stack.enter_context(server).url
        if not nats_url:
            nats = EmbeddedNats(scratch / "nats", free_port())
            nats_url = stack.enter_context(nats).url
        yield database, nats_url


# What `/me` needs of the gateway's readiness checks (the other upstreams do not run here).
ME_READINESS = {"auth": "SERVING", "revocations": "FOLLOWING"}


def _ready(answer: httpx.Response, needed: dict[str, str] | None) -> bool:
    if needed is None:
        return answer.status_code == 200
    checks = answer.json().get("checks", {})
    return all(checks.get(name) == status for name, status in needed.items())


async def wait_http(
    url: str,
    children: list[Child],
    within: float = 60.0,
    *,
    checks: dict[str, str] | None = None,
) -> None:
    """Waits for `url` to answer 200, or, with `checks`, for the readiness checks named there
    to report those statuses."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            for child in children:
                if child.popen.poll() is not None:
                    raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
            with contextlib.suppress(httpx.TransportError, ValueError):
                if _ready(await client.get(url), checks):
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready:\n" + "\n".join(c.tail() for c in children))


async def access_token(gateway: str) -> str:
    async with httpx.AsyncClient(base_url=gateway, timeout=20.0) as client:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        registered = await client.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "name": "Bench"}
        )
        registered.raise_for_status()
        login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        token: str = login.json()["tokens"]["accessToken"]
        return token


# ---------------------------------------------------------------------------------------------
# Load.


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_latency(output: str, percentile: str) -> float:
    found = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {percentile}% latency in wrk output:\n{output}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def load_with_wrk(url: str, token: str, concurrency: int, duration: float) -> Result:
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{int(duration)}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Result(
        requests_per_second=float(rps.group(1)),
        p50_ms=_wrk_latency(output, "50"),
        p99_ms=_wrk_latency(output, "99"),
        errors=errors,
        requests=int(total.group(1)),
    )


async def _http_worker(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float]
) -> int:
    """One keep-alive HTTP/1.1 connection sending `request` until `deadline`; answers the
    number of failed requests. A plain asyncio client: far cheaper per request than httpx, so
    the load generator is less of a bottleneck."""
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if length is None:
                raise RuntimeError(f"no content-length in {head!r}")
            await reader.readexactly(int(length.group(1)))
            latencies.append(time.perf_counter() - started)
            errors += status != 200
    finally:
        writer.close()
    return errors


async def load_with_python(url: str, token: str, concurrency: int, duration: float) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    began = time.perf_counter()
    deadline = began + duration
    errors = await asyncio.gather(
        *(_http_worker(host, port, request, deadline, latencies) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - began
    latencies.sort()

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return Result(
        requests_per_second=len(latencies) / elapsed,
        p50_ms=percentile(0.50),
        p99_ms=percentile(0.99),
        errors=sum(errors),
        requests=len(latencies),
    )


async def measure(tool: str, url: str, token: str, concurrency: int, duration: float) -> Result:
    if tool == "wrk":
        return await asyncio.to_thread(load_with_wrk, url, token, concurrency, duration)
    return await load_with_python(url, token, concurrency, duration)


def _cpu_per_request(
    servers: list[Child], before: list[float | None], after: list[float | None], result: Result
) -> str:
    """Each serving process's CPU milliseconds per measured request."""
    parts = []
    for child, start, end in zip(servers, before, after, strict=True):
        if start is None or end is None or not result.requests:
            return ""
        parts.append(f"{child.name} {(end - start) * 1000 / result.requests:.2f} ms")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    scratch = Path(tempfile.mkdtemp(prefix="huntaze-bench-"))
    children: list[Child] = []
    try:
        with (
            infrastructure(scratch) as (server_url, nats_url),
            MailCatcher(scratch / "mail") as mail,
        ):
            name = f"bench_{uuid.uuid4().hex[:10]}"
            database_url = await ensure_database(server_url, name)
            try:
                await upgrade_async(database_url, package="huntaze_auth.migrations", schema="auth")
                auth_port, gateway_port, monolith_port = free_port(), free_port(), free_port()
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("HUNTAZE_")},
                    "HUNTAZE_DATABASE_URL": database_url,
                    "HUNTAZE_NATS_URL": nats_url,
                    "HUNTAZE_LOG_LEVEL": "WARNING",
                    "HUNTAZE_AUTH_GRPC_PORT": str(auth_port),
                    "HUNTAZE_AUTH_GRPC_TARGET": f"127.0.0.1:{auth_port}",
                    "HUNTAZE_SMTP_URL": mail.smtp_url,
                    "HUNTAZE_GATEWAY_PORT": str(gateway_port),
                }
                children.append(spawn("auth", ["-m", "huntaze_auth.server"], env, scratch))
                children.append(spawn("gateway", ["-m", "huntaze_gateway"], env, scratch))
                children.append(
                    spawn(
                        "monolith",
                        [SCRIPT, "--serve-monolith", str(monolith_port)],
                        env,
                        scratch,
                    )
                )
                gateway = f"http://127.0.0.1:{gateway_port}"
                monolith = f"http://127.0.0.1:{monolith_port}"
                await wait_http(f"{gateway}/readyz", children, checks=ME_READINESS)
                await wait_http(f"{monolith}/healthz", children)
                token = await access_token(gateway)
                targets = [
                    ("gateway -> auth gRPC", gateway + PATH),
                    ("FastAPI + asyncpg", monolith + PATH),
                ]
                serving = {
                    targets[0][0]: [children[1], children[0]],
                    targets[1][0]: [children[2]],
                }
                async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}) as c:
                    for label, url in targets:
                        answer = await c.get(url)
                        if answer.status_code != 200:
                            raise RuntimeError(f"{label}: {answer.status_code} {answer.text}")

                print(
                    f"\nGET {PATH}: {args.concurrency} connections, {args.duration:g} s per run, "
                    f"{args.rounds} round(s); load from "
                    + (
                        "wrk (1 thread)"
                        if tool == "wrk"
                        else "an asyncio HTTP/1.1 loop in this process"
                    )
                )
                print(
                    f"{'round':<6}{'target':<24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
                    f"{'errors':>8}"
                )
                ratios: list[float] = []
                for round_number in range(1, args.rounds + 1):
                    results: dict[str, Result] = {}
                    order = targets if round_number % 2 else list(reversed(targets))
                    for label, url in order:
                        servers = serving[label]
                        await measure(tool, url, token, args.concurrency, WARM_UP_SECONDS)
                        before = [cpu_seconds(c.popen.pid) for c in servers]
                        result = await measure(tool, url, token, args.concurrency, args.duration)
                        after = [cpu_seconds(c.popen.pid) for c in servers]
                        results[label] = result
                        print(
                            f"{round_number:<6}{label:<24}{result.requests_per_second:>10.0f}"
                            f"{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}{result.errors:>8}"
                            f"  {_cpu_per_request(servers, before, after, result)}",
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
            finally:
                for child in reversed(children):
                    child.stop()
                children.clear()
                await drop_database(server_url, name)
    finally:
        for child in children:
            child.stop()
        shutil.rmtree(scratch, ignore_errors=True)


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
