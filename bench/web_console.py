"""The creator's web console: the first load of the inbox in Chromium with 10,000 conversations
(auth, the CRM and the gateway as real processes on loopback), and the JavaScript it ships.

    python bench/web_console.py [--fans 10000] [--messages 20000] [--loads 5]

Measured, in one run:

1. The JavaScript and CSS of the built console (`python -m huntaze_devstack.web build`), raw and
   gzip-compressed (goal: JavaScript under 200 kB compressed).
2. The first load of `/inbox` in a fresh browser context (nothing cached), `--loads` times: from
   the navigation's start to the first conversation row on screen (goal: under 1 s), beside
   the API read the page waits for (`GET /api/crm/conversations`, the first page) timed from the
   same browser: their ratio says what the console adds to the API.
3. The same with the static files cached (a reload), and how many rows the page holds (the list
   is virtualized: a few dozen rows, whatever the number of conversations), before and after
   scrolling through ten pages of the list.

The fans, conversations and messages are written with COPY (`crm_conversations.seed`).
PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import time
import uuid
from pathlib import Path

import httpx
from _support import PASSWORD, percentile, running_suite
from crm_conversations import seed
from playwright.async_api import Browser, Page, async_playwright

from huntaze_devstack.browser import ensure_chromium
from huntaze_devstack.embedded import free_port
from huntaze_devstack.web import build

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
FIRST_ROW = "a.conv"
SIZE_GOAL_KB = 200.0
LOAD_GOAL_MS = 1000.0


def shipped_sizes(dist: Path) -> dict[str, tuple[int, int]]:
    """(raw, gzip -9) bytes of the JavaScript and of the CSS the console ships."""
    sizes: dict[str, tuple[int, int]] = {}
    for kind in ("js", "css"):
        files = sorted((dist / "static").glob(f"*.{kind}"))
        raw = sum(path.stat().st_size for path in files)
        packed = sum(len(gzip.compress(path.read_bytes(), compresslevel=9)) for path in files)
        sizes[kind] = (raw, packed)
    return sizes


async def signed_in_context(browser: Browser, gateway: str, email: str) -> Page:
    context = await browser.new_context(base_url=gateway, viewport={"width": 1280, "height": 800})
    login = await context.request.post(
        "/api/auth/login", data={"email": email, "password": PASSWORD}
    )
    if login.status != 200:
        raise RuntimeError(f"sign-in refused: {login.status} {await login.text()}")
    return await context.new_page()


async def first_load_ms(page: Page) -> float:
    """From the navigation's start to the first conversation row on screen."""
    started = time.perf_counter()
    await page.goto("/inbox", wait_until="commit")
    await page.locator(FIRST_ROW).first.wait_for(state="visible", timeout=30_000)
    return (time.perf_counter() - started) * 1000


async def api_read_ms(page: Page) -> float:
    """The first page of conversations, read from the browser as the console reads it."""
    return float(
        await page.evaluate(
            """async () => {
                const started = performance.now();
                const answer = await fetch("/api/crm/conversations?limit=50");
                await answer.json();
                return performance.now() - started;
            }"""
        )
    )


async def rows_in_page(page: Page) -> int:
    return await page.locator(FIRST_ROW).count()


async def run(args: argparse.Namespace) -> None:
    print("building the console ...", flush=True)
    dist = build()
    sizes = shipped_sizes(dist)
    js_raw, js_gzip = sizes["js"]
    css_raw, css_gzip = sizes["css"]
    verdict = "met" if js_gzip / 1024 < SIZE_GOAL_KB else "MISSED"
    print(
        f"\nJavaScript shipped: {js_raw / 1024:.1f} kB raw, {js_gzip / 1024:.1f} kB gzip "
        f"(goal < {SIZE_GOAL_KB:.0f} kB compressed: {verdict})"
    )
    print(f"CSS shipped: {css_raw / 1024:.1f} kB raw, {css_gzip / 1024:.1f} kB gzip", flush=True)

    settings = {
        "HUNTAZE_GATEWAY_CONSOLE_DIR": str(dist),
        # Plain HTTP on loopback: the browser keeps the cookies only when they are not Secure.
        "HUNTAZE_GATEWAY_COOKIE_SECURE": "false",
        # Other runs on the machine may hold the default metrics ports.
        **{f"HUNTAZE_{name}_METRICS_PORT": str(free_port()) for name in ("AUTH", "CRM", "GATEWAY")},
    }
    async with running_suite(("auth", "crm", "gateway"), settings=settings) as suite:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        async with httpx.AsyncClient(base_url=suite.gateway_url, timeout=20.0) as client:
            registered = await client.post(
                "/api/auth/register", json={"email": email, "password": PASSWORD, "name": "Bench"}
            )
            registered.raise_for_status()
            user_id = registered.json()["user"]["id"]
        print(
            f"\nseeding {args.fans:,} fans and conversations, {args.messages:,} messages ...",
            flush=True,
        )
        seconds = await seed(suite.database_url, uuid.UUID(user_id), args.fans, args.messages)
        print(f"seeded in {seconds:.1f} s", flush=True)

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=ensure_chromium(), args=CHROMIUM_ARGS
            )
            try:
                # One load first, not counted: the servers' first requests warm their pools.
                warm = await signed_in_context(browser, suite.gateway_url, email)
                await first_load_ms(warm)
                await warm.context.close()

                cold: list[float] = []
                api: list[float] = []
                cached: list[float] = []
                for _ in range(args.loads):
                    page = await signed_in_context(browser, suite.gateway_url, email)
                    cold.append(await first_load_ms(page))
                    api.append(await api_read_ms(page))
                    cached.append(await first_load_ms(page))
                    await page.context.close()

                page = await signed_in_context(browser, suite.gateway_url, email)
                await first_load_ms(page)
                before = await rows_in_page(page)
                scroller = page.locator(".scroller")
                for _ in range(10):
                    await scroller.evaluate("el => { el.scrollTop = el.scrollHeight; }")
                    await asyncio.sleep(0.4)
                loaded = await page.evaluate(
                    "() => document.querySelector('.scroller ul').offsetHeight / 72"
                )
                after = await rows_in_page(page)
                await page.context.close()
            finally:
                await browser.close()

    p50 = statistics.median(cold)
    worst = percentile(cold, 1.0)
    api_p50 = statistics.median(api)
    print(
        f"\n/inbox first load, {args.fans:,} conversations, nothing cached ({args.loads} loads): "
        f"p50 {p50:.0f} ms, max {worst:.0f} ms "
        f"(goal < {LOAD_GOAL_MS:.0f} ms: {'met' if worst < LOAD_GOAL_MS else 'MISSED'})"
    )
    print(f"/inbox load with the static files cached: p50 {statistics.median(cached):.0f} ms")
    print(
        f"GET /api/crm/conversations (first page) from the browser: p50 {api_p50:.0f} ms; "
        f"first load / API read: {p50 / api_p50:.1f}x"
    )
    print(
        f"rows in the page: {before} at first, {after} after scrolling through "
        f"{int(loaded):,} loaded conversations (the list is virtualized)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fans", type=int, default=10_000, help="fans, one conversation each")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--loads", type=int, default=5, help="measured first loads")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
