"""JetStream streams as code, the headers every event carries, and the NATS connection.

One stream per bounded context (`AUTH` holds `auth.>`, `CRM` holds `crm.>`, ...) plus `DLQ`
(`dlq.<consumer>`) for messages a consumer gave up on. Every stream keeps its messages in files,
drops them after `max_age` and remembers each `Nats-Msg-Id` for an hour, so an event the outbox
relay publishes twice (after a crash or an outage shorter than that) is stored once.

Retention invariant: every stream's `max_age` is shorter than the consumers' `processed_events`
retention (`huntaze_kit.consumers.DEFAULT_PROCESSED_RETENTION`), so no message can be redelivered
or replayed after its consumers have forgotten that they applied it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import timedelta

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from huntaze_kit.logging import REQUEST_ID_HEADER, get_logger

log = get_logger(__name__)


class Headers:
    """Names of the NATS headers on every Huntaze event."""

    MSG_ID = "Nats-Msg-Id"
    EVENT_ID = "Huntaze-Event-Id"
    EVENT_TYPE = "Huntaze-Event-Type"
    CREATOR_ID = "Huntaze-Creator-Id"
    REQUEST_ID = REQUEST_ID_HEADER
    OCCURRED_AT = "Huntaze-Occurred-At"
    AGGREGATE_TYPE = "Huntaze-Aggregate-Type"
    AGGREGATE_ID = "Huntaze-Aggregate-Id"
    DLQ_ERROR = "Huntaze-Dlq-Error"
    DLQ_CONSUMER = "Huntaze-Dlq-Consumer"
    DLQ_DELIVERIES = "Huntaze-Dlq-Deliveries"
    DLQ_AT = "Huntaze-Dlq-At"
    ORIGINAL_SUBJECT = "Huntaze-Original-Subject"
    ORIGINAL_STREAM = "Huntaze-Original-Stream"
    ORIGINAL_SEQUENCE = "Huntaze-Original-Sequence"


DEFAULT_MAX_AGE = timedelta(days=14)
DEFAULT_DUPLICATE_WINDOW = timedelta(hours=1)
DLQ_STREAM = "DLQ"
DLQ_SUBJECT_PREFIX = "dlq"

_DURABLE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class StreamSpec:
    """The declared shape of one stream; `config()` turns it into what JetStream accepts."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age: timedelta = DEFAULT_MAX_AGE
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW
    max_bytes: int = -1
    max_msg_size: int = 1024 * 1024
    replicas: int = 1
    metadata: dict[str, str] = field(default_factory=dict)

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age.total_seconds(),
            max_bytes=self.max_bytes,
            max_msg_size=self.max_msg_size,
            duplicate_window=self.duplicate_window.total_seconds(),
            num_replicas=self.replicas,
            allow_direct=True,
            metadata=dict(self.metadata) or None,
        )


AUTH = StreamSpec("AUTH", ("auth.>",), "Events of the auth context: users, sessions, email.")
CRM = StreamSpec("CRM", ("crm.>",), "Events of the CRM: fans, conversations, messages.")
ONLYFANS = StreamSpec("ONLYFANS", ("onlyfans.>",), "Events of the OnlyFans worker.")
AI = StreamSpec("AI", ("ai.>",), "Events of the AI agent: suggestions and plans.")
CAMPAIGNS = StreamSpec("CAMPAIGNS", ("campaigns.>",), "Events of campaigns and sequences.")
DLQ = StreamSpec(
    DLQ_STREAM,
    (f"{DLQ_SUBJECT_PREFIX}.>",),
    "Messages a consumer gave up on, on dlq.<consumer>, kept for inspection and replay.",
)

STREAMS: tuple[StreamSpec, ...] = (AUTH, CRM, ONLYFANS, AI, CAMPAIGNS, DLQ)


def stream_for_subject(subject: str, streams: tuple[StreamSpec, ...] = STREAMS) -> StreamSpec:
    """The stream that stores `subject` (matched on its first token)."""
    prefix = subject.split(".", 1)[0]
    for spec in streams:
        if any(pattern.split(".", 1)[0] == prefix for pattern in spec.subjects):
            return spec
    raise LookupError(f"no stream stores subject {subject!r}")


def validate_durable_name(name: str) -> str:
    """Durable consumer names are `<service>-<purpose>`: letters, digits, `-` and `_` only."""
    if not _DURABLE_NAME.match(name):
        raise ValueError(
            f"invalid durable consumer name {name!r}: use letters, digits, '-' or '_' "
            "(for example 'auth-email-sender')"
        )
    return name


def dlq_subject(durable: str) -> str:
    """Where consumer `durable` puts the messages it gave up on."""
    return f"{DLQ_SUBJECT_PREFIX}.{validate_durable_name(durable)}"


async def ensure_streams(js: JetStreamContext, streams: tuple[StreamSpec, ...] = STREAMS) -> None:
    """Creates each stream, or updates it to the declared configuration. Safe to run anytime.

    Several services starting together may race to create the same stream: the loser updates.
    """
    for spec in streams:
        config = spec.config()
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                # Created by someone else between our look-up and our create.
                await js.update_stream(config)
            else:
                log.info("nats.stream_created", stream=spec.name, subjects=list(spec.subjects))
                continue
        else:
            await js.update_stream(config)


async def connect_nats(
    url: str,
    *,
    name: str,
    connect_timeout: float = 2.0,
    reconnect_time_wait: float = 1.0,
    initial_connect_deadline: float = 30.0,
) -> NatsClient:
    """A NATS connection that reconnects forever and logs every change of state.

    The first connection is retried for `initial_connect_deadline` seconds, so a service may
    start a moment before NATS does; after that, ConnectionError.
    """
    bound = log.bind(nats_client=name)
    connected: list[NatsClient] = []

    def closing() -> bool:
        return bool(connected) and (connected[0].is_closed or connected[0].is_draining)

    async def on_error(error: Exception) -> None:
        bound.warning("nats.error", error=repr(error))

    async def on_disconnected() -> None:
        if not closing():  # a close we asked for is no news
            bound.warning("nats.disconnected")

    async def on_reconnected() -> None:
        bound.info("nats.reconnected")

    async def on_closed() -> None:
        bound.info("nats.closed")

    try:
        client = await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_time_wait,
                connect_timeout=connect_timeout,
                ping_interval=20,
                max_outstanding_pings=3,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                closed_cb=on_closed,
            ),
            timeout=initial_connect_deadline,
        )
    except TimeoutError as err:
        raise ConnectionError(
            f"NATS at {url} did not answer within {initial_connect_deadline:g} s"
        ) from err
    connected.append(client)
    return client
