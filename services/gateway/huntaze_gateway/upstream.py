"""Calls to upstream services: one long-lived channel per upstream, and per-call options
(deadline, request id, the caller's token) passed explicitly.

The channels carry no client interceptor: in grpc.aio an interceptor wraps every call in an
extra task and costs about a quarter of a unary call's client-side time, and the gateway makes
one such call per request. Every call still has a deadline and carries the request id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import grpc

from huntaze.auth.v1 import auth_pb2
from huntaze_kit.grpc_client import CHANNEL_OPTIONS
from huntaze_kit.logging import REQUEST_ID_METADATA_KEY, current_request_id

if TYPE_CHECKING:
    from huntaze.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub


def open_channel(target: str) -> grpc.aio.Channel:
    """A channel to keep for the life of the process (channels multiplex calls)."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


class CallOptions:
    """The keyword arguments of every upstream call: `await stub.Method(request, **options())`."""

    def __init__(self, deadline_seconds: float) -> None:
        self.deadline = deadline_seconds

    def __call__(self, token: str | None = None) -> dict[str, Any]:
        metadata: list[tuple[str, str]] = []
        request_id = current_request_id()
        if request_id is not None:
            metadata.append((REQUEST_ID_METADATA_KEY, request_id))
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        return {"timeout": self.deadline, "metadata": tuple(metadata)}


class AuthKeySource:
    """Auth's public keys (a JWK Set) over gRPC: the gateway's `KeySource`."""

    def __init__(self, stub: AuthServiceAsyncStub, options: CallOptions) -> None:
        self._stub = stub
        self._options = options

    async def fetch_jwks(self) -> dict[str, Any]:
        response = await self._stub.GetPublicKeys(
            auth_pb2.GetPublicKeysRequest(), **self._options()
        )
        jwks: dict[str, Any] = json.loads(response.jwks_json)
        return jwks
