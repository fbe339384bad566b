"""What every benchmark needs: infrastructure, child processes, percentiles.

Benchmarks run as scripts (`python bench/NAME.py`), so this module sits beside them and is imported
as `_support`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from huntaze_devstack.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    drop_database,
    ensure_database,
    free_port,
)
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_devstack.suite import SUITE
from huntaze_kit.errors import Unauthenticated
from huntaze_kit.identity import Principal
from huntaze_kit.migrations import upgrade_async

PASSWORD = "Violet-Harbour-Lantern-42"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value at `fraction` (0..1) of the sorted values, nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def infrastructure(scratch: Path) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, NATS URL): `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL`
    when set, else embedded servers with their data in `scratch`, stopped afterwards."""
    database = os.environ.get("HUNTAZE_BENCH_DATABASE_URL")
    nats_url = os.environ.get("HUNTAZE_BENCH_NATS_URL")
    with contextlib.ExitStack() as stack:
        if not database:
            print("starting embedded PostgreSQL ...", flush=True)
            database = stack.enter_context(
                EmbeddedPostgres(scratch / "pg", free_port(), durable=False)
            ).url
        if not nats_url:
            nats_url = stack.enter_context(EmbeddedNats(scratch / "nats", free_port())).url
        yield database, nats_url


@dataclass
class Child:
    """A process of the suite started for a benchmark, its output in a log file."""

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

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.popen.pid)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process used so far (Linux `/proc`), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(name: str, args: list[str], env: dict[str, str], logs: Path) -> Child:
    """Starts `python ARGS...` in its own session, output to `logs/NAME.log`."""
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


async def wait_until(
    check: Callable[[], Awaitable[bool]], children: Sequence[Child], within: float = 60.0
) -> None:
    """Polls `check` until it returns True; fails early when a child dies."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for child in children:
            if child.popen.poll() is not None:
                raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
        with contextlib.suppress(Exception):
            if await check():
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("not ready in time:\n" + "\n".join(c.tail() for c in children))


async def wait_http(
    url: str,
    children: Sequence[Child],
    *,
    checks: dict[str, str] | None = None,
    within: float = 60.0,
) -> None:
    """Waits for `url` to answer 200, or, with `checks`, for the readiness checks named there
    (a gateway `/readyz` document) to report those statuses."""
    async with httpx.AsyncClient(timeout=2.0) as client:

        async def ready() -> bool:
            answer = await client.get(url)
            if checks is None:
                # The gateway is ready on its own; the figures also need every upstream up.
                return answer.status_code == 200 and not answer.json().get("unavailable")
            reported = answer.json().get("checks", {})
            # A process the gateway does not check (none of its upstreams) is not waited for.
            return answer.status_code == 200 and all(
                reported.get(name, status) == status for name, status in checks.items()
            )

        await wait_until(ready, children, within)


@dataclass
class RunningSuite:
    """Processes of the suite on a fresh database: what a benchmark measures against."""

    scratch: Path
    database_url: str
    nats_url: str
    env: dict[str, str]
    gateway_url: str
    children: dict[str, Child] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str]) -> Child:
        """Starts one more process (a comparison server, a load source) with the suite's env."""
        child = spawn(name, args, self.env, self.scratch)
        self.children[name] = child
        return child

    def processes(self) -> list[Child]:
        return list(self.children.values())


