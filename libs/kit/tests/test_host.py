"""The service host: parts start in order and stop in reverse, a failed start stops what had
started, one grace period bounds the whole stop, and the metrics endpoint serves the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import Counter

from huntaze_kit.host import Host, Service

pytestmark = pytest.mark.timeout(60)


class Recorded:
    """A part that notes its start and its stop in a shared journal."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")


class Declared(Service):
    """A service whose parts are given to it: `build` adds them in order."""

    def __init__(self, parts: Callable[[Host], list[Recorded]], *, grace: float = 5.0) -> None:
        super().__init__("probe", grace_seconds=grace, metrics_host="127.0.0.1", metrics_port=0)
        self._parts = parts

    async def build(self, host: Host) -> None:
        for part in self._parts(host):
            await host.add(part.name, part)


async def test_parts_start_in_order_and_stop_in_reverse() -> None:
    journal: list[str] = []
    service = Declared(lambda _: [Recorded(name, journal) for name in ("db", "nats", "grpc")])
    await service.start()
    assert journal == ["start db", "start nats", "start grpc"]
    assert service.host.parts == ["metrics", "db", "nats", "grpc"]

    await service.stop()
    assert journal[3:] == ["stop grpc", "stop nats", "stop db"]
    assert service.host.parts == []
    await service.stop()  # a second stop has nothing left to do
    assert len(journal) == 6


async def test_a_failed_start_stops_what_started_and_raises() -> None:
    journal: list[str] = []
    service = Declared(
        lambda _: [
            Recorded("db", journal),
            Recorded("nats", journal),
            Recorded("grpc", journal, fail_start=True),
            Recorded("never", journal),
        ]
    )
    with pytest.raises(RuntimeError, match="grpc cannot start"):
        await service.start()
    assert journal == ["start db", "start nats", "stop nats", "stop db"]
    assert service.host.parts == []
    with pytest.raises(httpx.ConnectError):  # the metrics endpoint is closed too
        await _get(f"http://127.0.0.1:{service.metrics_port}/metrics")


async def test_a_part_failing_to_stop_does_not_keep_the_others_running() -> None:
    journal: list[str] = []
    host = Host("probe", grace_seconds=5.0)
    await host.add("db", Recorded("db", journal))

    async def broken() -> None:
        raise RuntimeError("cannot stop")

    host.on_stop("broken", broken)
    await host.add("grpc", Recorded("grpc", journal))
    await host.stop()
    assert journal == ["start db", "start grpc", "stop grpc", "stop db"]


async def test_one_grace_period_bounds_the_whole_stop() -> None:
    host = Host("probe", grace_seconds=0.5)
    asked: list[float] = []

    async def deaf() -> None:  # ignores every request to finish
        await asyncio.Event().wait()

    async def ask(grace: float) -> None:
        asked.append(grace)

    first = host.task("first", deaf(), stop=ask)
    second = host.task("second", deaf(), stop=ask)
    periodic_runs: list[float] = []

    async def tick() -> None:
        periodic_runs.append(time.monotonic())

    host.every("tick", 3600.0, tick)
    started = time.monotonic()
    await host.stop()
    took = time.monotonic() - started
    assert first.cancelled()
    assert second.cancelled()
    # The first part stopped waited out the grace period; the next got only the least time.
    assert 0.5 <= took < 1.5, took
    assert asked[0] == pytest.approx(0.5, abs=0.1)
    assert asked[1] == pytest.approx(0.1, abs=0.05)
    assert periodic_runs == []


async def test_the_metrics_endpoint_serves_the_default_registry() -> None:
    probes = Counter("host_test_probes_total", "Probes counted by the host test.")
    probes.inc(3)
    service = Declared(lambda _: [])
    await service.start()
    try:
        url = f"http://127.0.0.1:{service.metrics_port}/metrics"
        body = await _get(url)
    finally:
        await service.stop()
    assert "host_test_probes_total 3.0" in body


async def _get(url: str) -> str:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.text
