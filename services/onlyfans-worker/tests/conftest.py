"""Fixtures of the OnlyFans worker tests: its schema on a fresh database, and a moto server (the
local AWS emulator, in server mode on a loopback port) for the KMS and Secrets Manager paths."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_devstack.embedded import free_port, port_accepts
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.migrations import upgrade_async
from huntaze_onlyfans_worker.models import SCHEMA

MIGRATIONS_PACKAGE = "huntaze_onlyfans_worker.migrations"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh database holding the `onlyfans` schema."""
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    engine = create_engine(database_url, application_name="onlyfans-worker-tests")
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def _moto_server() -> str:
    found = shutil.which("moto_server")
    if found:
        return found
    return str(Path(sys.executable).parent / "moto_server")


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on a free loopback port, with the fake credentials boto3 needs."""
    port = free_port()
    process = subprocess.Popen(
        [_moto_server(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_accepts("127.0.0.1", port):
            assert process.poll() is None, "moto_server exited"
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.05)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
