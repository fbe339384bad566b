"""The auth process: gRPC API, outbox relay and email sender, until SIGTERM.

python -m huntaze_auth.server              # serve (default)
python -m huntaze_auth.server migrate      # apply the auth schema's migrations, then exit
python -m huntaze_auth.server rotate-keys  # make a new signing key now, then exit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import uvloop
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from huntaze.auth.v1 import auth_pb2_grpc
from huntaze_auth import repository
from huntaze_auth.config import AuthSettings
from huntaze_auth.consumers import EmailDispatcher, email_consumer
from huntaze_auth.emails import EmailTemplates, build_sender
from huntaze_auth.grpc_api import SERVICE_NAME, AuthServicer, access_policy
from huntaze_auth.models import SCHEMA
from huntaze_auth.passwords import Argon2Parameters, Passwords
from huntaze_auth.sealing import Sealer
from huntaze_auth.service import AuthService, Clock, Lifetimes, LoginThrottle, utc_now
from huntaze_auth.tokens import KeyRing
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.db import create_engine, create_read_pool, session_factory
from huntaze_kit.grpc_server import GrpcServer, run_until_signalled
from huntaze_kit.identity import TokenVerifier
from huntaze_kit.logging import configure_logging, get_logger
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.outbox import OutboxRelay
from huntaze_kit.streams import connect_nats, ensure_streams

MIGRATIONS_PACKAGE = "huntaze_auth.migrations"
KEY_CHECK_INTERVAL_SECONDS = 60.0
PURGE_INTERVAL_SECONDS = 3600.0

log = get_logger(__name__)


async def load_sealer(settings: AuthSettings, sessions: async_sessionmaker[AsyncSession]) -> Sealer:
    """The configured sealing keys, else the one kept in the schema (made on first start)."""
    configured = settings.sealing_keys()
    if configured:
        return Sealer(configured)
    async with sessions() as db:
        keys = await repository.list_sealing_keys(db)
        if not keys:
            await repository.advisory_lock(db, "sealing-keys")
            keys = await repository.list_sealing_keys(db)
            if not keys:
                await repository.insert_sealing_key(db, Sealer.generate_key())
                await db.commit()
                keys = await repository.list_sealing_keys(db)
    return Sealer(keys)


def build_keyring(
    settings: AuthSettings, *, sessions: async_sessionmaker[AsyncSession], clock: Clock = utc_now
) -> KeyRing:
    return KeyRing(
        sessions,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        access_ttl=timedelta(seconds=settings.auth_access_token_ttl_seconds),
        service_ttl=timedelta(seconds=settings.auth_service_token_ttl_seconds),
        rotation_age=timedelta(days=settings.auth_signing_key_rotation_days),
        clock=clock,
    )


def build_service(
    settings: AuthSettings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    reads: asyncpg.Pool,
    sealer: Sealer,
    clock: Clock = utc_now,
) -> AuthService:
    """The use cases wired from settings (call `service.keyring.load()` before use)."""
    return AuthService(
        session_factory=sessions,
        read_pool=reads,
        passwords=Passwords(
            Argon2Parameters(
                time_cost=settings.auth_argon2_time_cost,
                memory_kib=settings.auth_argon2_memory_kib,
                parallelism=settings.auth_argon2_parallelism,
            ),
            min_score=settings.auth_password_min_score,
        ),
        keyring=build_keyring(settings, sessions=sessions, clock=clock),
        sealer=sealer,
        throttle=LoginThrottle(
            window=timedelta(seconds=settings.auth_login_window_seconds),
            max_per_account_ip=settings.auth_login_max_failures_per_account_ip,
            account_window=timedelta(seconds=settings.auth_login_account_window_seconds),
            max_per_account=settings.auth_login_max_failures_per_account,
            max_per_ip=settings.auth_login_max_failures_per_ip,
        ),
        lifetimes=Lifetimes(
            session=timedelta(seconds=settings.auth_session_lifetime_seconds),
            email_token=timedelta(seconds=settings.auth_email_token_ttl_seconds),
            challenge=timedelta(seconds=settings.auth_two_factor_challenge_ttl_seconds),
            email_resend_interval=timedelta(seconds=settings.auth_email_resend_interval_seconds),
        ),
        service_accounts={
            name: secret.get_secret_value()
            for name, secret in settings.auth_service_accounts.items()
        },
        clock=clock,
    )


async def _every(seconds: float, action: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await action()
        except Exception:
            log.exception("periodic_task_failed", task=name)


class AuthServer:
    """Everything the auth process runs, started and stopped together."""

    def __init__(self, settings: AuthSettings, *, clock: Clock = utc_now) -> None:
        self.settings = settings
        self._clock = clock
        self.port: int = settings.auth_grpc_port
        self.service: AuthService | None = None
        self.relay: OutboxRelay | None = None
        self.email_consumer: EventConsumer | None = None
        self._engine: AsyncEngine | None = None
        self._reads: asyncpg.Pool | None = None
        self._nats: NatsClient | None = None
        self._grpc: GrpcServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        settings = self.settings
        self._engine = create_engine(
            settings.database_url,
            application_name="huntaze-auth",
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        sessions = session_factory(self._engine)
        self._reads = await create_read_pool(
            settings.database_url, application_name="huntaze-auth", max_size=settings.db_pool_size
        )
        sealer = await load_sealer(settings, sessions)
        service = build_service(
            settings, sessions=sessions, reads=self._reads, sealer=sealer, clock=self._clock
        )
        await service.keyring.load()
        self.service = service

        self._nats = await connect_nats(settings.nats_url, name="huntaze-auth")
        await ensure_streams(self._nats.jetstream())

        verifier = TokenVerifier(
            key_source=service.keyring,
            audience=settings.token_audience,
            issuer=settings.token_issuer,
            session_check=service.session_is_active,
        )
        self._grpc = GrpcServer(
            host=settings.auth_grpc_host,
            port=settings.auth_grpc_port,
            verifier=verifier,
            policy=access_policy(settings.auth_service_accounts),
        )
        self._grpc.add(
            functools.partial(
                auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(service)
            ),
            SERVICE_NAME,
        )
        self.port = await self._grpc.start()

        self.relay = OutboxRelay(
            database_url=settings.database_url, schema=SCHEMA, nats_url=self._nats
        )
        self.email_consumer = email_consumer(
            nats=self._nats,
            session_factory=sessions,
            dispatcher=EmailDispatcher(
                templates=EmailTemplates(public_url=settings.public_url),
                sender=build_sender(settings),
                sealer=sealer,
                clock=self._clock,
            ),
        )
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="auth-outbox-relay"),
            asyncio.create_task(self.email_consumer.run(), name="auth-email-sender"),
            asyncio.create_task(
                _every(KEY_CHECK_INTERVAL_SECONDS, service.keyring.load, "signing-keys"),
                name="auth-signing-keys",
            ),
            asyncio.create_task(
                _every(PURGE_INTERVAL_SECONDS, service.purge_stale, "purge"), name="auth-purge"
            ),
        ]
        log.info("auth_started", port=self.port)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop()
        if self.email_consumer is not None:
            await self.email_consumer.stop()
        if self.relay is not None:
            await self.relay.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.drain()
        if self._reads is not None:
            await self._reads.close()
        if self._engine is not None:
            await self._engine.dispose()
        log.info("auth_stopped")


async def serve(settings: AuthSettings) -> None:
    server = AuthServer(settings)
    await run_until_signalled(start=server.start, stop=server.stop)


async def rotate_keys(settings: AuthSettings) -> None:
    engine = create_engine(settings.database_url, application_name="huntaze-auth-admin")
    try:
        await build_keyring(settings, sessions=session_factory(engine)).rotate()
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="huntaze_auth.server", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "migrate", "rotate-keys"]
    )
    args = parser.parse_args(argv)
    settings = AuthSettings()
    configure_logging(service="auth", level=settings.log_level, fmt=settings.log_format)
    if args.command == "migrate":
        uvloop.run(upgrade_async(settings.database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA))
    elif args.command == "rotate-keys":
        uvloop.run(rotate_keys(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
