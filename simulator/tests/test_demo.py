"""Demo mode: a believable creator with hundreds of fans and months of history, steady fan
activity, and a snapshot file that survives a restart (through the command line)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from huntaze_devstack.embedded import free_port
from huntaze_devstack.testing import eventually
from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.demo import DemoShape, populate
from huntaze_simulator.platform import Clock, Platform
from huntaze_simulator.testing import serve


async def test_the_demo_creator_has_hundreds_of_fans_and_months_of_history() -> None:
    async with serve(demo=DemoShape()) as running:
        client = await running.import_session()
        active = (await client.ok("GET", "/subscriptions/subscribers/count"))["count"]
        assert active >= 200
        expired = await client.ok("GET", "/subscriptions/subscribers", params={"type": "expired"})
        assert expired["list"]
        since = (datetime.now(UTC) - timedelta(days=200)).isoformat()
        oldest: dict[str, Any] | None = None
        params: dict[str, Any] = {"limit": 100, "startDate": since}
        kinds: set[str] = set()
        while True:
            page = await client.ok("GET", "/payouts/transactions", params=params)
            kinds |= {txn["type"] for txn in page["list"]}
            oldest = page["list"][-1] if page["list"] else oldest
            if not page["hasMore"]:
                break
            params["marker"] = page["nextMarker"]
        assert kinds == {"subscribes", "tips", "chat_messages"}
        assert oldest is not None
        age = datetime.now(UTC) - datetime.fromisoformat(oldest["createdAt"])
        assert age > timedelta(days=120)
        chats = await client.ok("GET", "/chats", params={"limit": 100, "skip_users": "all"})
        assert chats["hasMore"] is True
        assert any(chat["unreadMessagesCount"] for chat in chats["list"])
        lists = await client.ok("GET", "/lists", params={"limit": 100})
        assert {"VIP", "Big spenders"} <= {item["name"] for item in lists}


def test_the_same_seed_generates_the_same_creator() -> None:
    def generated() -> tuple[int, list[int], int]:
        platform = Platform.fresh(config=SimulatorConfig(seed=5), clock=Clock())
        populate(platform, DemoShape(fans=50))
        return platform.data.creator.id, sorted(platform.data.fans), len(platform.data.transactions)

    assert generated() == generated()


@contextlib.contextmanager
def cli_simulator(*args: str) -> Iterator[str]:
    """`python -m huntaze_simulator serve ...` as its own process; yields its base URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "huntaze_simulator", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/rules.json").status_code == 200:
                    break
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.05)
        yield base_url
    finally:
        # SIGTERM: uvicorn shuts down gracefully and the lifespan writes the snapshot.
        process.terminate()
        process.wait(timeout=20)


async def state_of(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url) as control:
        state: dict[str, Any] = (await control.get("/_control/state")).json()
        return state


async def test_the_command_line_demo_keeps_its_creator_across_a_restart(tmp_path: Path) -> None:
    snapshot = tmp_path / "demo.json"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"demo_activity_seconds": 0.05}))
    demo_args = ("--demo", "--fans", "120", "--snapshot", str(snapshot), "--config", str(config))
    with cli_simulator(*demo_args) as base_url:
        before = await state_of(base_url)
        assert before["fans"] >= 120
        # Fans keep acting while the demo runs.
        await eventually(
            lambda: state_of(base_url), lambda state: state["messages"] > before["messages"]
        )
    assert snapshot.exists()
    with cli_simulator("--snapshot", str(snapshot)) as base_url:
        after = await state_of(base_url)
    assert after["creator"] == before["creator"]
    assert after["fans"] >= before["fans"]
    assert after["messages"] > before["messages"]
