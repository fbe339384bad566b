"""Async SQLAlchemy engines and sessions, one schema per service, and asyncpg pools for the few
reads that sit on every request's path.

Neither checks a connection with a round trip each time it is taken from the pool. SQLAlchemy's
`pool_pre_ping` would cost one (three outside autocommit: BEGIN, the ping, ROLLBACK) per checkout.
Instead, a connection whose socket the server closed (a restart, an idle timeout) is replaced on
checkout without a round trip, one that sat unused for `IDLE_PING_SECONDS` is pinged first (a
firewall may have dropped it silently), and one that fails in use is dropped: SQLAlchemy
invalidates it and its pool, and `fetch_row` retries a read once on a fresh connection.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from sqlalchemy import event, literal, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

IDLE_PING_SECONDS = 30.0
_IDLE_SINCE = "huntaze_idle_since"

# What a lost connection looks like to asyncpg: the socket went away, the server is shutting
# down or restarting, or the connection was already closed; or the server's farewell (the FATAL
# a terminated backend sends while the connection sits idle) left it mid-message.
CONNECTION_LOST_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,  # class 08, and ConnectionDoesNotExistError
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InternalClientError,
)


def async_url(url: str) -> URL:
    """Accepts `postgresql://` and `postgres://` URLs and selects the asyncpg driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in {"postgresql", "postgresql+psycopg2", "postgresql+psycopg"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def libpq_url(url: str) -> str:
    """The same URL for libpq-style clients (asyncpg directly): no SQLAlchemy driver suffix."""
    return async_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    application_name: str,
    pool_size: int = 10,
    max_overflow: int = 10,
    idle_ping_seconds: float = IDLE_PING_SECONDS,
) -> AsyncEngine:
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": application_name}},
    )
    _ping_when_idle(engine, idle_ping_seconds)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """On checkout, replaces a connection whose socket is closed, and pings one that sat in the
    pool for `idle_seconds` (a failed ping replaces it too): DisconnectionError makes the pool
    take another connection, so the caller never sees the dead one."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed the connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("connection lost while idle in the pool") from error


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside its transaction (begun here when no
    statement has begun it yet), for set-based statements without SQLAlchemy in between."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        await session.execute(select(literal(1)))  # SQLAlchemy begins on the first statement
    return driver


async def _no_reset(connection: asyncpg.Connection) -> None:
    """Nothing to undo: the pool's users run single statements and leave no session state."""


async def create_read_pool(
    url: str,
    *,
    application_name: str,
    min_size: int = 1,
    max_size: int = 10,
) -> asyncpg.Pool:
    """An asyncpg pool for hot single-statement reads (`fetch_row`), in autocommit.

    It skips asyncpg's reset query on each release (about half of PostgreSQL's work for a
    one-row read): use it only for statements that leave no session state behind, no
    transactions, SET, LISTEN, advisory locks or cursors. Connections stay open like the
    engine's (no idle timer armed on every release); asyncpg replaces each one after 50,000
    queries.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        libpq_url(url),
        min_size=min_size,
        max_size=max_size,
        max_inactive_connection_lifetime=0,
        reset=_no_reset,
        server_settings={"application_name": application_name},
    )
    return pool


async def fetch_row(pool: asyncpg.Pool, query: str, *args: Any) -> asyncpg.Record | None:
    """The first row of a read-only `query` (None: no row). A read that failed because its
    connection was lost (e.g. PostgreSQL restarted) is tried once more, after every pooled
    connection has been marked for replacement (they were likely lost together)."""
    try:
        return await pool.fetchrow(query, *args)
    except CONNECTION_LOST_ERRORS:
        await pool.expire_connections()
        return await pool.fetchrow(query, *args)
