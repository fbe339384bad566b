"""The auth process: gRPC API, outbox relay and email sender, until SIGTERM.

python -m huntaze_auth.server              # serve (default)
python -m huntaze_auth.server migrate      # apply the auth schema's migrations, then exit
python -m huntaze_auth.server rotate-keys  # make a new signing key now, then exit
"""

from __future__ import annotations

import functools
from datetime import timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
from huntaze_auth.streams import AUTH
from huntaze_auth.tokens import KeyRing
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.grpc_server import GrpcServer
from huntaze_kit.host import Host, Service, service_main
from huntaze_kit.identity import TokenVerifier
from huntaze_kit.outbox import OutboxRelay

MIGRATIONS_PACKAGE = "huntaze_auth.migrations"
KEY_CHECK_INTERVAL_SECONDS = 60.0
PURGE_INTERVAL_SECONDS = 3600.0


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


class AuthServer(Service):
    """Everything the auth process runs, started in order and stopped in reverse."""

    def __init__(self, settings: AuthSettings, *, clock: Clock = utc_now) -> None:
        super().__init__(
            "auth",
            grace_seconds=settings.grace_seconds,
            metrics_host=settings.auth_grpc_host,
            metrics_port=settings.auth_metrics_port,
        )
        self.settings = settings
        self._clock = clock
        self.port: int = settings.auth_grpc_port
        self.service: AuthService | None = None
        self.relay: OutboxRelay | None = None
        self.email_consumer: EventConsumer | None = None

    async def build(self, host: Host) -> None:
        settings = self.settings
        db = await host.database(settings, application_name="huntaze-auth")
        sealer = await load_sealer(settings, db.sessions)
        service = build_service(
            settings, sessions=db.sessions, reads=db.reads, sealer=sealer, clock=self._clock
        )
        await service.keyring.load()
        self.service = service
        nats = await host.nats(settings.nats_url, name="huntaze-auth", streams=[AUTH])

        self.relay = OutboxRelay(database_url=settings.database_url, schema=SCHEMA, nats_url=nats)
        host.outbox_relay(self.relay)
        self.email_consumer = email_consumer(
            nats=nats,
            session_factory=db.sessions,
            dispatcher=EmailDispatcher(
                templates=EmailTemplates(public_url=settings.public_url),
                sender=build_sender(settings),
                sealer=sealer,
                clock=self._clock,
            ),
        )
        await host.consumer(self.email_consumer)
        host.every("signing-keys", KEY_CHECK_INTERVAL_SECONDS, service.keyring.load)
        host.every("purge", PURGE_INTERVAL_SECONDS, service.purge_stale)

        server = GrpcServer(
            host=settings.auth_grpc_host,
            port=settings.auth_grpc_port,
            verifier=TokenVerifier(
                key_source=service.keyring,
                audience=settings.token_audience,
                issuer=settings.token_issuer,
                session_check=service.session_is_active,
            ),
            policy=access_policy(settings.auth_service_accounts),
        )
        server.add(
            functools.partial(
                auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(service)
            ),
            SERVICE_NAME,
        )
        self.port = await host.grpc(server)


async def rotate_keys(settings: AuthSettings) -> None:
    engine = create_engine(settings.database_url, application_name="huntaze-auth-admin")
    try:
        await build_keyring(settings, sessions=session_factory(engine)).rotate()
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    service_main(
        name="auth",
        description=__doc__,
        settings=AuthSettings,
        service=AuthServer,
        migrations=MIGRATIONS_PACKAGE,
        schema=SCHEMA,
        commands={"rotate-keys": rotate_keys},
        argv=argv,
    )


if __name__ == "__main__":
    main()
