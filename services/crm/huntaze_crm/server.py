"""The CRM process: gRPC API, real-time inbox, outbox relay and platform-event consumers, until
SIGTERM.

python -m huntaze_crm.server            # serve (default)
python -m huntaze_crm.server migrate    # apply the crm schema's migrations, then exit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from datetime import timedelta

import asyncpg
import grpc
import uvloop
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine

from huntaze.crm.v1 import crm_pb2_grpc
from huntaze_crm.config import CrmSettings
from huntaze_crm.consumers import ai_consumer, platform_consumers
from huntaze_crm.grpc_api import SERVICE_NAME, CrmServicer, access_policy
from huntaze_crm.inbox import InboxHub, InboxPruner
from huntaze_crm.models import SCHEMA
from huntaze_crm.reads import CrmReader
from huntaze_crm.service import Clock, CrmService, utc_now
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.db import create_engine, create_read_pool, session_factory
from huntaze_kit.grpc_client import GrpcKeySource, create_channel
from huntaze_kit.grpc_server import GrpcServer, run_until_signalled
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.logging import configure_logging, get_logger
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.outbox import OutboxRelay
from huntaze_kit.revocations import RevocationFollower
from huntaze_kit.streams import connect_nats, ensure_streams

MIGRATIONS_PACKAGE = "huntaze_crm.migrations"

log = get_logger(__name__)


class CrmServer:
    """Everything the CRM process runs, started and stopped together.

    `key_source` defaults to auth's public keys over gRPC (`HUNTAZE_AUTH_GRPC_TARGET`).
    """

    def __init__(
        self,
        settings: CrmSettings,
        *,
        key_source: KeySource | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.port: int = settings.crm_grpc_port
        self.service: CrmService | None = None
        self.inbox: InboxHub | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[EventConsumer] = []
        self._key_source = key_source
        self._clock = clock
        self._engine: AsyncEngine | None = None
        self._reads: asyncpg.Pool | None = None
        self._nats: NatsClient | None = None
        self._auth_channel: grpc.aio.Channel | None = None
        self._revocations: RevocationFollower | None = None
        self._pruner: InboxPruner | None = None
        self._grpc: GrpcServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        settings = self.settings
        self._engine = create_engine(
            settings.database_url,
            application_name="huntaze-crm",
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        sessions = session_factory(self._engine)
        self._reads = await create_read_pool(
            settings.database_url,
            application_name="huntaze-crm-reads",
            max_size=settings.db_pool_size,
        )
        reader = CrmReader(self._reads)
        service = CrmService(
            sessions,
            reader=reader,
            clock=self._clock,
            automation_budget=settings.crm_automation_messages_per_fan_per_day,
        )
        self.service = service

        self._nats = await connect_nats(settings.nats_url, name="huntaze-crm")
        await ensure_streams(self._nats.jetstream())

        self.inbox = InboxHub(database_url=settings.database_url, reader=reader)
        await self.inbox.start()

        key_source = self._key_source
        if key_source is None:
            self._auth_channel = create_channel(settings.auth_grpc_target)
            key_source = GrpcKeySource(self._auth_channel)
        verifier = TokenVerifier(
            key_source=key_source,
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )
        self._revocations = RevocationFollower(self._nats, verifier.revocations)
        await self._revocations.start()

        self._grpc = GrpcServer(
            host=settings.crm_grpc_host,
            port=settings.crm_grpc_port,
            verifier=verifier,
            policy=access_policy(),
            grace_seconds=settings.crm_grace_seconds,
        )
        self._grpc.add(
            functools.partial(
                crm_pb2_grpc.add_CrmServiceServicer_to_server, CrmServicer(service, self.inbox)
            ),
            SERVICE_NAME,
        )
        self.port = await self._grpc.start()

        self.relay = OutboxRelay(
            database_url=settings.database_url, schema=SCHEMA, nats_url=self._nats
        )
        self.consumers = platform_consumers(
            nats=self._nats,
            session_factory=sessions,
            service=service,
            batch=settings.crm_consumer_batch_size,
            concurrency=settings.crm_consumer_concurrency,
        )
        self.consumers.append(
            ai_consumer(
                nats=self._nats,
                session_factory=sessions,
                service=service,
                batch=settings.crm_consumer_batch_size,
            )
        )
        for consumer in self.consumers:
            await consumer.start()  # configuration errors surface here, not in a task
        self._pruner = InboxPruner(
            sessions,
            retention=timedelta(hours=settings.crm_inbox_retention_hours),
            keep_events=settings.crm_inbox_retention_events,
        )
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="crm-outbox-relay"),
            asyncio.create_task(self._pruner.run(), name="crm-inbox-pruner"),
            *(
                asyncio.create_task(consumer.run(), name=consumer.durable)
                for consumer in self.consumers
            ),
        ]
        log.info("crm_started", port=self.port)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop()
        for consumer in self.consumers:
            await consumer.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self._pruner is not None:
            self._pruner.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10.0)
        self._tasks = []
        if self.inbox is not None:
            await self.inbox.stop()
        if self._revocations is not None:
            with contextlib.suppress(Exception):
                await self._revocations.stop()
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.drain()
        if self._auth_channel is not None:
            await self._auth_channel.close()
        if self._reads is not None:
            await self._reads.close()
        if self._engine is not None:
            await self._engine.dispose()
        log.info("crm_stopped")


async def serve(settings: CrmSettings) -> None:
    server = CrmServer(settings)
    await run_until_signalled(start=server.start, stop=server.stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="huntaze_crm.server", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = CrmSettings()
    configure_logging(service="crm", level=settings.log_level, fmt=settings.log_format)
    if args.command == "migrate":
        uvloop.run(upgrade_async(settings.database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
