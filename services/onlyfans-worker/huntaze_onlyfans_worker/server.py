"""The OnlyFans worker process: gRPC API, the accounts it drives (push listeners and sync), the
send and command consumers, and the outbox relay, until SIGTERM.

python -m huntaze_onlyfans_worker.server            # serve (default)
python -m huntaze_onlyfans_worker.server migrate    # apply the onlyfans schema's migrations
"""

from __future__ import annotations

import functools
import shutil

from huntaze.onlyfans.v1 import onlyfans_pb2_grpc
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.effects import EffectLedger
from huntaze_kit.grpc_client import GrpcKeySource
from huntaze_kit.grpc_server import GrpcServer
from huntaze_kit.host import Host, Service, service_main
from huntaze_kit.identity import KeySource, TokenVerifier
from huntaze_kit.outbox import OutboxRelay
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
from huntaze_onlyfans_worker.streams import CAMPAIGNS, CRM, ONLYFANS
from huntaze_onlyfans_worker.sync import Syncer
from huntaze_onlyfans_worker.vault import vault_from_settings

MIGRATIONS_PACKAGE = "huntaze_onlyfans_worker.migrations"


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


class WorkerServer(Service):
    """Everything the worker process runs, started in order and stopped in reverse.

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
        super().__init__(
            "onlyfans",
            grace_seconds=settings.grace_seconds,
            metrics_host=settings.onlyfans_grpc_host,
            metrics_port=settings.onlyfans_metrics_port,
        )
        self.settings = settings
        self.port: int = settings.onlyfans_grpc_port
        self.driver: OnlyFansWebDriver | None = None
        self.accounts: Accounts | None = None
        self.service: OnlyfansService | None = None
        self.runner: Runner | None = None
        self.consumers: list[EventConsumer] = []
        self._key_source = key_source
        self._clock = clock
        self._holder = holder

    async def build(self, host: Host) -> None:
        settings = self.settings
        db = await host.database(settings, application_name="huntaze-onlyfans-worker")
        nats = await host.nats(
            settings.nats_url,
            name="huntaze-onlyfans-worker",
            streams=[ONLYFANS],
            reads_from=[CRM, CAMPAIGNS],
        )
        driver = web_driver(settings)
        self.driver = driver
        host.on_stop("browser", driver.close)
        accounts = Accounts(
            sessions=db.sessions,
            vault=vault_from_settings(settings),
            driver=driver,
            lease_seconds=settings.onlyfans_lease_seconds,
            holder=self._holder,
            clock=self._clock,
        )
        self.accounts = accounts
        runner = Runner(
            accounts,
            Syncer(accounts),
            capacity=settings.onlyfans_max_contexts,
            sync_interval=settings.onlyfans_sync_interval_seconds,
            sync_jitter=settings.onlyfans_sync_jitter,
            close_idle=driver.close_idle,
        )
        self.runner = runner
        service = OnlyfansService(accounts)
        service.on_connected.append(runner.wake)
        service.on_disconnected.append(runner.stop_account)
        self.service = service

        key_source = self._key_source or GrpcKeySource(
            host.channel("auth", settings.auth_grpc_target)
        )
        verifier = TokenVerifier(
            key_source=key_source, audience=settings.token_audience, issuer=settings.token_issuer
        )
        await host.follow_revocations(nats, verifier)
        host.outbox_relay(
            OutboxRelay(database_url=settings.database_url, schema=SCHEMA, nats_url=nats)
        )

        async def stop_runner(_: float) -> None:
            await runner.stop()

        host.task("accounts", runner.run(), stop=stop_runner)
        sender = Sender(
            accounts,
            Pacing(
                interval=max(
                    settings.onlyfans_send_interval_seconds, settings.onlyfans_throttle_seconds
                ),
                jitter=settings.onlyfans_send_jitter_seconds,
                throttle=settings.onlyfans_throttle_seconds,
            ),
            EffectLedger(session_factory=db.sessions, schema=SCHEMA, consumer="worker-campaigns"),
        )
        self.consumers = worker_consumers(
            nats=nats, session_factory=db.sessions, commands=Commands(accounts, runner, sender)
        )
        for consumer in self.consumers:
            await host.consumer(consumer)

        server = GrpcServer(
            host=settings.onlyfans_grpc_host,
            port=settings.onlyfans_grpc_port,
            verifier=verifier,
            policy=access_policy(),
        )
        server.add(
            functools.partial(
                onlyfans_pb2_grpc.add_OnlyFansServiceServicer_to_server, OnlyFansServicer(service)
            ),
            SERVICE_NAME,
        )
        self.port = await host.grpc(server)  # last: no call is taken before all is ready


def main(argv: list[str] | None = None) -> None:
    service_main(
        name="onlyfans_worker",
        description=__doc__,
        settings=OnlyfansSettings,
        service=WorkerServer,
        migrations=MIGRATIONS_PACKAGE,
        schema=SCHEMA,
        argv=argv,
    )


if __name__ == "__main__":
    main()
