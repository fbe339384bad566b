"""The gateway application: `create_app(settings)`.

At start it opens one long-lived gRPC channel per upstream service, a `TokenVerifier` that reads
auth's public keys over gRPC, and a `RevocationFollower` fed from NATS, so a revoked session is
refused at the edge as soon as its `auth.session.revoked` event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from huntaze.ai.v1 import ai_pb2_grpc
from huntaze.analytics.v1 import analytics_pb2_grpc
from huntaze.auth.v1 import auth_pb2_grpc
from huntaze.campaigns.v1 import campaigns_pb2_grpc
from huntaze.crm.v1 import crm_pb2_grpc
from huntaze.onlyfans.v1 import onlyfans_pb2_grpc
from huntaze_gateway import __version__
from huntaze_gateway.ai_routes import ai_onboarding_router, ai_router
from huntaze_gateway.analytics_routes import analytics_router, dashboard_router
from huntaze_gateway.auth_routes import (
    SECURED,
    auth_router,
    needs_caller,
    onboarding_router,
    security_schemes,
)
from huntaze_gateway.campaigns_routes import campaigns_router, of_campaigns_router
from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.console import install_console
from huntaze_gateway.crm_routes import crm_router, messages_router
from huntaze_gateway.docs import install_docs
from huntaze_gateway.health import health_router
from huntaze_gateway.middleware import install_middleware
from huntaze_gateway.of_routes import of_router
from huntaze_gateway.openapi import add_proto_schemas
from huntaze_gateway.pages import pages_router
from huntaze_gateway.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    Problems,
    install_problem_handlers,
)
from huntaze_gateway.state import Runtime
from huntaze_gateway.upstream import CallOptions
from huntaze_kit.grpc_client import GrpcKeySource, create_channel
from huntaze_kit.identity import RevocationList, TokenVerifier
from huntaze_kit.logging import get_logger
from huntaze_kit.revocations import RevocationFollower
from huntaze_kit.streams import close_nats, connect_nats

log = get_logger(__name__)

API_DESCRIPTION = """\
The HTTP/JSON API of Huntaze. Every route forwards to a gRPC service.

**Authentication.** Sign in with `POST /api/auth/login`. Browsers get the tokens as HttpOnly
cookies; API clients read them from the body and send `Authorization: Bearer <accessToken>`.
Access tokens live 15 minutes; `POST /api/auth/refresh` exchanges the refresh token (body or
cookie) for a new pair.

**Errors.** Every error is an RFC 9457 `application/problem+json` document with `type`, `title`,
`status`, `detail`, `instance`, a stable machine-readable `code` and, when the input was at
fault, `errors`: a list of `{field, message}`. A 429 comes with `Retry-After`.

