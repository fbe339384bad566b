"""Fixtures of the auth tests: a migrated database, the service with a controllable clock, and
the whole auth process (gRPC, outbox relay, email sender) on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.auth.v1 import auth_pb2_grpc, events_pb2
from huntaze_auth import repository
from huntaze_auth.config import AuthSettings
from huntaze_auth.models import SCHEMA
from huntaze_auth.sealing import Sealer
from huntaze_auth.server import MIGRATIONS_PACKAGE, AuthServer, build_service, load_sealer
from huntaze_auth.service import AuthService
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_kit.db import create_engine, create_read_pool, session_factory
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.outbox import schema_tables

M = TypeVar("M", bound=Message)

# Cheap enough to hash hundreds of times (the default is OWASP's cost).
LIGHT_ARGON2 = {"auth_argon2_time_cost": 1, "auth_argon2_memory_kib": 1024}
SERVICE_ACCOUNTS = {"crm": "crm-service-secret"}


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def make_settings(
    database_url: str, nats_url: str = "nats://127.0.0.1:1", **overrides: Any
) -> AuthSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "nats_url": nats_url,
        "auth_grpc_host": "127.0.0.1",
        "auth_grpc_port": 0,
        "auth_metrics_port": 0,
        "auth_service_accounts": SERVICE_ACCOUNTS,
        "auth_email_resend_interval_seconds": 0,
        "db_pool_size": 5,
        "db_max_overflow": 60,
        **LIGHT_ARGON2,
    }
    values.update(overrides)
    return AuthSettings(**values)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    return database_url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sessions(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(
        migrated_url, application_name="auth-tests", pool_size=5, max_overflow=60
    )
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def reads(migrated_url: str) -> AsyncIterator[Any]:
    pool = await create_read_pool(migrated_url, application_name="auth-tests", max_size=5)
    try:
        yield pool
    finally:
        await pool.close()


ServiceFactory = Callable[..., Awaitable[AuthService]]


@pytest.fixture
def make_service(
    migrated_url: str, sessions: async_sessionmaker[AsyncSession], reads: Any, clock: Clock
) -> ServiceFactory:
    """Builds the use cases over the test database; keyword arguments override settings."""

    async def build(**overrides: Any) -> AuthService:
        settings = make_settings(migrated_url, **overrides)
        sealer = await load_sealer(settings, sessions)
        service = build_service(
            settings, sessions=sessions, reads=reads, sealer=sealer, clock=clock
        )
        await service.keyring.load()
        return service

    return build


@pytest.fixture
async def service(make_service: ServiceFactory) -> AuthService:
    return await make_service()


@pytest.fixture
async def auth_server(
    migrated_url: str, nats_url: str, mail_catcher: MailCatcher, clock: Clock
) -> AsyncIterator[AuthServer]:
    server = AuthServer(
        make_settings(
            migrated_url,
            nats_url,
            smtp_url=mail_catcher.smtp_url,
            public_url="https://app.example.com",
        ),
        clock=clock,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stub(auth_server: AuthServer) -> AsyncIterator[auth_pb2_grpc.AuthServiceAsyncStub]:
    channel = create_channel(f"127.0.0.1:{auth_server.port}")
    try:
        yield auth_pb2_grpc.AuthServiceStub(channel)
    finally:
        await channel.close()


class Outbox:
    """Reads the events the service wrote to its outbox, and opens the tokens they carry."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def events(self, subject: str, message_cls: type[M]) -> list[M]:
        table = schema_tables(SCHEMA).outbox
        async with self._sessions() as db:
            rows = await db.execute(
                select(table.c.payload).where(table.c.subject == subject).order_by(table.c.seq)
            )
            return [message_cls.FromString(payload) for payload in rows.scalars()]

    async def subjects(self) -> list[str]:
        table = schema_tables(SCHEMA).outbox
        async with self._sessions() as db:
            rows = await db.execute(select(table.c.subject).order_by(table.c.seq))
            return list(rows.scalars())

    async def unseal(self, sealed: bytes) -> str:
        async with self._sessions() as db:
            return Sealer(await repository.list_sealing_keys(db)).unseal(sealed)

    async def verification_token(self) -> str:
        events = await self.events(
            "auth.email_verification.requested", events_pb2.EmailVerificationRequested
        )
        return await self.unseal(events[-1].sealed_token)

    async def reset_token(self) -> str:
        events = await self.events(
            "auth.password_reset.requested", events_pb2.PasswordResetRequested
        )
        return await self.unseal(events[-1].sealed_token)


@pytest.fixture
def outbox(sessions: async_sessionmaker[AsyncSession]) -> Outbox:
    return Outbox(sessions)
