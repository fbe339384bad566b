"""The gRPC server every service runs: grpc.aio, health, reflection, and the interceptors for
request ids and logging, identity, and error mapping (domain errors -> status codes, here only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from huntaze_kit.errors import DomainError, PermissionDenied, Unauthenticated
from huntaze_kit.identity import Principal, TokenVerifier, acting_as, bearer_token
from huntaze_kit.logging import (
    REQUEST_ID_METADATA_KEY,
    enabled_for,
    get_logger,
    request_context,
)
from huntaze_kit.metrics import RpcMetrics
from huntaze_kit.rich_status import to_grpc_status
from huntaze_kit.validation import check_request

log = get_logger(__name__)

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:  # the stubs' generics do not exist at run time
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
Behavior = Callable[[Any, Context], Any]


@dataclass(frozen=True)
class AccessPolicy:
    """Which methods need no token, and which services may call which methods.

    Method names are full gRPC names, e.g. `/huntaze.auth.v1.AuthService/Login`. A service
    token may call only the methods listed for its service in `service_methods`.

    `session_checking_methods` check the calling user's session themselves, in the same
    database round trip as their own read, and must refuse a session that is revoked or
    expired: for them the verifier skips its `session_check` (the revocation list still
    applies).

    `verified_email_methods` refuse a user whose access token says the email address is not
    verified yet (PERMISSION_DENIED, reason EMAIL_NOT_VERIFIED). Service tokens are not held to
    it: a service acts on work that a user's call started, and that call was held to it.
    """

    public_methods: frozenset[str] = frozenset()
    service_methods: Mapping[str, frozenset[str]] = field(default_factory=dict)
    session_checking_methods: frozenset[str] = frozenset()
    verified_email_methods: frozenset[str] = frozenset()

    def check_user(self, principal: Principal, method: str) -> None:
        if not principal.email_verified and method in self.verified_email_methods:
            raise PermissionDenied(
                message="Verify your email address first: open the link in the email we sent "
                "you (or ask for a new one), then refresh your session.",
                reason="EMAIL_NOT_VERIFIED",
            )

    def check_service(self, principal: Principal, method: str) -> None:
        allowed = self.service_methods.get(principal.service_name or "", frozenset())
        if method not in allowed:
            raise PermissionDenied(
                message="This service may not call this method.", reason="SERVICE_NOT_ALLOWED"
            )


def _metadata_value(context: Context, key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, str):
            return value
    return None


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Binds the request id, verifies the caller and maps errors, around every method.

    One interceptor does the three so that a call pays for one wrapper, not three: this sits
    on every request's path. grpc.aio runs the interceptor for every call: the wrapped handler
    of each method is made once and kept.
    """

    def __init__(self, *, verifier: TokenVerifier | None, policy: AccessPolicy) -> None:
        self._verifier = verifier
        self._policy = policy
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            wrapped = handler
        elif handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, cast(Behavior, handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, cast(Behavior, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            wrapped = handler
        self._handlers[method] = wrapped
        return wrapped

    async def _authenticate(self, method: str, context: Context) -> Principal | None:
        token = bearer_token(_metadata_value(context, "authorization"))
        if token is None or self._verifier is None:
            if method in self._policy.public_methods:
                return None
            raise Unauthenticated(message="Authentication required.", reason="UNAUTHENTICATED")
        principal = await self._verifier.verify(
            token, check_session=method not in self._policy.session_checking_methods
        )
        if principal.kind == "service":
            self._policy.check_service(principal, method)
        else:
            self._policy.check_user(principal, method)
        return principal

    def _wrap_unary(self, method: str, behavior: Behavior) -> Behavior:
        metrics = RpcMetrics(method)

        async def wrapper(request: Any, context: Context) -> Any:
            with request_context(_metadata_value(context, REQUEST_ID_METADATA_KEY)):
                started = time.perf_counter()
                try:
                    principal = await self._authenticate(method, context)
                    check_request(request)
                    with acting_as(principal):
                        return await behavior(request, context)
                except DomainError as error:
                    log.info(
                        "rpc_failed",
                        method=method,
                        reason=error.reason,
                        code=error.status_code.name,
                    )
                    await context.abort_with_status(to_grpc_status(error))
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception:
                    log.exception("rpc_crashed", method=method)
                    await context.abort(grpc.StatusCode.INTERNAL, "Internal error.")
                finally:
                    elapsed = time.perf_counter() - started
                    metrics.observe(_status_code(context), elapsed)
                    if enabled_for(logging.DEBUG):
                        log.debug("rpc", method=method, ms=round(elapsed * 1000, 2))

        return wrapper

    def _wrap_stream(self, method: str, behavior: Behavior) -> Behavior:
        metrics = RpcMetrics(method)

        async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            with request_context(_metadata_value(context, REQUEST_ID_METADATA_KEY)):
                started = time.perf_counter()
                try:
                    principal = await self._authenticate(method, context)
                    check_request(request)
                    with acting_as(principal):
                        async for response in behavior(request, context):
                            yield response
                except DomainError as error:
                    log.info("rpc_failed", method=method, reason=error.reason)
                    await context.abort_with_status(to_grpc_status(error))
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception:
                    log.exception("rpc_crashed", method=method)
                    await context.abort(grpc.StatusCode.INTERNAL, "Internal error.")
                finally:
                    metrics.observe(_status_code(context), time.perf_counter() - started)

        return wrapper


def _status_code(context: Context) -> grpc.StatusCode:
    """The status a call ended with: the one it aborted with, else OK (or CANCELLED when the
    client went away)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.CANCELLED if context.cancelled() else grpc.StatusCode.OK


SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


class GrpcServer:
    """A grpc.aio server with health, reflection and the call interceptor.

    `start()` binds and marks every service SERVING; `stop()` marks them NOT_SERVING first so
    load balancers drain, then stops with a grace period for calls in flight.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        verifier: TokenVerifier | None,
        policy: AccessPolicy,
        grace_seconds: float = 10.0,
    ) -> None:
        self.server = grpc.aio.server(
            interceptors=[CallInterceptor(verifier=verifier, policy=policy)],
            options=SERVER_OPTIONS,
        )
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = []
        self._address = f"{host}:{port}"
        self._grace = grace_seconds
        self.port = port

    def add(self, register: Callable[[grpc.aio.Server], None], service_name: str) -> None:
        """Adds one servicer: `register` is the generated `add_XServicer_to_server` partial."""
        register(self.server)
        self._service_names.append(service_name)

    async def start(self) -> int:
        reflection.enable_server_reflection(
            [
                *self._service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        try:
            self.port = self.server.add_insecure_port(self._address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            await self.server.stop(None)  # releases what the server holds; it never started
            raise RuntimeError(f"cannot bind gRPC server to {self._address}")
        await self.server.start()
        for name in ("", *self._service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "grpc_server_started",
            address=self._address,
            port=self.port,
            services=self._service_names,
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, then lets calls in flight finish for `grace` seconds (default:
        the server's own)."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self._grace if grace is None else grace)
        log.info("grpc_server_stopped")

    async def wait(self) -> None:
        await self.server.wait_for_termination()
