"""The AI agent process: gRPC API, the CRM event consumer, the drafting and autopilot workers
and the outbox relay, until SIGTERM.

python -m huntaze_ai_agent.server            # serve (default)
python -m huntaze_ai_agent.server migrate    # apply the ai schema's migrations, then exit
"""

from __future__ import annotations

import functools
from datetime import timedelta

from huntaze.ai.v1 import ai_pb2_grpc
from huntaze_ai_agent.config import SERVICE_ACCOUNT, AiAgentSettings
from huntaze_ai_agent.consumers import crm_consumer
from huntaze_ai_agent.crm_client import CrmClient
from huntaze_ai_agent.drafting import Drafter
from huntaze_ai_agent.embeddings import embedder_from_settings
from huntaze_ai_agent.grpc_api import SERVICE_NAME, AiServicer, access_policy
from huntaze_ai_agent.models import SCHEMA, Suggestion
from huntaze_ai_agent.providers import Provider, provider_from_settings
from huntaze_ai_agent.service import (
    DRAFTS_CHANNEL,
    AiAgentService,
    Claimed,
    Clock,
    Timing,
    utc_now,
)
from huntaze_ai_agent.streams import AI, CRM
from huntaze_ai_agent.style_index import StyleIndex
from huntaze_ai_agent.workers import ClaimLoop, Repeat
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.grpc_client import GrpcKeySource, ServiceTokenProvider
from huntaze_kit.grpc_server import GrpcServer
from huntaze_kit.host import Host, Service, service_main
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.logging import get_logger
from huntaze_kit.outbox import OutboxRelay

MIGRATIONS_PACKAGE = "huntaze_ai_agent.migrations"
# Sends are quick gRPC calls: a few at once keep up with any number of due replies.
SEND_CONCURRENCY = 16

log = get_logger(__name__)


class AiAgentServer(Service):
    """Everything the agent process runs, started in order and stopped in reverse.

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
        super().__init__(
            "ai",
            grace_seconds=settings.grace_seconds,
            metrics_host=settings.ai_grpc_host,
            metrics_port=settings.ai_metrics_port,
        )
        self.settings = settings
        self.port: int = settings.ai_grpc_port
        self.service: AiAgentService | None = None
        self.relay: OutboxRelay | None = None
        self.consumer: EventConsumer | None = None
        self.drafting: ClaimLoop[Claimed] | None = None
        self.sending: ClaimLoop[Suggestion] | None = None
        self._key_source = key_source
        self._provider = provider
        self._clock = clock

    async def build(self, host: Host) -> None:
        settings = self.settings
        db = await host.database(settings, application_name="huntaze-ai-agent")
        nats = await host.nats(
            settings.nats_url, name="huntaze-ai-agent", streams=[AI], reads_from=[CRM]
        )
        auth_channel = host.channel("auth", settings.auth_grpc_target)
        tokens = ServiceTokenProvider(
            auth_channel,
            service_name=SERVICE_ACCOUNT,
            service_secret=(
                settings.ai_service_secret.get_secret_value() if settings.ai_service_secret else ""
            ),
        )
        provider = self._provider or provider_from_settings(settings)
        style = StyleIndex(embedder_from_settings(settings))
        await style.open(db.sessions)
        service = AiAgentService(
            db.sessions,
            drafter=Drafter(provider),
            crm=CrmClient(host.channel("crm", settings.crm_grpc_target), tokens=tokens),
            timing=Timing(
                autopilot_min_delay=timedelta(seconds=settings.ai_autopilot_min_delay_seconds),
                autopilot_max_delay=timedelta(seconds=settings.ai_autopilot_max_delay_seconds),
                attribution_window=timedelta(hours=settings.ai_attribution_window_hours),
            ),
            clock=self._clock,
            style=style,
        )
        self.service = service
        if style.vectors:
            vectors = Repeat(
                name="ai-reply-vectors",
                step=lambda: style.embed_pending(db.sessions),
                poll_seconds=settings.ai_embeddings_poll_seconds,
            )
            host.task("reply-vectors", vectors.run(), stop=vectors.stop)

        verifier = TokenVerifier(
            key_source=self._key_source or GrpcKeySource(auth_channel),
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )
        await host.follow_revocations(nats, verifier)

        self.relay = OutboxRelay(database_url=settings.database_url, schema=SCHEMA, nats_url=nats)
        host.outbox_relay(self.relay)
        self.consumer = crm_consumer(
            nats=nats,
            session_factory=db.sessions,
            service=service,
            batch=settings.ai_consumer_batch_size,
        )
        await host.consumer(self.consumer)
        self.drafting = ClaimLoop(
            name="ai-drafting",
            claim=lambda limit: service.claim_drafts(limit=limit),
            handle=service.draft_batch,
            concurrency=settings.ai_draft_concurrency,
            poll_seconds=settings.ai_poll_seconds,
            database_url=settings.database_url,
            channel=DRAFTS_CHANNEL,
        )
        host.task("drafting", self.drafting.run(), stop=self.drafting.stop)
        self.sending = ClaimLoop(
            name="ai-autopilot",
            claim=lambda limit: service.claim_due(limit=limit),
            handle=service.send_batch,
            concurrency=SEND_CONCURRENCY,
            poll_seconds=settings.ai_poll_seconds,
        )
        host.task("autopilot", self.sending.run(), stop=self.sending.stop)

        server = GrpcServer(
            host=settings.ai_grpc_host,
            port=settings.ai_grpc_port,
            verifier=verifier,
            policy=access_policy(),
        )
        server.add(
            functools.partial(ai_pb2_grpc.add_AiServiceServicer_to_server, AiServicer(service)),
            SERVICE_NAME,
        )
        self.port = await host.grpc(server)
        log.info(
            "ai_agent_provider",
            provider=provider.name,
            retrieval="vectors" if style.vectors else "text_search",
        )


def main(argv: list[str] | None = None) -> None:
    service_main(
        name="ai_agent",
        description=__doc__,
        settings=AiAgentSettings,
        service=AiAgentServer,
        migrations=MIGRATIONS_PACKAGE,
        schema=SCHEMA,
        argv=argv,
    )


if __name__ == "__main__":
    main()
