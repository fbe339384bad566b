"""The OnlyFans worker's platform driver against the simulator (in this process, over loopback),
with real Chromium. Prints:

1. sends per minute per account with a reused session, beside a fresh browser login per send, in
   the same run (goal: at least 50x); the platform's send throttle is switched off here so the
   figure is the worker's own cost (with it, one account sends 20 a minute at most);
2. memory per browser context (goal: under 60 MB), from the Chromium processes' unique memory
   (USS) before and after opening the contexts, and the accounts one worker process can hold;
3. time to first sync an account with 1,000 fans and 20,000 messages: every subscriber page (20
   a page), chat page (100) and message page (100, short while more remain) and 30 days of
   transactions, as a sync reads them (the outbox writes are not included);
4. a fan's message on the platform -> on the worker's push socket: p50 / p99 (the CRM's part,
   event -> SSE stream, is `crm_inbox.py`; goal end to end: p99 under 2 s).

    python bench/onlyfans_worker.py [--sends 30] [--contexts 10] [--pushes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from datetime import UTC, datetime, timedelta

import psutil
from _support import percentile

from huntaze_onlyfans_worker.driver import ImportedSession, PlatformMessage
from huntaze_onlyfans_worker.onlyfans_web import OnlyFansWebDriver, WebDriverConfig
from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.demo import DemoShape
from huntaze_simulator.testing import Simulator, serve

EMAIL = "creator@example.com"
PASSWORD = "creator-password"
MESSAGES_GOAL = 20_000


def driver_for(simulator: Simulator, **overrides: object) -> OnlyFansWebDriver:
    return OnlyFansWebDriver(
        WebDriverConfig(
            base_url=simulator.base_url,
            rules_url=f"{simulator.base_url}/rules.json",
            executable_path=shutil.which("chromium"),
            **overrides,  # type: ignore[arg-type]
        )
    )


def chromium_uss() -> float:
    """Unique memory of every Chromium process under this one, in MB."""
    total = 0
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "chrom" in child.name().lower() or "headless" in child.name().lower():
                total += child.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


async def sends(simulator: Simulator, count: int) -> None:
    fan = await simulator.new_fan(name="Bench")
    driver = driver_for(simulator)
    try:
        await driver.log_in("reused", email=EMAIL, password=PASSWORD)
        started = time.perf_counter()
        for index in range(count):
            await driver.send_message("reused", str(fan["id"]), text=f"reused {index}")
        reused = count / (time.perf_counter() - started) * 60
        fresh_count = max(3, count // 10)
        started = time.perf_counter()
        for index in range(fresh_count):
            await driver.log_in("fresh", email=EMAIL, password=PASSWORD)
            await driver.send_message("fresh", str(fan["id"]), text=f"fresh {index}")
            await driver.release("fresh")
        fresh = fresh_count / (time.perf_counter() - started) * 60
    finally:
        await driver.close()
    print(f"sends/min/account, reused session:     {reused:10.0f}")
    print(f"sends/min/account, login per send:     {fresh:10.0f}")
    print(f"ratio:                                 {reused / fresh:10.1f}x  (goal >= 50x)")


async def contexts(simulator: Simulator, count: int) -> None:
    driver = driver_for(simulator, max_contexts=count + 1)
    try:
        await driver.log_in("first", email=EMAIL, password=PASSWORD)
        baseline = chromium_uss()
        for index in range(count):
            copied = (
                await simulator.control.post("/_control/sessions", json={"user_agent": "bench"})
            ).json()
            await driver.import_session(
                f"account-{index}",
                ImportedSession(copied["cookies"], copied["x_bc"], copied["user_agent"]),
            )
            await driver.chats(f"account-{index}", cursor=None)
        await asyncio.sleep(1.0)
        per_context = (chromium_uss() - baseline) / count
    finally:
        await driver.close()
    budget = 2048
    print(f"memory per browser context (USS):      {per_context:10.1f} MB  (goal < 60 MB)")
    print(
        f"accounts per worker process:           {int(budget / max(per_context, 1)):10d}"
        f"  (in a {budget} MB container; the default cap is 20)"
    )


async def first_sync(count_messages: int) -> None:
    async with serve(
        SimulatorConfig(demo_activity_seconds=0, rate_limit_requests=1_000_000),
        demo=DemoShape(fans=1000),
    ) as simulator:
        platform = simulator.platform
        fans = list(platform.data.fans)
        have = sum(len(chat) for chat in platform.data.messages.values())
        for index in range(max(0, count_messages - have)):
            platform.fan_writes(fan_id=fans[index % len(fans)], text=f"filler {index}")
        total = sum(len(chat) for chat in platform.data.messages.values())
        driver = driver_for(simulator)
        try:
            await driver.log_in("a", email=EMAIL, password=PASSWORD)
            started = time.perf_counter()
            calls = read = 0
            cursor: str | None = None
            while True:
                subscribers = await driver.subscribers("a", cursor=cursor)
                calls += 1
                if subscribers.next_cursor is None:
                    break
                cursor = subscribers.next_cursor
            chats = []
            cursor = None
            while True:
                page = await driver.chats("a", cursor=cursor)
                calls += 1
                chats += page.items
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            for chat in chats:
                after: str | None = None
                while True:
                    messages = await driver.messages_after(
                        "a", chat.platform_fan_id, after_message_id=after
                    )
                    calls += 1
                    read += len(messages.items)
                    if messages.next_cursor is None:
                        break
                    after = messages.next_cursor
            since = datetime.fromtimestamp(platform.clock.now(), UTC) - timedelta(days=30)
            cursor = None
            while True:
                transactions = await driver.transactions(
                    "a",
                    since=since,
                    cursor=cursor,
                )
                calls += 1
                if transactions.next_cursor is None:
                    break
                cursor = transactions.next_cursor
            elapsed = time.perf_counter() - started
        finally:
            await driver.close()
    print(
        f"first sync, 1,000 fans and {total:,} messages: {elapsed:6.1f} s"
        f"  ({calls} signed calls, {read:,} messages read, {calls / elapsed:.0f} calls/s)"
    )


async def pushes(simulator: Simulator, count: int) -> None:
    fan = await simulator.new_fan(name="Pusher")
    driver = driver_for(simulator)
    received: asyncio.Queue[tuple[float, PlatformMessage]] = asyncio.Queue()
    opened = asyncio.Event()
    try:
        await driver.log_in("a", email=EMAIL, password=PASSWORD)

        async def listen() -> None:
            async for message in driver.listen("a", on_open=opened.set):
                await received.put((time.perf_counter(), message))

        listener = asyncio.create_task(listen())
        await opened.wait()
        latencies = []
        for index in range(count):
            sent = time.perf_counter()
            await simulator.fan_writes(fan["id"], f"push {index}")
            arrived, _ = await asyncio.wait_for(received.get(), 10)
            latencies.append((arrived - sent) * 1000)
            await asyncio.sleep(0.01)
        listener.cancel()
    finally:
        await driver.close()
    print(
        f"fan message -> worker push socket:     p50 {percentile(latencies, 0.5):6.1f} ms"
        f"   p99 {percentile(latencies, 0.99):6.1f} ms   ({count} messages)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=30)
    parser.add_argument("--contexts", type=int, default=10)
    parser.add_argument("--pushes", type=int, default=200)
    args = parser.parse_args()
    config = SimulatorConfig(
        demo_activity_seconds=0, send_interval_seconds=0, rate_limit_requests=1_000_000
    )
    async with serve(config, demo=DemoShape(fans=50)) as simulator:
        await sends(simulator, args.sends)
        await contexts(simulator, args.contexts)
        await pushes(simulator, args.pushes)
    await first_sync(MESSAGES_GOAL)


if __name__ == "__main__":
    asyncio.run(main())
