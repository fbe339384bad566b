"""The price of a login: argon2id alone, then whole logins through auth's gRPC API.

    python bench/auth_login.py [--seconds 8] [--concurrency 8]

1. argon2id verifications/s with the default (OWASP-strength) parameters, on one thread and on as
   many threads as there are cores (argon2 releases the GIL).
2. `Login` calls/s and latency p50/p99 against a real auth process (gRPC over loopback) at a fixed
   concurrency, for a good password and for a wrong one (the enumeration-safe path costs the same).
   Throttling is raised out of the way: this measures cost, not the limiter.

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
from _support import PASSWORD, percentile, running_suite, wait_until

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze.common.v1 import common_pb2
from huntaze_auth.passwords import Argon2Parameters, Passwords
from huntaze_kit.grpc_client import create_channel


def argon2_rate(seconds: float, threads: int) -> float:
    passwords = Passwords(Argon2Parameters())
    stored = passwords._hasher.hash(PASSWORD)

    def worker() -> int:
        done, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            passwords._hasher.verify(stored, PASSWORD)
            done += 1
        return done

    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: worker(), range(threads)))
    return total / seconds


async def login_load(
    stub: auth_pb2_grpc.AuthServiceStub,
    email: str,
    password: str,
    *,
    seconds: float,
    concurrency: int,
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal failures
        client = common_pb2.ClientContext(ip_address=f"10.1.{n}.1", user_agent="bench")
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await stub.Login(
                    auth_pb2.LoginRequest(email=email, password=password, client=client),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                    failures += 1
                    continue
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return len(latencies) / seconds, latencies, failures


async def run(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    one = argon2_rate(args.seconds / 2, 1)
    many = argon2_rate(args.seconds / 2, cores)
    print(
        f"argon2id (m=19 MiB, t=2, p=1) verify: {one:.1f}/s on 1 thread, "
        f"{many:.1f}/s on {cores} threads"
    )

    unthrottled = {
        "HUNTAZE_AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT_IP": "1000000",
        "HUNTAZE_AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT": "1000000",
        "HUNTAZE_AUTH_LOGIN_MAX_FAILURES_PER_IP": "1000000",
    }
    async with running_suite(("auth",), settings=unthrottled) as suite:
        auth = suite.children["auth"]
        channel = create_channel(suite.env["HUNTAZE_AUTH_GRPC_TARGET"])
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        try:

            async def ready() -> bool:
                await stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest(), timeout=1)
                return True

            await wait_until(ready, [auth])
            email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
            await stub.Register(
                auth_pb2.RegisterRequest(email=email, password=PASSWORD, name="Bench")
            )
            for label, password in (("good password", PASSWORD), ("wrong password", "x" * 12)):
                cpu_before = auth.cpu_seconds() or 0.0
                rate, latencies, failures = await login_load(
                    stub,
                    email,
                    password,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                )
                cpu = (auth.cpu_seconds() or 0.0) - cpu_before
                print(
                    f"Login, {label}: {rate:.1f}/s at concurrency {args.concurrency}, "
                    f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
                    f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
                    f"mean {statistics.fmean(latencies) * 1000:.1f} ms, "
                    f"auth CPU {cpu / max(1, len(latencies)) * 1000:.1f} ms/login"
                    + (f", {failures} unexpected errors" if failures else "")
                )
        finally:
            await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
