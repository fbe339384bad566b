"""Server-Sent Events from a gRPC server stream.

`relay` turns the messages of a server-streaming call into `text/event-stream` frames as they
arrive: a `retry:` hint first, a comment line whenever the stream has been idle for the heartbeat
interval (so that proxies keep the connection open), and, when the call fails, one `stream.error`
event carrying a problem document before the stream ends (browsers reconnect after `retry`, with
`Last-Event-ID`). Messages that arrive together are written together, in one chunk.

The gRPC call is always cancelled when the stream ends: when the client goes away (the response
task is cancelled), when the caller's token expires or its session is revoked, or when the
upstream ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")

EVENT_STREAM_MEDIA_TYPE = "text/event-stream"
HEARTBEAT = b": heartbeat\n\n"
ERROR_EVENT = "stream.error"
# Messages written in one chunk at most (under a burst).
MAX_BATCH = 256
# Messages read ahead of a slow client before the gRPC stream is paused (flow control).
READ_AHEAD = 1024


def frame(data: bytes, *, event: str | None = None, event_id: int | None = None) -> bytes:
    """One event; `data` must be a single line (compact JSON is)."""
    parts: list[bytes] = []
    if event_id is not None:
        parts.append(b"id: %d\n" % event_id)
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    parts.append(b"data: " + data + b"\n\n")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: grpc.aio.AioRpcError


class _End:
    pass


_END = _End()


@dataclass
class Stream(Generic[T]):
    """What to relay and how: the call, how to render one of its messages (a whole frame) and a
    failure (the problem document's JSON), and for how long the caller may listen."""

    call: grpc.aio.UnaryStreamCall[Any, T]
    render: Callable[[T], bytes]
    render_error: Callable[[grpc.aio.AioRpcError], bytes]
    heartbeat_seconds: float
    retry_milliseconds: int
    # The stream ends at this time (the access token's expiry, epoch seconds) ...
    expires_at: float
    # ... or as soon as this answers True (the session was revoked).
    revoked: Callable[[], bool]


async def _pump(stream: Stream[T], queue: asyncio.Queue[T | _Failed | _End]) -> None:
    try:
        async for message in stream.call:
            await queue.put(message)
    except grpc.aio.AioRpcError as error:
        await queue.put(_Failed(error))
        return
    await queue.put(_END)


async def relay(stream: Stream[T]) -> AsyncIterator[bytes]:
    """The event-stream body: frames until the call ends, the caller's time is up or the client
    disconnects (then the gRPC call is cancelled)."""
    queue: asyncio.Queue[T | _Failed | _End] = asyncio.Queue(READ_AHEAD)
    pump = asyncio.create_task(_pump(stream, queue), name="sse-pump")
    try:
        yield b"retry: %d\n\n" % stream.retry_milliseconds
        while True:
            remaining = stream.expires_at - time.time()
            if remaining <= 0 or stream.revoked():
                return
            try:
                async with asyncio.timeout(min(stream.heartbeat_seconds, remaining)):
                    item = await queue.get()
            except TimeoutError:
                if stream.expires_at - time.time() > 0 and not stream.revoked():
                    yield HEARTBEAT
                continue
            batch = [item]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            chunk: list[bytes] = []
            for entry in batch:
                if isinstance(entry, _End):
                    if chunk:
                        yield b"".join(chunk)
                    return
                if isinstance(entry, _Failed):
                    chunk.append(frame(stream.render_error(entry.error), event=ERROR_EVENT))
                    yield b"".join(chunk)
                    return
                chunk.append(stream.render(entry))
            yield b"".join(chunk)
    finally:
        pump.cancel()
        stream.call.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


class EventStreamResponse(StreamingResponse):
    """`text/event-stream`, never cached nor buffered by a proxy; the body generator is closed
    (and with it the upstream call) however the response ends."""

    media_type = EVENT_STREAM_MEDIA_TYPE

    def __init__(
        self,
        body: AsyncIterator[bytes],
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._body = body
        super().__init__(
            body,
            status_code=status_code,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
