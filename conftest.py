"""Fixtures for every test in the repository: PostgreSQL, NATS and a mail catcher.

PostgreSQL: `HUNTAZE_TEST_DATABASE_URL` when set, else a container when a Docker engine answers,
else an embedded server for the whole session. Each test that asks for `database_url` gets its own
fresh database, dropped afterwards.

NATS: `HUNTAZE_TEST_NATS_URL` when set (every stream on it is deleted before each test), else an
embedded server per test (it starts in about 0.1 s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from huntaze_devstack.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    drop_database,
    ensure_database,
    free_port,
)
from huntaze_devstack.mailcatcher import MailCatcher

POSTGRES_IMAGE = "pgvector/pgvector:pg16"


def _docker_answers() -> bool:
    """True when a Docker engine (not just the client) responds."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        result = subprocess.run(  # noqa: S603
            [docker, "info"], capture_output=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@contextlib.contextmanager
def _scratch_dir(prefix: str) -> Iterator[Path]:
    """A short, world-traversable temporary directory (PostgreSQL may run as another user)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL 16 server (with pgvector) for the whole test session."""
    configured = os.environ.get("HUNTAZE_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
        return
    with _scratch_dir("huntaze-pg-") as scratch:
        server = EmbeddedPostgres(
            scratch / "data", free_port(), durable=False, settings={"max_connections": "300"}
        )
        with server:
            yield server.url


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test alone; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = await ensure_database(pg_server_url, name)
    try:
        yield url
    finally:
        await drop_database(pg_server_url, name)


async def _delete_every_stream(url: str) -> None:
    import nats  # noqa: PLC0415

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        jetstream = client.jetstream()
        for info in await jetstream.streams_info():
            await jetstream.delete_stream(info.config.name)
    finally:
        await client.close()


@pytest.fixture
async def nats_url() -> AsyncIterator[str]:
    """A NATS server with JetStream and no streams, for this test."""
    configured = os.environ.get("HUNTAZE_TEST_NATS_URL")
    if configured:
        await _delete_every_stream(configured)
        yield configured
        return
    with _scratch_dir("huntaze-nats-") as scratch, EmbeddedNats(scratch, free_port()) as server:
        yield server.url


@pytest.fixture
def embedded_nats() -> Iterator[EmbeddedNats]:
    """A running embedded NATS server the test may stop, restart or kill."""
    with _scratch_dir("huntaze-nats-") as scratch, EmbeddedNats(scratch, free_port()) as server:
        yield server


@pytest.fixture
def mail_catcher() -> Iterator[MailCatcher]:
    """A running SMTP mail catcher; `.smtp_url` to send, `.messages()` / `.wait_for()` to read."""
    with _scratch_dir("huntaze-mail-") as scratch, MailCatcher(scratch / "mail") as catcher:
        yield catcher
