"""The OnlyFans worker process: gRPC API, the accounts it drives (push listeners and sync), the
send and command consumers, and the outbox relay, until SIGTERM.

python -m huntaze_onlyfans_worker.server            # serve (default)
python -m huntaze_onlyfans_worker.server migrate    # apply the onlyfans schema's migrations
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import shutil

import grpc
import uvloop
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine

from huntaze.onlyfans.v1 import onlyfans_pb2_grpc
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.grpc_client import GrpcKeySource, create_channel
from huntaze_kit.grpc_server import GrpcServer, run_until_signalled
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.logging import configure_logging, get_logger
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.outbox import OutboxRelay
from huntaze_kit.revocations import RevocationFollower
from huntaze_kit.streams import connect_nats, ensure_streams
from huntaze_onlyfans_worker.accounts import Accounts, Clock, utc_now
from huntaze_onlyfans_worker.config import OnlyfansSettings
from huntaze_onlyfans_worker.consumers import Commands, worker_consumers
from huntaze_onlyfans_worker.grpc_api import SERVICE_NAME, OnlyFansServicer, access_policy
from huntaze_onlyfans_worker.models import SCHEMA
from huntaze_onlyfans_worker.onlyfans_web import (
    DEFAULT_USER_AGENT,
    OnlyFansWebDriver,
    WebDriverConfig,
)
from huntaze_onlyfans_worker.runner import Runner
from huntaze_onlyfans_worker.sending import Pacing, Sender
from huntaze_onlyfans_worker.service import OnlyfansService
from huntaze_onlyfans_worker.sync import Syncer
from huntaze_onlyfans_worker.vault import vault_from_settings

MIGRATIONS_PACKAGE = "huntaze_onlyfans_worker.migrations"

log = get_logger(__name__)


def browser_path(settings: OnlyfansSettings) -> str | None:
    """The configured Chromium, else the system's `chromium`; None lets Playwright use its own."""
    if settings.onlyfans_browser_path:
        return settings.onlyfans_browser_path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def web_driver(settings: OnlyfansSettings) -> OnlyFansWebDriver:
    return OnlyFansWebDriver(
        WebDriverConfig(
            base_url=settings.onlyfans_base_url,
            rules_url=settings.onlyfans_rules_url,
            executable_path=browser_path(settings),
            user_agent=settings.onlyfans_user_agent or DEFAULT_USER_AGENT,
            rules_ttl_seconds=settings.onlyfans_rules_ttl_seconds,
            max_contexts=settings.onlyfans_max_contexts,
            idle_seconds=settings.onlyfans_context_idle_seconds,
            rate_limit_pause_seconds=settings.onlyfans_rate_limit_pause_seconds,
        )
    )


class WorkerServer:
    """Everything the worker process runs, started and stopped together.

    `key_source` defaults to auth's public keys over gRPC (`HUNTAZE_AUTH_GRPC_TARGET`).
    """

    def __init__(
        self,
        settings: OnlyfansSettings,
        *,
        key_source: KeySource | None = None,
        clock: Clock = utc_now,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.port: int = settings.onlyfans_grpc_port
        self.driver: OnlyFansWebDriver | None = None
        self.accounts: Accounts | None = None
        self.service: OnlyfansService | None = None
        self.runner: Runner | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[EventConsumer] = []
        self._key_source = key_source
        self._clock = clock
        self._holder = holder
        self._engine: AsyncEngine | None = None
        self._nats: NatsClient | None = None
        self._auth_channel: grpc.aio.Channel | None = None
        self._revocations: RevocationFollower | None = None
        self._grpc: GrpcServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        settings = self.settings
        self._engine = create_engine(
            settings.database_url,
            application_name="huntaze-onlyfans-worker",
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        sessions = session_factory(self._engine)
        self.driver = web_driver(settings)
        accounts = Accounts(
            sessions=sessions,
            vault=vault_from_settings(settings),
            driver=self.driver,
            lease_seconds=settings.onlyfans_lease_seconds,
            holder=self._holder,
            clock=self._clock,
        )
        self.accounts = accounts
        syncer = Syncer(accounts)
        self.runner = Runner(
            accounts,
            syncer,
            capacity=settings.onlyfans_max_contexts,
            sync_interval=settings.onlyfans_sync_interval_seconds,
            sync_jitter=settings.onlyfans_sync_jitter,
            close_idle=self.driver.close_idle,
        )
        self.service = OnlyfansService(accounts)
        self.service.on_connected.append(self.runner.wake)
        self.service.on_disconnected.append(self.runner.stop_account)
        sender = Sender(
            accounts,
            Pacing(
                interval=max(
                    settings.onlyfans_send_interval_seconds, settings.onlyfans_throttle_seconds
                ),
                jitter=settings.onlyfans_send_jitter_seconds,
                throttle=settings.onlyfans_throttle_seconds,
            ),
        )

        self._nats = await connect_nats(settings.nats_url, name="huntaze-onlyfans-worker")
        await ensure_streams(self._nats.jetstream())

        key_source = self._key_source
        if key_source is None:
            self._auth_channel = create_channel(settings.auth_grpc_target)
            key_source = GrpcKeySource(self._auth_channel)
        verifier = TokenVerifier(
            key_source=key_source, audience=settings.token_audience, issuer=settings.token_issuer
        )
        self._revocations = RevocationFollower(self._nats, verifier.revocations)
        await self._revocations.start()

        self._grpc = GrpcServer(
            host=settings.onlyfans_grpc_host,
            port=settings.onlyfans_grpc_port,
            verifier=verifier,
            policy=access_policy(),
            grace_seconds=settings.onlyfans_grace_seconds,
        )
        self._grpc.add(
            functools.partial(
                onlyfans_pb2_grpc.add_OnlyFansServiceServicer_to_server,
                OnlyFansServicer(self.service),
            ),
            SERVICE_NAME,
        )
        self.port = await self._grpc.start()

        self.relay = OutboxRelay(
            database_url=settings.database_url, schema=SCHEMA, nats_url=self._nats
        )
        self.consumers = worker_consumers(
            nats=self._nats,
            session_factory=sessions,
            commands=Commands(accounts, self.runner, sender),
        )
        for consumer in self.consumers:
            await consumer.start()  # configuration errors surface here, not in a task
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="onlyfans-outbox-relay"),
            asyncio.create_task(self.runner.run(), name="onlyfans-runner"),
            *(
                asyncio.create_task(consumer.run(), name=consumer.durable)
                for consumer in self.consumers
            ),
        ]
        log.info("onlyfans_worker_started", port=self.port, holder=accounts.holder)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop()
        for consumer in self.consumers:
            await consumer.stop()
        if self.runner is not None:
            await self.runner.stop()
        if self.relay is not None:
            await self.relay.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10.0)
        self._tasks = []
        if self.driver is not None:
            await self.driver.close()
        if self._revocations is not None:
            with contextlib.suppress(Exception):
                await self._revocations.stop()
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.drain()
        if self._auth_channel is not None:
            await self._auth_channel.close()
        if self._engine is not None:
            await self._engine.dispose()
        log.info("onlyfans_worker_stopped")


async def serve(settings: OnlyfansSettings) -> None:
    server = WorkerServer(settings)
    await run_until_signalled(start=server.start, stop=server.stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="huntaze_onlyfans_worker.server", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = OnlyfansSettings()
    configure_logging(service="onlyfans-worker", level=settings.log_level, fmt=settings.log_format)
    if args.command == "migrate":
        uvloop.run(upgrade_async(settings.database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