**Naming.** JSON members are camelCase (snake_case is accepted on input).
"""


def upstream_targets(settings: GatewaySettings) -> Mapping[str, str]:
    """Every upstream service the gateway talks to, by name."""
    return {
        "auth": settings.auth_grpc_target,
        "crm": settings.crm_grpc_target,
        "ai": settings.ai_grpc_target,
        "analytics": settings.analytics_grpc_target,
        "campaigns": settings.campaigns_grpc_target,
    }


def optional_upstreams(settings: GatewaySettings) -> Mapping[str, str]:
    """Upstreams whose absence leaves the rest of the API up (not in `/readyz`): while the
    OnlyFans worker is away, only `/api/of/*` answers 503."""
    return {"onlyfans": settings.onlyfans_grpc_target}


async def _follow_revocations(runtime: Runtime) -> None:
    """Connects to NATS (waiting for it when it is not up yet) and follows revocations (the
    follower picks up again by itself after NATS restarts)."""
    while True:
        try:
            client = await connect_nats(runtime.settings.nats_url, name="gateway")
            break
        except ConnectionError as error:
            log.warning("nats_unreachable_retrying", error=str(error))
    runtime.nats = client
    follower = RevocationFollower(client, runtime.verifier.revocations)
    await follower.start()
    runtime.follower = follower
    log.info("revocations_followed")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: GatewaySettings = app.state.settings
    deadline = settings.gateway_upstream_deadline_seconds
    channels: dict[str, grpc.aio.Channel] = {
        name: create_channel(target, deadline=deadline)
        for name, target in upstream_targets(settings).items()
    }
    optional = {
        name: create_channel(target, deadline=deadline)
        for name, target in optional_upstreams(settings).items()
    }
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    verifier = TokenVerifier(
        key_source=GrpcKeySource(channels["auth"]),
        audience=settings.token_audience,
        issuer=settings.token_issuer,
        revocations=RevocationList(),
    )
    runtime = Runtime(
        settings=settings,
        problems=app.state.problems,
        channels=channels,
        auth=auth,
        crm=crm_pb2_grpc.CrmServiceStub(channels["crm"]),
        onlyfans=onlyfans_pb2_grpc.OnlyFansServiceStub(optional["onlyfans"]),
        ai=ai_pb2_grpc.AiServiceStub(channels["ai"]),
        analytics=analytics_pb2_grpc.AnalyticsServiceStub(channels["analytics"]),
        campaigns=campaigns_pb2_grpc.CampaignServiceStub(channels["campaigns"]),
        call=CallOptions(),
        verifier=verifier,
    )
    runtime.background.append(
        asyncio.create_task(_follow_revocations(runtime), name="follow-revocations")
    )
    app.state.runtime = runtime
    log.info("gateway_started", upstreams=dict(upstream_targets(settings)))
    try:
        yield
    finally:
        for task in runtime.background:
            task.cancel()
        for task in runtime.background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if runtime.follower is not None:
            with contextlib.suppress(Exception):
                await runtime.follower.stop()
        if runtime.nats is not None:
            with contextlib.suppress(Exception):
                await close_nats(runtime.nats)
        for channel in (*channels.values(), *optional.values()):
            await channel.close(grace=1.0)
        log.info("gateway_stopped")


def _problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with every error response typed `application/problem+json`."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if not status.isdigit() or int(status) < 400 or not content:
                    continue
                # Whatever the success's media type (JSON, an event stream).
                response["content"] = {PROBLEM_MEDIA_TYPE: next(iter(content.values()))}
    add_proto_schemas(schema)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).pop("HTTPValidationError", None)
    components["schemas"].pop("ValidationError", None)
    settings: GatewaySettings = app.state.settings
    components["securitySchemes"] = security_schemes(settings.gateway_access_cookie_name)
    routers = (
        auth_router,
        onboarding_router,
        ai_onboarding_router,
        crm_router,
        messages_router,
        of_router,
        ai_router,
        analytics_router,
        dashboard_router,
        campaigns_router,
        of_campaigns_router,
    )
    for route in (route for router in routers for route in router.routes):
        if isinstance(route, APIRoute) and route.include_in_schema and needs_caller(route):
            for method in route.methods or ():
                schema["paths"][route.path_format][method.lower()]["security"] = SECURED
    app.openapi_schema = schema
    return schema


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    problems = Problems(settings.gateway_problem_type_base)
    docs = settings.gateway_docs_enabled
    app = FastAPI(
        title="Huntaze API",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,  # served from the suite's own assets: `install_docs`
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        openapi_tags=[
            {"name": "auth", "description": "Accounts, sign-in, sessions and two-factor."},
            {"name": "onboarding", "description": "The creator profile and onboarding."},
            {"name": "crm", "description": "Fans, conversations, quick replies and fan lists."},
            {"name": "messages", "description": "Replies, read receipts and message search."},
            {"name": "onlyfans", "description": "The OnlyFans connection, inbox and sends."},
            {"name": "ai", "description": "AI replies: configuration, suggestions and audit."},
            {
                "name": "analytics",
                "description": "The dashboard, the overview, charts, fan insights and exports.",
            },
            {
                "name": "campaigns",
                "description": "Mass messages, sequences, templates and measured results.",
            },
            {"name": "health", "description": "Liveness and readiness probes."},
        ],
        responses={500: {"model": Problem, "description": "Unexpected error."}},
    )
    app.state.settings = settings
    app.state.problems = problems
    install_problem_handlers(app, problems)
    install_middleware(app, settings, problems)
    app.include_router(auth_router)
    app.include_router(onboarding_router)
    app.include_router(crm_router)
    app.include_router(messages_router)
    app.include_router(of_router)
    app.include_router(ai_router)
    app.include_router(ai_onboarding_router)
    app.include_router(analytics_router)
    app.include_router(dashboard_router)
    app.include_router(campaigns_router)
    app.include_router(of_campaigns_router)
    app.include_router(health_router)
    if docs:
        install_docs(app, openapi_url="/openapi.json")
    if settings.gateway_console_dir is not None:
        # Last: its client routes answer whatever no route above did, the email links too.
        install_console(app, settings.gateway_console_dir)
    else:
        app.include_router(pages_router)

    def openapi() -> dict[str, Any]:
        return _problem_openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
    return app
