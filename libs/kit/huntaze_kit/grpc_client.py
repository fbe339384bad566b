"""gRPC clients: one long-lived channel per upstream, a deadline on every unary call, the request
id and the caller's token carried as metadata.

`create_channel` fills in the deadline and the request id itself, in the call (a plain function
call around grpc's own multi-callables), not through a client interceptor: in grpc.aio an
interceptor wraps every call in an extra task and costs about a quarter of a unary call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC
from types import TracebackType
from typing import Any, Self, TypeAlias, TypeVar

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

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Metadata: TypeAlias = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]]
RequestIterator: TypeAlias = AsyncIterator[Req] | Iterator[Req] | None


def with_request_id(metadata: Metadata | None) -> Metadata | None:
    """`metadata` plus the current request id, unless it has one already or there is none."""
    request_id = current_request_id()
    if request_id is None:
        return metadata
    if metadata is None:
        return ((REQUEST_ID_METADATA_KEY, request_id),)
    if isinstance(metadata, grpc.aio.Metadata):
        if metadata.get(REQUEST_ID_METADATA_KEY) is not None:
            return metadata
        augmented = grpc.aio.Metadata(*metadata)
        augmented.add(REQUEST_ID_METADATA_KEY, request_id)
        return augmented
    for key, _ in metadata:
        if key == REQUEST_ID_METADATA_KEY:
            return metadata
    return (*metadata, (REQUEST_ID_METADATA_KEY, request_id))


class _UnaryUnary(grpc.aio.UnaryUnaryMultiCallable[Req, Resp]):
    __slots__ = ("_call", "_deadline")

    def __init__(self, call: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], deadline: float) -> None:
        self._call = call
        self._deadline = deadline

    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryUnaryCall[Req, Resp]:
        return self._call(
            request,
            timeout=self._deadline if timeout is None else timeout,
            metadata=with_request_id(metadata),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


class _UnaryStream(grpc.aio.UnaryStreamMultiCallable[Req, Resp]):
    """Server streams run as long as the caller reads them: no default deadline."""

    __slots__ = ("_call",)

    def __init__(self, call: grpc.aio.UnaryStreamMultiCallable[Req, Resp]) -> None:
        self._call = call

    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryStreamCall[Req, Resp]:
        return self._call(
            request,
            timeout=timeout,
            metadata=with_request_id(metadata),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


class _StreamUnary(grpc.aio.StreamUnaryMultiCallable[Req, Resp]):
    """Client streams run as long as the caller writes them: no default deadline."""

    __slots__ = ("_call",)

    def __init__(self, call: grpc.aio.StreamUnaryMultiCallable[Req, Resp]) -> None:
        self._call = call

    def __call__(  # noqa: PLR0917 (grpc's own signature)
        self,
        request_iterator: RequestIterator[Req] = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.StreamUnaryCall[Req, Resp]:
        return self._call(
            request_iterator,
            timeout=timeout,
            metadata=with_request_id(metadata),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


class _StreamStream(grpc.aio.StreamStreamMultiCallable[Req, Resp]):
    __slots__ = ("_call",)

    def __init__(self, call: grpc.aio.StreamStreamMultiCallable[Req, Resp]) -> None:
        self._call = call

    def __call__(  # noqa: PLR0917 (grpc's own signature)
        self,
        request_iterator: RequestIterator[Req] = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.StreamStreamCall[Req, Resp]:
        return self._call(
            request_iterator,
            timeout=timeout,
            metadata=with_request_id(metadata),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


class CallDefaultsChannel(grpc.aio.Channel):
    """A grpc.aio channel whose calls get the current request id as metadata, and unary calls
    a deadline when the caller gave none. Generated stubs take it like any channel."""

    def __init__(self, channel: grpc.aio.Channel, *, deadline: float) -> None:
        self._channel = channel
        # The generated stubs pass grpc's private `_registered_method` flag (it lets the
        # channel register each method once); the stubs' types do not know it.
        self._factory: Any = channel
        self.deadline = deadline

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._channel.close()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Req], bytes] | None = None,
        response_deserializer: Callable[[bytes], Resp] | None = None,
        _registered_method: bool = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable[Req, Resp]:
        return _UnaryUnary(
            self._factory.unary_unary(
                method,
                request_serializer,
                response_deserializer,
                _registered_method=_registered_method,
            ),
            self.deadline,
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Req], bytes] | None = None,
        response_deserializer: Callable[[bytes], Resp] | None = None,
        _registered_method: bool = False,
    ) -> grpc.aio.UnaryStreamMultiCallable[Req, Resp]:
        return _UnaryStream(
            self._factory.unary_stream(
                method,
                request_serializer,
                response_deserializer,
                _registered_method=_registered_method,
            )
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Req], bytes] | None = None,
        response_deserializer: Callable[[bytes], Resp] | None = None,
        _registered_method: bool = False,
    ) -> grpc.aio.StreamUnaryMultiCallable[Req, Resp]:
        return _StreamUnary(
            self._factory.stream_unary(
                method,
                request_serializer,
                response_deserializer,
                _registered_method=_registered_method,
            )
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Req], bytes] | None = None,
        response_deserializer: Callable[[bytes], Resp] | None = None,
        _registered_method: bool = False,
    ) -> grpc.aio.StreamStreamMultiCallable[Req, Resp]:
        return _StreamStream(
            self._factory.stream_stream(
                method,
                request_serializer,
                response_deserializer,
                _registered_method=_registered_method,
            )
        )


def create_channel(
    target: str, *, deadline: float = DEFAULT_DEADLINE_SECONDS
) -> CallDefaultsChannel:
    """A channel to keep for the life of the process (channels multiplex; never one per call).

    Unary calls without a `timeout` get `deadline`; streaming calls get none (they last as long
    as their caller wants). Every call carries the current request id.
    """
    return CallDefaultsChannel(
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS), deadline=deadline
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
