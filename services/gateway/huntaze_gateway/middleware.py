"""The edge of every request: request id, access log, metrics per route, body size limit,
security headers, and a last-resort problem document when something crashes. One pure ASGI
middleware does all of it, so that a request pays for one wrapper; CORS is Starlette's, from
the settings.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from huntaze_gateway.config import GatewaySettings
from huntaze_gateway.console import is_console_path
from huntaze_gateway.pages import PAGE_PATHS
from huntaze_gateway.problems import BODY_TOO_LARGE, INTERNAL, Problems
from huntaze_kit.logging import get_logger, new_request_id, request_context
from huntaze_kit.metrics import HttpMetrics

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")

# No scripts, styles, frames or forms: an API answers data, never a page.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
# Swagger UI: its bundle served by the gateway (`docs`), one inline bootstrap script.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The email links' pages (`pages`): our stylesheet and forms posted back to us, no script.
PAGES_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# The web console (`console`): its own bundles, and calls to this same origin only.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_COMMON_HEADERS: list[tuple[bytes, bytes]] = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-site"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
_API_HEADERS = [*_COMMON_HEADERS, (b"content-security-policy", API_CSP.encode())]
_DOCS_HEADERS = [*_COMMON_HEADERS, (b"content-security-policy", DOCS_CSP.encode())]
_PAGES_HEADERS = [*_COMMON_HEADERS, (b"content-security-policy", PAGES_CSP.encode())]
_CONSOLE_HEADERS = [*_COMMON_HEADERS, (b"content-security-policy", CONSOLE_CSP.encode())]
_NO_STORE = (b"cache-control", b"no-store")

ACCESS_LOGGER = "huntaze_gateway.access"
log = get_logger(ACCESS_LOGGER)
# Checked before each access-log line: structlog would format the line before the level drops it.
_access_log = logging.getLogger(ACCESS_LOGGER)


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once the body passes the limit. FastAPI re-raises HTTP exceptions
    met while reading the body, so the problem handlers answer it."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail=BODY_TOO_LARGE.detail)


class EdgeMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, problems: Problems, console: bool = False
    ) -> None:
        self.app = app
        self.console = console
        self.max_body_bytes = max_body_bytes
        self.problems = problems
        self.metrics = HttpMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming_id: bytes | None = None
        content_length: bytes | None = None
        for key, value in scope["headers"]:
            if key == _REQUEST_ID_KEY:
                incoming_id = value
            elif key == b"content-length":
                content_length = value
        request_id = (
            incoming_id.decode()
            if incoming_id is not None and _VALID_REQUEST_ID.match(incoming_id)
            else new_request_id()
        )
        path: str = scope["path"]
        extra_headers = _security_headers(path, console=self.console)
        status = 0
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((_REQUEST_ID_KEY, request_id.encode()))
                headers.extend(extra_headers)
                if not any(key == b"cache-control" for key, _ in headers):
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        with request_context(request_id):
            try:
                if content_length is not None and _too_long(content_length, limit):
                    response = self.problems.response(
                        BODY_TOO_LARGE,
                        instance=path,
                        code="BODY_TOO_LARGE",
                        detail=f"The request body is larger than {limit} bytes.",
                        headers={"Connection": "close"},
                    )
                    await response(scope, receive, send_with_headers)
                    return
                await self.app(scope, limited_receive, send_with_headers)
            except BodyTooLarge:
                if status:
                    raise
                response = self.problems.response(
                    BODY_TOO_LARGE,
                    instance=path,
                    code="BODY_TOO_LARGE",
                    detail=f"The request body is larger than {limit} bytes.",
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send_with_headers)
            except Exception:
                log.exception("request_crashed", method=scope["method"], path=path)
                if status:
                    raise
                response = self.problems.response(INTERNAL, instance=path, code="INTERNAL")
                await response(scope, receive, send_with_headers)
            finally:
                elapsed = time.perf_counter() - started
                self.metrics.observe(scope["method"], _route_template(scope), status, elapsed)
                if _access_log.isEnabledFor(logging.INFO):
                    log.info(
                        "request",
                        method=scope["method"],
                        path=path,
                        status=status,
                        ms=round(elapsed * 1000, 2),
                    )


def _security_headers(path: str, *, console: bool) -> list[tuple[bytes, bytes]]:
    if path.startswith(DOCS_PATHS):
        return _DOCS_HEADERS
    if console and is_console_path(path):
        return _CONSOLE_HEADERS
    return _PAGES_HEADERS if path in PAGE_PATHS else _API_HEADERS


def _route_template(scope: Scope) -> str:
    """The template of the route that answered (`/api/crm/fans/{fan_id}`): the router leaves
    the route in the scope; a request no route matched has none."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else HttpMetrics.UNMATCHED


def _too_long(content_length: bytes, limit: int) -> bool:
    try:
        return int(content_length) > limit
    except ValueError:
        return True


def install_middleware(app: FastAPI, settings: GatewaySettings, problems: Problems) -> None:
    """CORS inside, the edge outside (added last, so it runs first)."""
    origins: Sequence[str] = settings.gateway_cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                REQUEST_ID_HEADER,
                "Idempotency-Key",
                "Last-Event-ID",
            ],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.gateway_max_body_bytes,
        problems=problems,
        console=settings.gateway_console_dir is not None,
    )
