"""The analytics process: a consumer per context stream taking events into the events table and
the rollups, and the gRPC API, until SIGTERM.

python -m huntaze_analytics serve      # serve (the default)
python -m huntaze_analytics migrate    # apply the analytics schema's migrations, then exit
python -m huntaze_analytics rebuild    # rebuild every rollup from the events table, then exit
"""

from __future__ import annotations

import functools
from datetime import timedelta

from huntaze.analytics.v1 import analytics_pb2_grpc
from huntaze_analytics.config import AnalyticsSettings
from huntaze_analytics.consumers import event_consumers
from huntaze_analytics.grpc_api import SERVICE_NAME, AnalyticsServicer, access_policy
from huntaze_analytics.models import SCHEMA
from huntaze_analytics.service import AnalyticsService, Clock, utc_now
from huntaze_analytics.streams import READS
from huntaze_analytics.summaries import SummaryWriter, writer_from_settings
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.db import create_engine, create_read_pool, session_factory
from huntaze_kit.grpc_client import GrpcKeySource
from huntaze_kit.grpc_server import GrpcServer
from huntaze_kit.host import Host, Service, service_main
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.logging import get_logger

MIGRATIONS_PACKAGE = "huntaze_analytics.migrations"
APPLICATION_NAME = "huntaze-analytics"

log = get_logger(__name__)


class AnalyticsServer(Service):
    """Everything the analytics process runs, started in order and stopped in reverse.

    `key_source` defaults to auth's public keys over gRPC; `writer` to the settings' choice.
    """

    def __init__(
        self,
        settings: AnalyticsSettings,
        *,
        key_source: KeySource | None = None,
        writer: SummaryWriter | None = None,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(
            "analytics",
            grace_seconds=settings.grace_seconds,
            metrics_host=settings.analytics_grpc_host,
            metrics_port=settings.analytics_metrics_port,
        )
        self.settings = settings
        self.port: int = settings.analytics_grpc_port
        self.service: AnalyticsService | None = None
        self.consumers: list[EventConsumer] = []
        self._key_source = key_source
        self._writer = writer
        self._clock = clock

    async def build(self, host: Host) -> None:
        settings = self.settings
        db = await host.database(settings, application_name=APPLICATION_NAME)
        nats = await host.nats(settings.nats_url, name=APPLICATION_NAME, reads_from=READS)
        service = AnalyticsService(
            db.sessions,
            db.reads,
            writer=self._writer or writer_from_settings(settings),
            snapshot_max_age=timedelta(seconds=settings.analytics_snapshot_interval_seconds),
            clock=self._clock,
        )
        self.service = service
        auth_channel = host.channel("auth", settings.auth_grpc_target)
        verifier = TokenVerifier(
            key_source=self._key_source or GrpcKeySource(auth_channel),
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )
        await host.follow_revocations(nats, verifier)
        self.consumers = event_consumers(
            nats=nats,
            session_factory=db.sessions,
            service=service,
            batch=settings.analytics_consumer_batch_size,
        )
        for consumer in self.consumers:
            await host.consumer(consumer)
        server = GrpcServer(
            host=settings.analytics_grpc_host,
            port=settings.analytics_grpc_port,
            verifier=verifier,
            policy=access_policy(),
        )
        server.add(
            functools.partial(
                analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server,
                AnalyticsServicer(service),
            ),
            SERVICE_NAME,
        )
        self.port = await host.grpc(server)


async def rebuild(settings: AnalyticsSettings) -> None:
    """Empties every rollup and applies the whole events table again, in one transaction."""
    engine = create_engine(settings.database_url, application_name=f"{APPLICATION_NAME}-rebuild")
    reads = await create_read_pool(
        settings.database_url, application_name=f"{APPLICATION_NAME}-rebuild", max_size=1
    )
    try:
        service = AnalyticsService(
            session_factory(engine),
            reads,
            writer=writer_from_settings(settings),
            snapshot_max_age=timedelta(seconds=settings.analytics_snapshot_interval_seconds),
        )
        applied = await service.rebuild()
        log.info("rebuilt", events=applied)
    finally:
        await reads.close()
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    service_main(
        name="analytics",
        description=__doc__,
        settings=AnalyticsSettings,
        service=AnalyticsServer,
        migrations=MIGRATIONS_PACKAGE,
        schema=SCHEMA,
        commands={"rebuild": rebuild},
        argv=argv,
    )


if __name__ == "__main__":
    main()
