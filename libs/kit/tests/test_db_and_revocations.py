"""Staying up through the loss of a connection: pooled PostgreSQL connections the server
dropped, and the revocation follower across a NATS restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from huntaze.auth.v1.events_pb2 import SessionRevoked
from huntaze_kit.db import create_engine, create_read_pool, fetch_row, libpq_url
from huntaze_kit.identity import RevocationList
from huntaze_kit.revocations import SESSION_REVOKED_SUBJECT, RevocationFollower
from huntaze_kit.streams import connect_nats, context_stream, ensure_streams


async def until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def terminate_backend(database_url: str, pid: int) -> None:
    admin = await asyncpg.connect(libpq_url(database_url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_pooled_connection_the_server_closed_is_replaced_unseen(database_url: str) -> None:
    engine = create_engine(database_url, application_name="db-test", pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await terminate_backend(database_url, first)
        await asyncio.sleep(0.3)  # the server's close reaches the pooled connection's socket
        async with engine.connect() as conn:
            second = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert second != first
    finally:
        await engine.dispose()


async def test_the_read_pool_survives_a_lost_connection(database_url: str) -> None:
    pool = await create_read_pool(database_url, application_name="db-test", max_size=1)
    try:
        first = await fetch_row(pool, "SELECT pg_backend_pid() AS pid")
        assert first is not None
        await terminate_backend(database_url, first["pid"])
        second = await fetch_row(pool, "SELECT pg_backend_pid() AS pid")
        assert second is not None
        assert second["pid"] != first["pid"]
    finally:
        await pool.close()


def revocation(session_id: str) -> bytes:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return SessionRevoked(
        session_id=session_id, user_id="u-1", reason="logout", occurred_at=stamp
    ).SerializeToString()


async def test_the_revocation_follower_keeps_following_through_a_nats_restart(
    embedded_nats: Any,
) -> None:
    client = await connect_nats(embedded_nats.url, name="follower-test", reconnect_time_wait=0.2)
    revocations = RevocationList()
    follower = RevocationFollower(client, revocations, check_interval=0.1)
    try:
        js = client.jetstream()
        await ensure_streams(js, [context_stream("auth")])
        before = uuid.uuid4().hex
        await js.publish(SESSION_REVOKED_SUBJECT, revocation(before))
        await follower.start()
        await until(lambda: revocations.is_revoked(before), timeout=10, what="the replay")

        await asyncio.to_thread(embedded_nats.restart)
        await until(lambda: client.is_connected, timeout=20, what="the reconnection")
        after = uuid.uuid4().hex
        await js.publish(SESSION_REVOKED_SUBJECT, revocation(after))
        await until(
            lambda: revocations.is_revoked(after),
            timeout=20,
            what="a revocation published after the restart",
        )
        assert follower.ready.is_set()
    finally:
        await follower.stop()
        await client.close()