@contextlib.asynccontextmanager
async def running_suite(
    names: Sequence[str],
    *,
    readiness: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
) -> AsyncIterator[RunningSuite]:
    """Starts the named processes of the suite (`huntaze_devstack.suite`; the gateway included
    when named) on a new database, with their migrations applied, and waits for the gateway's
    `/readyz` (or only the `readiness` checks named); stops them and drops the database after.
    `settings` are more `HUNTAZE_*` variables for every process."""
    services = [service for service in SUITE if service.name in names]
    scratch = Path(tempfile.mkdtemp(prefix="huntaze-bench-"))
    try:
        with (
            infrastructure(scratch) as (server_url, nats_url),
            MailCatcher(scratch / "mail") as mail,
        ):
            database = f"bench_{uuid.uuid4().hex[:10]}"
            database_url = await ensure_database(server_url, database)
            gateway_port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("HUNTAZE_")},
                "HUNTAZE_DATABASE_URL": database_url,
                "HUNTAZE_NATS_URL": nats_url,
                "HUNTAZE_LOG_LEVEL": "WARNING",
                "HUNTAZE_SMTP_URL": mail.smtp_url,
                "HUNTAZE_GATEWAY_PORT": str(gateway_port),
                **(settings or {}),
            }
            suite = RunningSuite(
                scratch, database_url, nats_url, env, f"http://127.0.0.1:{gateway_port}"
            )
            try:
                for service in services:
                    if service.migrations and service.schema:
                        await upgrade_async(
                            database_url, package=service.migrations, schema=service.schema
                        )
                    if service.metrics_port_env:
                        # Never a default port: another suite may run beside this one.
                        env[service.metrics_port_env] = "0"
                    if service.grpc_port_env and service.grpc_target_env:
                        port = free_port()
                        env[service.grpc_port_env] = str(port)
                        env[service.grpc_target_env] = f"127.0.0.1:{port}"
                for service in services:
                    suite.spawn(service.name, ["-m", service.module, *service.args])
                if "gateway" in names:
                    # Every upstream the benchmark started must serve; the others are not asked.
                    started = {s.name: "SERVING" for s in services if s.grpc_port_env}
                    await wait_http(
                        f"{suite.gateway_url}/readyz",
                        suite.processes(),
                        checks=readiness if readiness is not None else started,
                    )
                yield suite
            finally:
                for child in reversed(suite.processes()):
                    child.stop()
                await drop_database(server_url, database)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The monolith side of a comparison: one FastAPI process verifying tokens itself.


class DatabaseKeySource:
    """The public keys straight from auth's signing-key table (a monolith owns it)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fetch_jwks(self) -> dict[str, Any]:
        rows = await self._pool.fetch("SELECT public_jwk FROM auth.signing_keys")
        # Pools with a JSON codec hand back the column decoded already.
        keys = [row["public_jwk"] for row in rows]
        return {"keys": [key if isinstance(key, dict) else json.loads(key) for key in keys]}


async def no_reset(connection: asyncpg.Connection) -> None:
    """No session state is ever left behind: skip the reset query on each release."""


_bearer = HTTPBearer(auto_error=False)


async def bearer_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the caller, verified with `request.app.state.verifier`."""
    if credentials is None:
        raise HTTPException(401, "Authentication required.")
    try:
        principal: Principal = await request.app.state.verifier.verify(credentials.credentials)
    except Unauthenticated as error:
        raise HTTPException(401, error.message) from error
    return principal


async def sign_up(gateway: str) -> tuple[str, str]:
    """Registers and logs in a new creator through the gateway: (access token, user id)."""
    async with httpx.AsyncClient(base_url=gateway, timeout=20.0) as client:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        registered = await client.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD, "name": "Bench"}
        )
        registered.raise_for_status()
        login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        body = login.json()
        return body["tokens"]["accessToken"], body["user"]["id"]


# ---------------------------------------------------------------------------------------------
# HTTP load at a fixed concurrency: wrk when installed, else a lean asyncio client.


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_latency(output: str, percent: str) -> float:
    found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {percent}% latency in wrk output:\n{output}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def load_with_wrk(url: str, token: str, concurrency: int, duration: float) -> Result:
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, int(duration))}s",
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
    number of failed requests. Far cheaper per request than httpx, so the load generator is
    less of a bottleneck."""
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
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    began = time.perf_counter()
    deadline = began + duration
    errors = await asyncio.gather(
        *(_http_worker(host, port, request, deadline, latencies) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - began
    return Result(
        requests_per_second=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        errors=sum(errors),
        requests=len(latencies),
    )


async def load_http(tool: str, url: str, token: str, concurrency: int, duration: float) -> Result:
    """`tool` is `wrk` or `python`."""
    if tool == "wrk":
        return await asyncio.to_thread(load_with_wrk, url, token, concurrency, duration)
    return await load_with_python(url, token, concurrency, duration)


def cpu_per_request(
    servers: Sequence[Child],
    before: Sequence[float | None],
    after: Sequence[float | None],
    requests: int,
) -> str:
    """Each serving process's CPU milliseconds per measured request."""
    parts = []
    for child, start, end in zip(servers, before, after, strict=True):
        if start is None or end is None or not requests:
            return ""
        parts.append(f"{child.name} {(end - start) * 1000 / requests:.2f} ms")
    return ", ".join(parts)
