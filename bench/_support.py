"""What every benchmark needs: infrastructure, child processes, percentiles.

Benchmarks run as scripts (`python bench/NAME.py`), so this module sits beside them and is imported
as `_support`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from huntaze_devstack.embedded import EmbeddedNats, EmbeddedPostgres, free_port


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


async def wait_until(check: object, children: Sequence[Child], within: float = 60.0) -> None:
    """Polls the async callable `check` until it returns True; fails early when a child dies."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for child in children:
            if child.popen.poll() is not None:
                raise RuntimeError(f"{child.name} exited:\n{child.tail()}")
        with contextlib.suppress(Exception):
            if await check():  # type: ignore[operator]
                return
        await asyncio.sleep(0.2)
    raise RuntimeError("not ready in time:\n" + "\n".join(c.tail() for c in children))
