"""The simulator as one ASGI app: the platform's API, login pages, WebSocket, the published rules
and the control API, plus a background ticker (mass-message delivery, demo activity, snapshots)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request, WebSocket
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from huntaze_simulator import api, control, demo, login
from huntaze_simulator.errors import PlatformError, platform_error_response
from huntaze_simulator.platform import Platform
from huntaze_simulator.push import PushHub

TICK_SECONDS = 0.05
SNAPSHOT_EVERY_SECONDS = 60.0


class RevisionHeader:
    """Every answer names the web build (`x-of-rev`), as the platform's do."""

    def __init__(self, app: ASGIApp, platform: Platform) -> None:
        self.app = app
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_revision(message: Any) -> None:
            if message["type"] == "http.response.start":
                revision = self.platform.data.rules.revision.encode()
                message["headers"] = [*message.get("headers", []), (b"x-of-rev", revision)]
            await send(message)

        await self.app(scope, receive, send_with_revision)


async def invalid_parameters(request: Request, exc: Exception) -> JSONResponse:
    """The platform answers a bad parameter with "Invalid filter"; the control API says which."""
    assert isinstance(exc, RequestValidationError)
    if request.url.path.startswith("/api2/"):
        message = "Invalid filter"
    else:
        message = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
    return JSONResponse({"error": {"code": 0, "message": message}}, status_code=400)


async def unknown_route(request: Request, exc: Exception) -> Response:
    """Under `/api2/` a wrong path or method answers in the platform's error shape."""
    assert isinstance(exc, StarletteHTTPException)
    if not request.url.path.startswith("/api2/"):
        return await http_exception_handler(request, exc)
    return JSONResponse(
        {"error": {"code": 0, "message": str(exc.detail)}}, status_code=exc.status_code
    )


async def tick(platform: Platform, *, demo_activity: bool) -> None:
    """Delivers queued mass messages at the configured rate; drives the demo's fans. Every
    handler is a coroutine too, so the state only ever changes on the event loop."""
    rng = random.Random(platform.config.seed + 1)  # noqa: S311 (seeded for repeatable runs)
    loop = asyncio.get_running_loop()
    last = loop.time()
    credit = 0.0
    next_activity = platform.clock.now()
    next_snapshot = last + SNAPSHOT_EVERY_SECONDS
    while True:
        await asyncio.sleep(TICK_SECONDS)
        now = loop.time()
        credit += (now - last) * platform.config.mass_delivery_per_second
        last = now
        credit -= platform.deliver_due(int(credit))
        # Idle queues do not bank deliveries for a later burst.
        credit = min(credit, platform.config.mass_delivery_per_second)
        interval = platform.config.demo_activity_seconds
        if demo_activity and interval > 0 and platform.clock.now() >= next_activity:
            demo.activity_step(platform, rng)
            next_activity = platform.clock.now() + rng.uniform(0.5, 1.5) * interval
        if now >= next_snapshot:
            platform.save()
            next_snapshot = now + SNAPSHOT_EVERY_SECONDS


def create_app(platform: Platform, *, demo_activity: bool = False) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ticker = asyncio.create_task(tick(platform, demo_activity=demo_activity))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            platform.save()

    app = FastAPI(title="OnlyFans platform simulator", lifespan=lifespan, docs_url="/_docs")
    app.state.platform = platform
    app.state.login_desk = login.LoginDesk()
    hub = PushHub(platform)
    app.add_exception_handler(PlatformError, platform_error_response)
    app.add_exception_handler(RequestValidationError, invalid_parameters)
    app.add_exception_handler(StarletteHTTPException, unknown_route)
    app.include_router(login.router)
    app.include_router(api.router)
    app.include_router(control.router)

    @app.get("/rules.json")
    async def published_rules(
        shape: Literal["format", "prefix", "ofauth"] = "ofauth",
    ) -> dict[str, Any]:
        """The current dynamic rules, as a rules publisher serves them."""
        return platform.data.rules.published(shape)

    @app.websocket("/ws3/")
    async def websocket(websocket: WebSocket) -> None:
        await hub.serve(websocket)

    app.add_middleware(RevisionHeader, platform=platform)
    return app
