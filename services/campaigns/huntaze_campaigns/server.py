"""The campaigns process: gRPC API, the CRM and platform event consumers, the scheduler and the
outbox relay, until SIGTERM.

python -m huntaze_campaigns.server            # serve (default)
python -m huntaze_campaigns.server migrate    # apply the campaigns schema's migrations, then exit
"""

from __future__ import annotations

import asyncio
import functools

from huntaze.campaigns.v1 import campaigns_pb2_grpc
from huntaze_campaigns.config import SERVICE_ACCOUNT, CampaignsSettings
from huntaze_campaigns.consumers import crm_consumer, platform_consumer
from huntaze_campaigns.crm_client import CrmClient
from huntaze_campaigns.grpc_api import SERVICE_NAME, CampaignServicer, access_policy
from huntaze_campaigns.measurement import load_library
from huntaze_campaigns.models import SCHEMA
from huntaze_campaigns.scheduler import Scheduler
from huntaze_campaigns.service import CampaignsService, Clock, Timing, utc_now
from huntaze_campaigns.streams import CAMPAIGNS, CRM, ONLYFANS
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.grpc_client import GrpcKeySource, ServiceTokenProvider
from huntaze_kit.grpc_server import GrpcServer
from huntaze_kit.host import Host, Service, service_main
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.outbox import OutboxRelay

MIGRATIONS_PACKAGE = "huntaze_campaigns.migrations"


async def _load_statistics() -> None:
    """Imports the statistics library in a thread, so that the first metrics need not."""
    await asyncio.to_thread(load_library)


class CampaignsServer(Service):
    """Everything the campaigns process runs, started in order and stopped in reverse.

    `key_source` defaults to auth's public keys over gRPC; `clock` to the wall clock (tests
    move their own)."""

    def __init__(
        self,
        settings: CampaignsSettings,
        *,
        key_source: KeySource | None = None,
        clock: Clock = utc_now,
        timing: Timing | None = None,
    ) -> None:
        super().__init__(
            "campaigns",
            grace_seconds=settings.grace_seconds,
            metrics_host=settings.campaigns_grpc_host,
            metrics_port=settings.campaigns_metrics_port,
        )
        self.settings = settings
        self.port: int = settings.campaigns_grpc_port
        self.service: CampaignsService | None = None
        self.scheduler: Scheduler | None = None
        self.consumer: EventConsumer | None = None
        self.platform_consumer: EventConsumer | None = None
        self.relay: OutboxRelay | None = None
        self._key_source = key_source
        self._clock = clock
        self._timing = timing

    async def build(self, host: Host) -> None:
        settings = self.settings
        db = await host.database(settings, application_name="huntaze-campaigns")
        nats = await host.nats(
            settings.nats_url,
            name="huntaze-campaigns",
            streams=[CAMPAIGNS],
            reads_from=[CRM, ONLYFANS],
        )
        auth_channel = host.channel("auth", settings.auth_grpc_target)
        secret = settings.campaigns_service_secret
        tokens = ServiceTokenProvider(
            auth_channel,
            service_name=SERVICE_ACCOUNT,
            service_secret=secret.get_secret_value() if secret else "",
        )
        service = CampaignsService(
            db.sessions,
            crm=CrmClient(host.channel("crm", settings.crm_grpc_target), tokens=tokens),
            timing=self._timing,
            clock=self._clock,
        )
        self.service = service

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
            batch=settings.campaigns_consumer_batch_size,
        )
        await host.consumer(self.consumer)
        self.platform_consumer = platform_consumer(
            nats=nats,
            session_factory=db.sessions,
            service=service,
            batch=settings.campaigns_consumer_batch_size,
        )
        await host.consumer(self.platform_consumer)
        self.scheduler = Scheduler(
            service,
            concurrency=settings.campaigns_send_concurrency,
            poll_seconds=settings.campaigns_poll_seconds,
        )
        host.task("scheduler", self.scheduler.run(), stop=self.scheduler.stop)
        host.task("statistics", _load_statistics())

        server = GrpcServer(
            host=settings.campaigns_grpc_host,
            port=settings.campaigns_grpc_port,
            verifier=verifier,
            policy=access_policy(),
        )
        server.add(
            functools.partial(
                campaigns_pb2_grpc.add_CampaignServiceServicer_to_server,
                CampaignServicer(service),
            ),
            SERVICE_NAME,
        )
        self.port = await host.grpc(server)


def main(argv: list[str] | None = None) -> None:
    service_main(
        name="campaigns",
        description=__doc__,
        settings=CampaignsSettings,
        service=CampaignsServer,
        migrations=MIGRATIONS_PACKAGE,
        schema=SCHEMA,
        argv=argv,
    )


if __name__ == "__main__":
    main()
