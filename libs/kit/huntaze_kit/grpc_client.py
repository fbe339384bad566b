"""gRPC clients: one long-lived channel per upstream, a deadline on every call, the request id
and the caller's token carried as metadata."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

import grpc

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze_kit.logging import REQUEST_ID_METADATA_KEY, current_request_id

DEFAULT_DEADLINE_SECONDS = 5.0

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # Retries are safe only where the call did not reach the server: transparent retries cover it.
    ("grpc.enable_retries", 1),
]


class _CallDefaults(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds a deadline when the caller gave none, and the current request id."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def _details(self, details: grpc.aio.ClientCallDetails, *, streaming: bool) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        request_id = current_request_id()
        if request_id is not None and metadata.get(REQUEST_ID_METADATA_KEY) is None:
            metadata.add(REQUEST_ID_METADATA_KEY, request_id)
        timeout = details.timeout
        if timeout is None and not streaming:
            timeout = self._deadline
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details, streaming=False), request)

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details, streaming=True), request)


def create_channel(target: str, *, deadline: float = DEFAULT_DEADLINE_SECONDS) -> grpc.aio.Channel:
    """A channel to keep for the life of the process (channels multiplex; never one per call)."""
    return grpc.aio.insecure_channel(
        target, options=CHANNEL_OPTIONS, interceptors=[_CallDefaults(deadline)]
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class GrpcKeySource:
    """Auth's public keys, read over gRPC (the `KeySource` of every service but auth)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def fetch_jwks(self) -> dict[str, Any]:
        response = await self._stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
        jwks: dict[str, Any] = json.loads(response.jwks_json)
        return jwks


class ServiceTokenProvider:
    """Short-lived service tokens from auth, one per creator, reused until near expiry."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        service_name: str,
        service_secret: str,
        renew_before_seconds: float = 60.0,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._service_name = service_name
        self._secret = service_secret
        self._renew_before = renew_before_seconds
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def token_for(self, creator_id: str) -> str:
        cached = self._tokens.get(creator_id)
        if cached is not None and cached[1] - self._renew_before > time.time():
            return cached[0]
        lock = self._locks.setdefault(creator_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(creator_id)
            if cached is not None and cached[1] - self._renew_before > time.time():
                return cached[0]
            response = await self._stub.IssueServiceToken(
                auth_pb2.IssueServiceTokenRequest(
                    service_name=self._service_name,
                    service_secret=self._secret,
                    creator_id=creator_id,
                )
            )
            expires_at = response.expires_at.ToDatetime(tzinfo=UTC).timestamp()
            self._tokens[creator_id] = (response.access_token, expires_at)
            return response.access_token

    async def metadata_for(self, creator_id: str) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(await self.token_for(creator_id))
