"""Calls to upstream services: the caller's token, passed per call.

The channels are the kit's (`huntaze_kit.grpc_client.create_channel`, one per upstream for the
life of the process): they give every unary call the gateway's deadline and every call the
request id, without a client interceptor.
"""

from __future__ import annotations

from typing import Any

from huntaze_kit.grpc_client import bearer_metadata


class CallOptions:
    """The keyword arguments of an upstream call, made for a caller when `token` is given:
    `await stub.Method(request, **options(token))`. Always has `metadata`."""

    def __call__(self, token: str | None = None) -> dict[str, Any]:
        return {"metadata": bearer_metadata(token) if token is not None else ()}
