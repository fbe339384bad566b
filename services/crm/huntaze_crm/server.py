"""The CRM process: gRPC API, real-time inbox, outbox relay and platform-event consumers, until
SIGTERM.

python -m huntaze_crm.server            # serve (default)
python -m huntaze_crm.server migrate    # apply the crm schema's migrations, then exit
"""

from __future__ import annotations

import functools
from datetime import timedelta

from huntaze.crm.v1 import crm_pb2_grpc
from huntaze_crm.config import CrmSettings
from huntaze_crm.consumers import ai_consumer, platform_consumers
from huntaze_crm.grpc_api import SERVICE_NAME, CrmServicer, access_policy
from huntaze_crm.inbox import InboxHub, InboxPruner
from huntaze_crm.models import SCHEMA
from huntaze_crm.reads import CrmReader
from huntaze_crm.service import Clock, CrmService, utc_now
from huntaze_crm.streams import AI, CRM, ONLYFANS
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.grpc_client import GrpcKeySource
from huntaze_kit.grpc_server import GrpcServer
from huntaze_kit.host import Host, Service, service_main
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.outbox import OutboxRelay

MIGRATIONS_PACKAGE = "huntaze_crm.migrations"


class CrmServer(Service):
    """Everything the CRM process runs, started in order and stopped in reverse.

    `key_source` defaults to auth's public keys over gRPC (`HUNTAZE_AUTH_GRPC_TARGET`).
    """

    def __init__(
        self,
        settings: CrmSettings,
        *,
        key_source: KeySource | None = None,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            "crm",
            grace_seconds=settings.grace_seconds,
            metrics_host=settings.crm_grpc_host,
            metrics_port=settings.crm_metrics_port,
        )
        self.settings = settings
        self.port: int = settings.crm_grpc_port
        self.service: CrmService | None = None
        self.inbox: InboxHub | None = None
        self.relay: OutboxRelay | None = None
        self.consumers: list[EventConsumer] = []
        self._key_source = key_source
        self._clock = clock

    async def build(self, host: Host) -> None:
        settings = self.settings
        db = await host.database(settings, application_name="huntaze-crm")
        reader = CrmReader(db.reads)
        service = CrmService(
            db.sessions,
            reader=reader,
            clock=self._clock,
            automation_budget=settings.crm_automation_messages_per_fan_per_day,
        )
        self.service = service
        nats = await host.nats(
            settings.nats_url, name="huntaze-crm", streams=[CRM], reads_from=[ONLYFANS, AI]
        )
        inbox = await host.add("inbox", InboxHub(database_url=settings.database_url, reader=reader))
        self.inbox = inbox

        key_source = self._key_source or GrpcKeySource(
            host.channel("auth", settings.auth_grpc_target)
        )
        verifier = TokenVerifier(
            key_source=key_source, audience=settings.token_audience, issuer=settings.token_issuer
        )
        await host.follow_revocations(nats, verifier)

        self.relay = OutboxRelay(database_url=settings.database_url, schema=SCHEMA, nats_url=nats)
        host.outbox_relay(self.relay)
        self.consumers = platform_consumers(
            nats=nats,
            session_factory=db.sessions,
            service=service,
            batch=settings.crm_consumer_batch_size,
            concurrency=settings.crm_consumer_concurrency,
        )
        self.consumers.append(
            ai_consumer(
                nats=nats,
                session_factory=db.sessions,
                service=service,
                batch=settings.crm_consumer_batch_size,
            )
        )
        for consumer in self.consumers:
            await host.consumer(consumer)
        pruner = InboxPruner(
            db.sessions,
            retention=timedelta(hours=settings.crm_inbox_retention_hours),
            keep_events=settings.crm_inbox_retention_events,
        )

        async def stop_pruner(_: float) -> None:
            pruner.stop()

        host.task("inbox-pruner", pruner.run(), stop=stop_pruner)

        server = GrpcServer(
            host=settings.crm_grpc_host,
            port=settings.crm_grpc_port,
            verifier=verifier,
            policy=access_policy(),
        )
        server.add(
            functools.partial(
                crm_pb2_grpc.add_CrmServiceServicer_to_server, CrmServicer(service, inbox)
            ),
            SERVICE_NAME,
        )
        self.port = await host.grpc(server)


def main(argv: list[str] | None = None) -> None:
    service_main(
        name="crm",
        description=__doc__,
        settings=CrmSettings,
        service=CrmServer,
        migrations=MIGRATIONS_PACKAGE,
        schema=SCHEMA,
        argv=argv,
    )


if __name__ == "__main__":
    main()
