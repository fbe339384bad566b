"""The AI agent process: gRPC API, the CRM event consumer, the drafting and autopilot workers
and the outbox relay, until SIGTERM.

python -m huntaze_ai_agent.server            # serve (default)
python -m huntaze_ai_agent.server migrate    # apply the ai schema's migrations, then exit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from datetime import timedelta

import grpc
import uvloop
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine

from huntaze.ai.v1 import ai_pb2_grpc
from huntaze_ai_agent.config import SERVICE_ACCOUNT, AiAgentSettings
from huntaze_ai_agent.consumers import crm_consumer
from huntaze_ai_agent.crm_client import CrmClient
from huntaze_ai_agent.drafting import Drafter
from huntaze_ai_agent.grpc_api import SERVICE_NAME, AiServicer, access_policy
from huntaze_ai_agent.models import SCHEMA
from huntaze_ai_agent.providers import Provider, provider_from_settings
from huntaze_ai_agent.service import DRAFTS_CHANNEL, AiAgentService, Clock, Timing, utc_now
from huntaze_ai_agent.workers import ClaimLoop
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.grpc_client import GrpcKeySource, ServiceTokenProvider, create_channel
from huntaze_kit.grpc_server import GrpcServer, run_until_signalled
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.logging import configure_logging, get_logger
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.outbox import OutboxRelay
from huntaze_kit.revocations import RevocationFollower
from huntaze_kit.streams import connect_nats, ensure_streams

MIGRATIONS_PACKAGE = "huntaze_ai_agent.migrations"
# Sends are quick gRPC calls: a few at once keep up with any number of due replies.
SEND_CONCURRENCY = 16

log = get_logger(__name__)


class AiAgentServer:
    """Everything the agent process runs, started and stopped together.

    `key_source` defaults to auth's public keys over gRPC; `provider` to the settings' choice.
    """

    def __init__(
        self,
        settings: AiAgentSettings,
        *,
        key_source: KeySource | None = None,
        provider: Provider | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.port: int = settings.ai_grpc_port
        self.service: AiAgentService | None = None
        self.relay: OutboxRelay | None = None
        self.consumer: EventConsumer | None = None
        self.drafting: ClaimLoop | None = None
        self.sending: ClaimLoop | None = None
        self._key_source = key_source
        self._provider = provider
        self._clock = clock
        self._engine: AsyncEngine | None = None
        self._nats: NatsClient | None = None
        self._channels: list[grpc.aio.Channel] = []
        self._revocations: RevocationFollower | None = None
        self._grpc: GrpcServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        settings = self.settings
        self._engine = create_engine(
            settings.database_url,
            application_name="huntaze-ai-agent",
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        sessions = session_factory(self._engine)
        self._nats = await connect_nats(settings.nats_url, name="huntaze-ai-agent")
        await ensure_streams(self._nats.jetstream())

        auth_channel = create_channel(settings.auth_grpc_target)
        crm_channel = create_channel(settings.crm_grpc_target)
        self._channels = [auth_channel, crm_channel]
        tokens = ServiceTokenProvider(
            auth_channel,
            service_name=SERVICE_ACCOUNT,
            service_secret=(
                settings.ai_service_secret.get_secret_value() if settings.ai_service_secret else ""
            ),
        )
        provider = self._provider or provider_from_settings(settings)
        service = AiAgentService(
            sessions,
            drafter=Drafter(provider),
            crm=CrmClient(crm_channel, tokens=tokens),
            timing=Timing(
                autopilot_min_delay=timedelta(seconds=settings.ai_autopilot_min_delay_seconds),
                autopilot_max_delay=timedelta(seconds=settings.ai_autopilot_max_delay_seconds),
                attribution_window=timedelta(hours=settings.ai_attribution_window_hours),
            ),
            clock=self._clock,
        )
        self.service = service

        verifier = TokenVerifier(
            key_source=self._key_source or GrpcKeySource(auth_channel),
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )
        self._revocations = RevocationFollower(self._nats, verifier.revocations)
        await self._revocations.start()
        self._grpc = GrpcServer(
            host=settings.ai_grpc_host,
            port=settings.ai_grpc_port,
            verifier=verifier,
            policy=access_policy(),
            grace_seconds=settings.ai_grace_seconds,
        )
        self._grpc.add(
            functools.partial(ai_pb2_grpc.add_AiServiceServicer_to_server, AiServicer(service)),
            SERVICE_NAME,
        )
        self.port = await self._grpc.start()

        self.relay = OutboxRelay(
            database_url=settings.database_url, schema=SCHEMA, nats_url=self._nats
        )
        self.consumer = crm_consumer(
            nats=self._nats,
            session_factory=sessions,
            service=service,
            batch=settings.ai_consumer_batch_size,
        )
        await self.consumer.start()
        self.drafting = ClaimLoop(
            name="ai-drafting",
            claim=lambda limit: service.claim_pending(limit=limit),
            handle=service.draft,
            concurrency=settings.ai_draft_concurrency,
            poll_seconds=settings.ai_poll_seconds,
            database_url=settings.database_url,
            channel=DRAFTS_CHANNEL,
        )
        self.sending = ClaimLoop(
            name="ai-autopilot",
            claim=lambda limit: service.claim_due(limit=limit),
            handle=service.send_due,
            concurrency=SEND_CONCURRENCY,
            poll_seconds=settings.ai_poll_seconds,
        )
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="ai-outbox-relay"),
            asyncio.create_task(self.consumer.run(), name=self.consumer.durable),
            asyncio.create_task(self.drafting.run(), name=self.drafting.name),
            asyncio.create_task(self.sending.run(), name=self.sending.name),
        ]
        log.info("ai_agent_started", port=self.port, provider=provider.name)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop()
        if self.consumer is not None:
            await self.consumer.stop()
        for loop in (self.drafting, self.sending):
            if loop is not None:
                await loop.stop(self.settings.ai_grace_seconds)
        if self.relay is not None:
            await self.relay.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10.0)
        self._tasks = []
        if self._revocations is not None:
            with contextlib.suppress(Exception):
                await self._revocations.stop()
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.drain()
        for channel in self._channels:
            await channel.close()
        if self._engine is not None:
            await self._engine.dispose()
        log.info("ai_agent_stopped")


async def serve(settings: AiAgentSettings) -> None:
    server = AiAgentServer(settings)
    await run_until_signalled(start=server.start, stop=server.stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="huntaze_ai_agent.server", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    settings = AiAgentSettings()
    configure_logging(service="ai-agent", level=settings.log_level, fmt=settings.log_format)
    if args.command == "migrate":
        uvloop.run(upgrade_async(settings.database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
