"""Fixtures of the gateway's own tests: the app in-process, reached with httpx over ASGI.

`offline_app`: no upstream reachable (for what the edge answers by itself). `live`: in front of
real auth and CRM gRPC servers, started in-process once per module on free loopback ports, with
a fresh database on the session's PostgreSQL (the root conftest's `pg_server_url`), NATS and a
mail catcher (module-scoped, unlike the root conftest's per-test `database_url`/`nats_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from fastapi import FastAPI

from huntaze_ai_agent.config import AiAgentSettings
from huntaze_ai_agent.server import AiAgentServer
from huntaze_analytics.config import AnalyticsSettings
from huntaze_analytics.server import AnalyticsServer
from huntaze_auth.config import AuthSettings
from huntaze_auth.server import AuthServer
from huntaze_campaigns.config import CampaignsSettings
from huntaze_campaigns.server import CampaignsServer
from huntaze_crm.config import CrmSettings
from huntaze_crm.server import CrmServer
from huntaze_devstack.embedded import EmbeddedNats, drop_database, ensure_database, free_port
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.state import Runtime
from huntaze_kit.migrations import upgrade_async

ALLOWED_ORIGIN = "http://localhost:3000"
AI_SERVICE_SECRET = "ai-secret-of-the-gateway-tests"
CAMPAIGNS_SERVICE_SECRET = "campaigns-secret-of-the-gateway-tests"
SMALL_BODY_LIMIT = 4096


def offline_settings(**overrides: object) -> GatewaySettings:
    """Settings whose upstream and NATS are ports nobody listens on."""
    values: dict[str, object] = {
        "auth_grpc_target": f"127.0.0.1:{free_port()}",
        "crm_grpc_target": f"127.0.0.1:{free_port()}",
        "ai_grpc_target": f"127.0.0.1:{free_port()}",
        "analytics_grpc_target": f"127.0.0.1:{free_port()}",
        "campaigns_grpc_target": f"127.0.0.1:{free_port()}",
        "nats_url": f"nats://127.0.0.1:{free_port()}",
        "gateway_cors_origins": ALLOWED_ORIGIN,
        "gateway_max_body_bytes": SMALL_BODY_LIMIT,
        "gateway_upstream_deadline_seconds": 2.0,
        "gateway_readiness_timeout_seconds": 0.5,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def offline_app() -> AsyncIterator[FastAPI]:
    """The gateway with its lifespan running and no upstream reachable."""
    app = create_app(offline_settings())
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="module")
async def offline_client(offline_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=offline_app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        yield client


@dataclass
class Live:
    """The gateway in-process in front of real auth, CRM and AI agent gRPC servers (also
    in-process)."""

    app: FastAPI
    client: httpx.AsyncClient
    mail: MailCatcher
    # The embedded NATS server, to restart; None when HUNTAZE_TEST_NATS_URL names one.
    nats_server: EmbeddedNats | None
    crm: CrmServer
    nats_url: str
    ai: AiAgentServer
    analytics: AnalyticsServer
    campaigns: CampaignsServer

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime


@contextlib.asynccontextmanager
async def _nats() -> AsyncIterator[tuple[str, EmbeddedNats | None]]:
    configured = os.environ.get("HUNTAZE_TEST_NATS_URL")
    if configured:
        client = await nats.connect(configured, connect_timeout=5, max_reconnect_attempts=0)
        try:
            jetstream = client.jetstream()
            for info in await jetstream.streams_info():
                await jetstream.delete_stream(info.config.name)
        finally:
            await client.close()
        yield configured, None
        return
    scratch = Path(tempfile.mkdtemp(prefix="huntaze-gw-nats-"))
    try:
        with EmbeddedNats(scratch, free_port()) as server:
            yield server.url, server
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="module")
async def live(pg_server_url: str) -> AsyncIterator[Live]:
    """Once per module: a fresh database with auth's, the CRM's and the agent's schemas, NATS,
    a mail catcher, the auth, CRM and AI agent servers on free loopback ports, and the gateway
    app (lifespan running) in front of them."""
    name = f"gw_{uuid.uuid4().hex[:12]}"
    database_url = await ensure_database(pg_server_url, name)
    scratch = Path(tempfile.mkdtemp(prefix="huntaze-gw-"))
    try:
        async with _nats() as (nats_url, nats_server):
            with MailCatcher(scratch / "mail") as mail:
                await upgrade_async(database_url, package="huntaze_auth.migrations", schema="auth")
                await upgrade_async(database_url, package="huntaze_crm.migrations", schema="crm")
                await upgrade_async(
                    database_url, package="huntaze_ai_agent.migrations", schema="ai"
                )
                await upgrade_async(
                    database_url, package="huntaze_analytics.migrations", schema="analytics"
                )
                await upgrade_async(
                    database_url, package="huntaze_campaigns.migrations", schema="campaigns"
                )
                auth = AuthServer(
                    AuthSettings(
                        database_url=database_url,
                        nats_url=nats_url,
                        auth_grpc_host="127.0.0.1",
                        auth_grpc_port=0,
                        auth_metrics_port=0,
                        smtp_url=mail.smtp_url,
                        auth_service_accounts={
                            "ai": AI_SERVICE_SECRET,
                            "campaigns": CAMPAIGNS_SERVICE_SECRET,
                        },
                        db_pool_size=4,
                    )
                )
                await auth.start()
                crm = CrmServer(
                    CrmSettings(
                        database_url=database_url,
                        nats_url=nats_url,
                        auth_grpc_target=f"127.0.0.1:{auth.port}",
                        crm_grpc_host="127.0.0.1",
                        crm_grpc_port=0,
                        crm_metrics_port=0,
                        grace_seconds=0.5,
                        db_pool_size=4,
                    )
                )
                ai: AiAgentServer | None = None
                analytics: AnalyticsServer | None = None
                campaigns: CampaignsServer | None = None
                try:
                    await crm.start()
                    ai = AiAgentServer(
                        AiAgentSettings(
                            database_url=database_url,
                            nats_url=nats_url,
                            auth_grpc_target=f"127.0.0.1:{auth.port}",
                            crm_grpc_target=f"127.0.0.1:{crm.port}",
                            ai_grpc_host="127.0.0.1",
                            ai_grpc_port=0,
                            ai_service_secret=AI_SERVICE_SECRET,
                            ai_poll_seconds=0.1,
                            ai_metrics_port=0,
                            grace_seconds=0.5,
                            db_pool_size=4,
                        )
                    )
                    await ai.start()
                    analytics = AnalyticsServer(
                        AnalyticsSettings(
                            database_url=database_url,
                            nats_url=nats_url,
                            auth_grpc_target=f"127.0.0.1:{auth.port}",
                            analytics_grpc_host="127.0.0.1",
                            analytics_grpc_port=0,
                            analytics_metrics_port=0,
                            grace_seconds=0.5,
                            db_pool_size=4,
                        )
                    )
                    await analytics.start()
                    campaigns = CampaignsServer(
                        CampaignsSettings(
                            database_url=database_url,
                            nats_url=nats_url,
                            auth_grpc_target=f"127.0.0.1:{auth.port}",
                            crm_grpc_target=f"127.0.0.1:{crm.port}",
                            campaigns_grpc_host="127.0.0.1",
                            campaigns_grpc_port=0,
                            campaigns_service_secret=CAMPAIGNS_SERVICE_SECRET,
                            campaigns_poll_seconds=0.1,
                            campaigns_metrics_port=0,
                            grace_seconds=0.5,
                            db_pool_size=4,
                        )
                    )
                    await campaigns.start()
                    app = create_app(
                        GatewaySettings(
                            auth_grpc_target=f"127.0.0.1:{auth.port}",
                            crm_grpc_target=f"127.0.0.1:{crm.port}",
                            ai_grpc_target=f"127.0.0.1:{ai.port}",
                            analytics_grpc_target=f"127.0.0.1:{analytics.port}",
                            campaigns_grpc_target=f"127.0.0.1:{campaigns.port}",
                            nats_url=nats_url,
                            gateway_trusted_proxies=1,
                        )
                    )
                    async with app.router.lifespan_context(app):
                        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
                        async with httpx.AsyncClient(
                            transport=transport, base_url="http://gateway.test"
                        ) as client:
                            await _until_following(app)
                            yield Live(
                                app=app,
                                client=client,
                                mail=mail,
                                nats_server=nats_server,
                                crm=crm,
                                nats_url=nats_url,
                                ai=ai,
                                analytics=analytics,
                                campaigns=campaigns,
                            )
                finally:
                    if campaigns is not None:
                        await campaigns.stop()
                    if analytics is not None:
                        await analytics.stop()
                    if ai is not None:
                        await ai.stop()
                    await crm.stop()
                    await auth.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        await drop_database(pg_server_url, name)


async def _until_following(app: FastAPI, timeout: float = 20.0) -> None:
    runtime: Runtime = app.state.runtime
    deadline = asyncio.get_running_loop().time() + timeout
    while runtime.revocations_status != "FOLLOWING":
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("the gateway did not start following revocations")
        await asyncio.sleep(0.05)
