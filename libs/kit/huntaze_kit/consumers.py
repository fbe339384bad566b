"""Idempotent JetStream consumers: each event is applied at most once per consumer, even when
NATS delivers it several times, and a server outage never loses or dead-letters an event.

Applying. For every message, atomically: the event id goes into the service's
`processed_events` table for this consumer (`ON CONFLICT DO NOTHING`); when it was already
there, the message is a duplicate and the handler is skipped; otherwise the handler runs with
that same session. The transaction commits, and only then is the message acknowledged. A crash
before the commit leaves nothing behind and NATS redelivers; a crash after it makes the
redelivery a duplicate. (Messages fetched together share one transaction, each handler under
its own savepoint, so a failing handler takes back only its own writes and its
`processed_events` row; one commit for the lot saves round trips and a WAL flush per message.)
Handlers must not commit. External side effects (email, platform sends, LLM calls, webhooks)
go through `huntaze_kit.effects.EffectLedger`, which makes them happen at most once per event
however often the transaction is retried.

A consumer may take a `batch_handler` instead of (or besides) `handler`: it gets all the new
events of a chunk, in order, in one call in the transaction itself (no savepoint), and can apply
them with set-based statements. When it raises, the transaction is rolled back and the chunk's
events are applied again in a new one, one at a time, each under its own savepoint (by
`handler`, or by `batch_handler` with one event), so a poison event is still isolated from its
neighbours.

Two kinds of failure:

* Infrastructure (the database unreachable, the claim, a savepoint or the commit failing, a
  handler hitting a lost connection) is not the message's fault. Nothing is nak'd: the consumer
  pauses (no fetching), keeps the batch's messages alive with working acks (`in_progress`, which
  does not count as a delivery), probes the database with backoff until it answers, and then
  applies the same messages again. A NATS outage is the same story seen from the other side: the
  fetch fails and is retried, and messages NATS redelivers meanwhile are duplicates or new.
* A handler's own error counts one failure for that event in `consumer_failures` (in the
  transaction that applies its neighbours); the message is nak'd with the `backoff` delay. At
  `max_deliver` failures, or at once for `PermanentEventError` or a message without a valid
  event id, the message goes to `dlq.<durable>` with the error in its headers and is terminated.
  See `huntaze_kit.dlq` to list and replay dead letters. (The count survives the dead letter: a
  replayed event that fails again goes back to the DLQ at once; applied, its count goes.)

So JetStream's own delivery count decides nothing: the durable consumer has no `max_deliver`
(a message is never dropped silently), and only handler failures lead to the DLQ.

Order per aggregate (`Huntaze-Aggregate-Type`/`-Id` headers): once an event fails, later events
of its aggregate are not applied before it. Those in the same chunk are handed back with it, and
the consumer remembers the failed (and handed-back) stream sequences per aggregate, so a later
event arriving first is handed back again ("deferred") until the earlier ones are applied or
dead-lettered. This memory is per process; before deferring, the consumer checks in the database
whether another replica applied the earlier event or gave up on it meanwhile, and an entry
without news for `backoff[-1] + 2 * ack_wait + 60` s is dropped.

Metrics (default Prometheus registry, labelled by consumer): processed, duplicate, redelivered,
failed, deferred and dead-lettered messages, pending messages (lag), and pauses for outages.

    consumer = EventConsumer(
        nats=nc, session_factory=sessions, schema="auth", durable="auth-email-sender",
        stream="AUTH", filter_subjects=["auth.email_verification.requested"], handler=send_email,
    )
    task = asyncio.create_task(consumer.run())
    ...
    await consumer.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson
import sqlalchemy.exc
from asyncpg.pgproto import pgproto
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import BadSubscriptionError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge
from sqlalchemy import Integer, Text, Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_kit.logging import get_logger, request_context
from huntaze_kit.outbox import schema_tables
from huntaze_kit.streams import Headers, dlq_subject, validate_durable_name

log = get_logger(__name__)

M = TypeVar("M", bound=Message)

DEFAULT_BACKOFF: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
# Waits between database probes while paused for an outage.
DEFAULT_OUTAGE_BACKOFF: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)
# Longer than any stream's max age (see huntaze_kit.streams), so replays stay deduplicated.
DEFAULT_PROCESSED_RETENTION = timedelta(days=30)

_MAX_ERROR_LENGTH = 1000
# Savepoints per transaction: PostgreSQL tracks up to 64 subtransactions per session cheaply.
# (A batch handler applies its chunk under one savepoint: its chunks may be longer.)
_MAX_MESSAGES_PER_TRANSACTION = 64
_MAX_MESSAGES_PER_BATCH_TRANSACTION = 512
_STATUS = "Status"
# A deferred event comes back this long after the earlier event it waits for is due.
_DEFER_MARGIN = 0.1
_DESCRIPTION = "Description"

PROCESSED = Counter("huntaze_consumer_processed", "Events applied.", ["consumer"])
DUPLICATES = Counter(
    "huntaze_consumer_duplicates", "Deliveries of events applied already.", ["consumer"]
)
REDELIVERIES = Counter(
    "huntaze_consumer_redeliveries", "Messages received more than once.", ["consumer"]
)
HANDLER_FAILURES = Counter(
    "huntaze_consumer_handler_failures",
    "Handler errors (each retried or dead-lettered).",
    ["consumer"],
)
DEFERRED = Counter(
    "huntaze_consumer_deferred",
    "Messages handed back because an earlier event of their aggregate is not applied yet.",
    ["consumer"],
)
DEAD_LETTERED = Counter("huntaze_consumer_dead_lettered", "Messages sent to the DLQ.", ["consumer"])
OUTAGE_PAUSES = Counter(
    "huntaze_consumer_outage_pauses",
    "Pauses because the database (or the transaction) failed: not counted against messages.",
    ["consumer"],
)
PAUSED = Gauge("huntaze_consumer_paused", "1 while paused for an outage.", ["consumer"])
PENDING = Gauge(
    "huntaze_consumer_pending",
    "Messages of the stream not delivered to the consumer yet (lag).",
    ["consumer"],
)

# Failures of the database connection itself: whoever hits them, the event is not to blame.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # no connection from the pool in time
)


class PermanentEventError(Exception):
    """Raise from a handler when no retry can help: the message is dead-lettered at once."""


class InvalidEvent(PermanentEventError):
    """The message is not a well-formed Huntaze event (headers, type or payload)."""


class ConsumerGone(Exception):
    """JetStream deleted the consumer under us (for example the stream was recreated)."""


class InfrastructureError(Exception):
    """The database (or the transaction itself) failed: the consumer pauses and tries again."""


class _TogetherFailed(Exception):
    """The batch handler failed on a chunk: its transaction is rolled back, and the chunk
    applied again one event at a time."""


def is_infrastructure_error(error: BaseException) -> bool:
    """True when `error` (or what caused it) is a lost or refused database connection, as
    opposed to the handler's own failure. (A handler's `ConnectionError` talking to a mail
    server is the handler's: only errors coming through the database driver count.)"""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECTION_ERRORS):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and (
            current.connection_invalidated
            or isinstance(current.orig, (OSError, *_CONNECTION_ERRORS))
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _describe(error: BaseException) -> str:
    message = f"{type(error).__name__}: {error}".replace("\r", " ").replace("\n", " ")
    return message[:_MAX_ERROR_LENGTH]


def _parse_event_id(raw_id: str) -> uuid.UUID:
    """The event id of a header. asyncpg's UUID (a `uuid.UUID` the database driver binds as it
    is) parses the canonical form the outbox writes ten times faster than `uuid.UUID`; the
    forms only `uuid.UUID` reads (braces, `urn:uuid:`, odd hyphens) go to it, so the same
    values are accepted as before."""
    try:
        event_id: uuid.UUID = pgproto.UUID(raw_id)
    except ValueError:
        pass
    else:
        return event_id
    try:
        return uuid.UUID(raw_id)
    except ValueError as err:
        raise InvalidEvent(f"{Headers.EVENT_ID} {raw_id!r} is not a UUID") from err


def _delivery(msg: Msg) -> tuple[int, int]:
    """(times delivered, stream sequence) of a JetStream message, read from its ack subject.
    (nats-py's `msg.metadata` builds frozen dataclasses and a datetime besides, 8 us a message,
    for these two numbers.) The subject is `$JS.ACK.<stream>.<consumer>.<delivered>.<stream
    seq>.<consumer seq>.<time>.<pending>`, or with `<domain>.<account hash>` before the stream
    and a token after the pending count; anything else is left to nats-py (which raises)."""
    tokens = msg.reply.split(".") if msg.reply else []
    if len(tokens) >= 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        if len(tokens) == 9:
            return int(tokens[4]), int(tokens[5])
        if len(tokens) >= 11:
            return int(tokens[6]), int(tokens[7])
    metadata = msg.metadata
    return metadata.num_delivered, metadata.sequence.stream


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event as a handler sees it: ids and routing from the headers, the raw payload."""

    event_id: uuid.UUID
    subject: str
    message_type: str
    creator_id: str | None
    request_id: str | None
    payload: bytes
    delivery_count: int
    headers: Mapping[str, str]
    stream_sequence: int
    occurred_at: datetime | None

    @classmethod
    def from_msg(cls, msg: Msg) -> ReceivedEvent:
        """Reads a JetStream message; InvalidEvent when it lacks an event id or type."""
        headers: Mapping[str, str] = msg.headers or {}  # each message's own dictionary
        raw_id = headers.get(Headers.EVENT_ID)
        if not raw_id:
            raise InvalidEvent(f"no {Headers.EVENT_ID} header")
        event_id = _parse_event_id(raw_id)
        message_type = headers.get(Headers.EVENT_TYPE)
        if not message_type:
            raise InvalidEvent(f"no {Headers.EVENT_TYPE} header")
        delivery_count, stream_sequence = _delivery(msg)
        return cls(
            event_id=event_id,
            subject=msg.subject,
            message_type=message_type,
            creator_id=headers.get(Headers.CREATOR_ID) or None,
            request_id=headers.get(Headers.REQUEST_ID) or None,
            payload=bytes(msg.data),
            delivery_count=delivery_count,
            headers=headers,
            stream_sequence=stream_sequence,
            occurred_at=_parse_time(headers.get(Headers.OCCURRED_AT)),
        )

    def parse(self, message_cls: type[M]) -> M:
        """Decodes the payload as `message_cls`; InvalidEvent when the type does not match."""
        expected = message_cls.DESCRIPTOR.full_name
        if self.message_type != expected:
            raise InvalidEvent(f"expected a {expected}, got a {self.message_type}")
        message = message_cls()
        try:
            message.ParseFromString(self.payload)
        except DecodeError as err:
            raise InvalidEvent(f"payload is not a valid {expected}: {err}") from err
        return message


Handler = Callable[[AsyncSession, ReceivedEvent], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, Sequence[ReceivedEvent]], Awaitable[None]]


@dataclass(slots=True)
class _Outcome:
    """What became of each message of a chunk."""

    applied: list[tuple[Msg, ReceivedEvent]] = field(default_factory=list)
    duplicates: list[tuple[Msg, ReceivedEvent]] = field(default_factory=list)
    # Handler errors: (message, event, error, failures counted so far, dead-letter it).
    failed: list[tuple[Msg, ReceivedEvent, Exception, int, bool]] = field(default_factory=list)
    deferred: list[tuple[Msg, ReceivedEvent]] = field(default_factory=list)
    unstarted: list[Msg] = field(default_factory=list)


class _Puller:
    """Pull requests on one durable consumer that return as soon as messages are there.

    (nats-py's `fetch(n)` waits for all n messages or its timeout, which delays a trickle of
    events by up to that timeout.) A no-wait request takes what is available now; when there
    is nothing, a request for one message waits up to `wait` seconds.

    Messages reach the subscription's callback, which only queues them and wakes the waiting
    request: a request wakes once for all the messages that came together. (A subscription
    read with `next_msg` costs two tasks per message, a fifth of what the consumer spends on
    it.)
    """

    def __init__(self, nc: NatsClient, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._prefix = nc.new_inbox()
        self._sub: Subscription | None = None
        self._request_no = 0
        self._partial: list[Msg] = []
        # Received and not read by a request yet (late ones of an earlier request included).
        self._arrived: deque[Msg] = deque()
        self._wake: asyncio.Future[None] | None = None

    async def open(self) -> None:
        if self._sub is None:
            self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._receive)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _receive(self, msg: Msg) -> None:
        self._arrived.append(msg)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def take_partial(self) -> list[Msg]:
        """Messages an interrupted fetch had already received, and those received since (they
        need a nak)."""
        partial, self._partial = self._partial, []
        while self._arrived:
            msg = self._arrived.popleft()
            if not (msg.headers and msg.headers.get(_STATUS)):
                partial.append(msg)
        return partial

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        got = await self._request({"batch": batch, "no_wait": True}, batch, min(wait, 5.0))
        if got:
            return got
        expires = max(int(wait * 1_000_000_000), 1_000_000)
        return await self._request({"batch": 1, "expires": expires}, 1, wait + 1.0)

    async def _next(self, loop: asyncio.AbstractEventLoop, deadline: float) -> Msg | None:
        """The next message received, or None at `deadline`."""
        while not self._arrived:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._wake = loop.create_future()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake
            except TimeoutError:
                return None
            finally:
                self._wake = None
        return self._arrived.popleft()

    async def _request(self, body: dict[str, Any], batch: int, wait: float) -> list[Msg]:
        sub = self._sub
        if sub is None:
            raise BadSubscriptionError
        self._request_no += 1
        reply = f"{self._prefix}.{self._request_no}"
        await self._nc.publish(self._next_subject, orjson.dumps(body), reply=reply)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        got: list[Msg] = []
        self._partial = got
        while len(got) < batch:
            msg = await self._next(loop, deadline)
            if msg is None:
                break
            status = msg.headers.get(_STATUS) if msg.headers else None
            if not status:
                got.append(msg)
                continue
            if msg.subject != reply:
                continue  # the end of an earlier request
            if status == "100":
                continue  # idle heartbeat
            if status in ("404", "408"):
                break  # no (more) messages for this request
            description = (msg.headers or {}).get(_DESCRIPTION, "")
            if status == "409":
                if "Consumer Deleted" in description or "push based" in description:
                    raise ConsumerGone(description)
                break  # e.g. leadership change or too many waiting requests: ask again
            raise RuntimeError(f"pull request failed: {status} {description}")
        self._partial = []
        return got


@dataclass(slots=True)
class _Waiting:
    """An event handed back (failed or deferred) and not settled yet, and the monotonic time it
    is expected back."""

    event_id: uuid.UUID
    due: float


class EventConsumer:
    """A durable JetStream pull consumer that applies each event once, in the service schema.

    `durable` is `<service>-<purpose>` (NATS forbids dots in it). Messages of one fetched batch
    are handled in order; with `concurrency` > 1 they are spread over that many lanes by
    aggregate (events of one aggregate stay in order, in one lane). `max_deliver` is how many
    times the handler may fail on an event before it is dead-lettered. At most
    `max_per_transaction` messages share a transaction (by default 64 with a per-event `handler`,
    a savepoint each, and 512 with a `batch_handler`, one savepoint per chunk).
    """

    def __init__(
        self,
        *,
        nats: NatsClient,
        session_factory: async_sessionmaker[AsyncSession],
        schema: str,
        durable: str,
        stream: str,
        filter_subjects: Sequence[str],
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_deliver: int = 8,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        outage_backoff: Sequence[float] = DEFAULT_OUTAGE_BACKOFF,
        batch: int = 64,
        ack_wait: float = 30.0,
        concurrency: int = 1,
        fetch_wait: float = 5.0,
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
        processed_retention: timedelta = DEFAULT_PROCESSED_RETENTION,
        cleanup_interval: float = 3600.0,
        max_per_transaction: int | None = None,
    ) -> None:
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        for name, delays in (("backoff", backoff), ("outage_backoff", outage_backoff)):
            if not delays or any(delay < 0 for delay in delays):
                raise ValueError(f"{name} needs at least one non-negative delay")
        if max_per_transaction is None:
            max_per_transaction = (
                _MAX_MESSAGES_PER_TRANSACTION
                if batch_handler is None
                else _MAX_MESSAGES_PER_BATCH_TRANSACTION
            )
        if batch < 1 or concurrency < 1 or max_per_transaction < 1:
            raise ValueError("batch, concurrency and max_per_transaction must be at least 1")
        if not filter_subjects:
            raise ValueError("filter_subjects needs at least one subject")
        if handler is None and batch_handler is None:
            raise ValueError("give a handler, a batch_handler or both")
        self.durable = validate_durable_name(durable)
        self.stream = stream
        self.schema = schema
        self.filter_subjects = list(filter_subjects)
        self.max_deliver = max_deliver
        self.backoff = tuple(backoff)
        self.outage_backoff = tuple(outage_backoff)
        self.batch = batch
        self.ack_wait = ack_wait
        self.concurrency = concurrency
        self.max_per_transaction = max_per_transaction
        self.fetch_wait = fetch_wait
        self.deliver_policy = deliver_policy
        self.processed_retention = processed_retention
        self.cleanup_interval = cleanup_interval
        self.dlq_subject = dlq_subject(durable)

        # Counters, read by tests (the Prometheus metrics carry the same for operators).
        self.processed = 0
        self.duplicates = 0
        self.retried = 0
        self.deferred = 0
        self.dead_lettered = 0
        self.outage_pauses = 0

        self._nc = nats
        self._js = nats.jetstream()
        self._session_factory = session_factory
        self._batch_handler = batch_handler
        self._handler: Handler = handler or self._one_by_batch
        tables = schema_tables(schema)  # checks the schema name: safe in SQL text
        processed = f'"{schema}".{tables.processed_events.name}'
        failures = f'"{schema}".{tables.consumer_failures.name}'
        ids = bindparam("ids", type_=ARRAY(Uuid(as_uuid=True)))
        self._claim_statement = (
            text(
                f"INSERT INTO {processed} (consumer, event_id)"
                " SELECT :consumer, unnest(:ids) ON CONFLICT DO NOTHING RETURNING event_id"
            )
            .bindparams(ids, consumer=self.durable)
            .columns(event_id=Uuid(as_uuid=True))
        )
        self._release = text(
            f"DELETE FROM {processed} WHERE consumer = :consumer AND event_id = ANY(:ids)"  # noqa: S608
        ).bindparams(ids, consumer=self.durable)
        # A permanent error counts as every attempt spent (`floor`): any replica then sees
        # the event as settled.
        self._count_failures = (
            text(
                f"INSERT INTO {failures} AS f (consumer, event_id, failures, last_error)"  # noqa: S608
                " SELECT :consumer, e.id, greatest(1, e.floor), e.error"
                " FROM unnest(:ids, :floors, :errors) AS e(id, floor, error)"
                " ON CONFLICT (consumer, event_id) DO UPDATE"
                " SET failures = greatest(f.failures + 1, excluded.failures),"
                " last_error = excluded.last_error, failed_at = now()"
                " RETURNING event_id, failures"
            )
            .bindparams(
                ids,
                bindparam("floors", type_=ARRAY(Integer())),
                bindparam("errors", type_=ARRAY(Text())),
                consumer=self.durable,
            )
            .columns(event_id=Uuid(as_uuid=True))
        )
        # Events another replica of this consumer applied or gave up on meanwhile.
        self._settled_elsewhere = (
            text(
                f"SELECT event_id FROM {processed}"  # noqa: S608
                " WHERE consumer = :consumer AND event_id = ANY(:ids)"
                f" UNION ALL SELECT event_id FROM {failures}"
                " WHERE consumer = :consumer AND event_id = ANY(:ids) AND failures >= :most"
            )
            .bindparams(ids, consumer=self.durable, most=self.max_deliver)
            .columns(event_id=Uuid(as_uuid=True))
        )
        self._forget_failures = text(
            f"DELETE FROM {failures} WHERE consumer = :consumer AND event_id = ANY(:ids)"  # noqa: S608
        ).bindparams(ids, consumer=self.durable)
        # Per aggregate, its events handed back and not settled yet, by stream sequence.
        self._held: dict[str, dict[int, _Waiting]] = {}
        self._held_expiry = self.backoff[-1] + 2 * self.ack_wait + 60.0
        self._puller: _Puller | None = None
        # Fetched messages not settled yet (the batch in hand and the one fetched ahead), kept
        # alive together by `_keep_alive`.
        self._in_hand: dict[int, list[Msg]] = {}
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[Any] | None = None
        self._log = log.bind(consumer=self.durable, stream=stream)
        labels = (self.durable,)
        self._processed_metric = PROCESSED.labels(*labels)
        self._duplicates_metric = DUPLICATES.labels(*labels)
        self._redeliveries_metric = REDELIVERIES.labels(*labels)
        self._failures_metric = HANDLER_FAILURES.labels(*labels)
        self._deferred_metric = DEFERRED.labels(*labels)
        self._dead_lettered_metric = DEAD_LETTERED.labels(*labels)
        self._pauses_metric = OUTAGE_PAUSES.labels(*labels)
        self._paused_metric = PAUSED.labels(*labels)
        self._pending_metric = PENDING.labels(*labels)

    # -- lifecycle ------------------------------------------------------------------------------

    def consumer_config(self) -> ConsumerConfig:
        single = len(self.filter_subjects) == 1
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            description=f"{self.schema}: {', '.join(self.filter_subjects)}",
            deliver_policy=self.deliver_policy,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            # Unlimited: JetStream must never drop a message on its own. Handler failures,
            # counted by us, decide the DLQ; outages and restarts are no message's fault.
            max_deliver=-1,
            filter_subject=self.filter_subjects[0] if single else None,
            filter_subjects=None if single else self.filter_subjects,
            max_ack_pending=max(1000, 4 * self.batch),
        )

    async def start(self) -> None:
        """Creates or updates the durable consumer and opens the pull subscription."""
        await self._js.add_consumer(self.stream, self.consumer_config())
        if self._puller is None:
            self._puller = _Puller(self._nc, self.stream, self.durable)
        await self._puller.open()

    async def run(self) -> None:
        """Consumes until `stop()`. Errors of the first `start()` are raised (configuration);
        later ones (outages) are logged and retried."""
        if self._running:
            raise RuntimeError("this consumer is already running")
        self._running = True
        self._stopped.clear()
        self._task = asyncio.current_task()
        background: list[asyncio.Task[None]] = []
        try:
            await self.start()
            background.append(
                asyncio.create_task(self._cleanup_forever(), name=f"{self.durable}-cleanup")
            )
            background.append(
                asyncio.create_task(self._keep_alive(), name=f"{self.durable}-keepalive")
            )
            self._log.info("consumer.started", subjects=self.filter_subjects)
            await self._loop()
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._in_hand.clear()
            if self._puller is not None:
                await self._puller.close()
            self._running = False
            self._stopped.set()
            self._log.info("consumer.stopped", processed=self.processed)

    async def stop(self, grace: float = 30.0) -> None:
        """Unsubscribes (no new messages), lets messages being handled finish, hands back the
        ones not started yet, and waits for `run()` to return (cancelling it after `grace` s)."""
        self._stopping.set()
        if self._puller is not None:
            await self._puller.close()
        if not self._running:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), grace)
        except TimeoutError:
            self._log.warning("consumer.stop_timeout", grace=grace)
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task

    def _fetch_ahead(self) -> asyncio.Task[list[Msg]]:
        """Starts the next pull; what it brings is kept alive from its arrival until settled,
        so a batch fetched while the previous one is applied (or paused) never times out."""
        assert self._puller is not None
        fetch = asyncio.create_task(self._puller.fetch(self.batch, self.fetch_wait))

        def hold(task: asyncio.Task[list[Msg]]) -> None:
            if not task.cancelled() and task.exception() is None and task.result():
                self._in_hand[id(task)] = task.result()

        fetch.add_done_callback(hold)
        return fetch

    async def _loop(self) -> None:
        """Fetches and applies batches one after another; under a backlog the next batch is
        fetched while the current one is applied (batches are still applied in order, one at a
        time)."""
        assert self._puller is not None
        failure_delay = 0.2
        ahead: asyncio.Task[list[Msg]] | None = None
        while not self._stopping.is_set():
            fetch, ahead = ahead or self._fetch_ahead(), None
            stop_wait = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
                await self._hand_back(self._puller.take_partial())
                break
            self._in_hand.pop(id(fetch), None)
            try:
                messages = fetch.result()
            except ConsumerGone as err:
                self._log.warning("consumer.gone", reason=str(err))
                await self._recreate()
                continue
            except Exception as err:
                if self._stopping.is_set():
                    break
                self._log.warning("consumer.fetch_failed", error=_describe(err))
                await self._sleep(failure_delay)
                failure_delay = min(failure_delay * 2, 5.0)
                continue
            failure_delay = 0.2
            if not messages:
                self._pending_metric.set(0)  # nothing left for us
                continue
            # Only with more waiting: the pull then brings a full batch at once. (Without a
            # backlog, pulling after the apply gathers whatever came meanwhile in one batch;
            # pulling ahead would take the first message alone, a transaction for one.)
            if not self._stopping.is_set() and messages[-1].metadata.num_pending > 0:
                ahead = self._fetch_ahead()
            try:
                await self._handle_batch(messages)
            finally:
                if ahead is not None and self._stopping.is_set():
                    await self._drop_fetch_ahead(ahead)
                    ahead = None

    async def _drop_fetch_ahead(self, ahead: asyncio.Task[list[Msg]]) -> None:
        """Cancels the pull made ahead, or hands back what it brought."""
        assert self._puller is not None
        if not ahead.done():
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead
            await self._hand_back(self._puller.take_partial())
            return
        self._in_hand.pop(id(ahead), None)
        if not ahead.cancelled() and ahead.exception() is None:
            await self._hand_back(ahead.result())

    async def _recreate(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._js.add_consumer(self.stream, self.consumer_config())
            except Exception as err:
                self._log.warning("consumer.recreate_failed", error=_describe(err))
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                self._log.info("consumer.recreated")
                return

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _hand_back(self, messages: Sequence[Msg]) -> None:
        """Returns messages we will not handle to NATS for immediate redelivery."""
        for msg in messages:
            if not msg.is_acked:
                with contextlib.suppress(Exception):
                    await msg.nak()

    # -- handling -------------------------------------------------------------------------------

    async def _handle_batch(self, messages: list[Msg]) -> None:
        if messages:
            self._pending_metric.set(messages[-1].metadata.num_pending)
        self._in_hand[id(messages)] = messages
        try:
            if self.concurrency == 1 or len(messages) == 1:
                await self._handle_lane(messages)
            else:
                lanes: dict[int, list[Msg]] = {}
                for msg in messages:
                    lanes.setdefault(hash(_lane_key(msg)) % self.concurrency, []).append(msg)
                await asyncio.gather(*(self._handle_lane(lane) for lane in lanes.values()))
        finally:
            self._in_hand.pop(id(messages), None)

    async def _handle_lane(self, messages: list[Msg]) -> None:
        size = self.max_per_transaction
        for start in range(0, len(messages), size):
            if self._stopping.is_set():
                await self._hand_back(messages[start:])
                return
            await self._handle_chunk(messages[start : start + size])

    async def _keep_alive(self) -> None:
        """Tells NATS that fetched messages waiting to be settled (also while paused for an
        outage) are not forgotten: no redelivery, and no delivery counted."""
        interval = max(self.ack_wait / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            for messages in list(self._in_hand.values()):
                for msg in messages:
                    if not msg.is_acked:
                        with contextlib.suppress(Exception):
                            await msg.in_progress()

    async def _handle_chunk(self, messages: list[Msg]) -> None:
        """Applies messages in one transaction, commits, then settles each: ack, retry, defer or
        dead letter. When the transaction fails, pauses until the database answers and applies
        the same messages again."""
        pending: list[tuple[Msg, ReceivedEvent]] = []
        for msg in messages:
            try:
                event = ReceivedEvent.from_msg(msg)
            except InvalidEvent as err:
                await self._dead_letter(msg, err, attempts=msg.metadata.num_delivered)
                continue
            if event.delivery_count > 1:
                self._redeliveries_metric.inc()
            pending.append((msg, event))
        if not pending:
            return
        outage = 0
        while True:
            try:
                outcome = await self._apply(pending)
            except Exception as err:
                if not await self._pause(err, outage):
                    await self._hand_back([msg for msg, _ in pending])
                    return
                outage += 1
                continue
            break
        await self._settle(outcome)

    async def _pause(self, error: Exception, attempt: int) -> bool:
        """An outage: waits (no fetching; the batch kept alive) until the database answers.
        False when stopping meanwhile."""
        self.outage_pauses += 1
        self._pauses_metric.inc()
        self._paused_metric.set(1)
        self._log.warning(
            "consumer.paused_for_outage",
            error=_describe(error),
            # The traceback once per outage; later failures are usually the same.
            exc_info=error if attempt == 0 else None,
        )
        try:
            probe = attempt
            while not self._stopping.is_set():
                await self._sleep(self.outage_backoff[min(probe, len(self.outage_backoff) - 1)])
                probe += 1
                if self._stopping.is_set():
                    return False
                try:
                    async with asyncio.timeout(5.0), self._session_factory() as session:
                        await session.execute(text("SELECT 1"))
                except Exception as err:
                    self._log.info("consumer.database_unreachable", error=_describe(err))
                    continue
                self._log.info("consumer.resuming")
                return True
            return False
        finally:
            self._paused_metric.set(0)

    async def _settle(self, outcome: _Outcome) -> None:
        await self._hand_back(outcome.unstarted)
        # Per message only what must be: the metric once per chunk, the memory of held
        # events consulted only when it holds any.
        if outcome.applied:
            self._processed_metric.inc(len(outcome.applied))
        for msg, event in outcome.applied:
            self.processed += 1
            if self._held:
                self._release_held(event)
            await self._ack(msg)
        for msg, event in outcome.duplicates:
            self.duplicates += 1
            self._duplicates_metric.inc()
            if self._held:
                self._release_held(event)
            self._log.info("consumer.duplicate", event_id=str(event.event_id))
            await self._ack(msg)
        for msg, event, error, failures, give_up in outcome.failed:
            with request_context(event.request_id):
                await self._on_failure(msg, event, error, failures, give_up=give_up)
        for msg, event in outcome.deferred:
            await self._defer(msg, event)

    async def _apply(self, pending: list[tuple[Msg, ReceivedEvent]]) -> _Outcome:
        """One statement claims every event id in `processed_events`; the new events are then
        applied by the batch handler, in the transaction itself (no savepoint: two round trips
        fewer per chunk). When it fails, the transaction is rolled back and the chunk applied
        again in a new one, each event by the handler under its own savepoint, so a failing
        handler takes back only its own writes (and its claim is removed before the commit).
        Events behind a failed event of their aggregate are deferred. Handler failures are
        counted in the same transaction. Raises when the transaction itself fails (nothing of
        it holds then)."""
        together = self._batch_handler is not None
        while True:
            try:
                return await self._apply_in_transaction(pending, together=together)
            except _TogetherFailed:
                together = False

    async def _apply_in_transaction(
        self, pending: list[tuple[Msg, ReceivedEvent]], *, together: bool
    ) -> _Outcome:
        outcome = _Outcome()
        async with self._session_factory() as session, session.begin():
            fresh = await self._claim(session, [event.event_id for _, event in pending])
            new: list[tuple[Msg, ReceivedEvent]] = []
            for msg, event in pending:
                if event.event_id not in fresh:
                    outcome.duplicates.append((msg, event))
                    continue
                fresh.discard(event.event_id)  # a second copy in this batch is a duplicate
                new.append((msg, event))
            new = await self._without_waiting(session, new, outcome)
            applied_together = (
                together
                and len(new) > 1
                and not self._stopping.is_set()
                and await self._apply_together(session, new)
            )
            failed: list[tuple[Msg, ReceivedEvent, Exception]] = []
            if applied_together:
                outcome.applied += new
            else:
                failed = await self._apply_one_by_one(session, new, outcome)
            taken_back = [event.event_id for _, event, _ in failed]
            taken_back += [event.event_id for _, event in outcome.deferred]
            if taken_back:
                await session.execute(self._release, {"ids": taken_back})
            await self._count(session, failed, outcome)
        return outcome

    async def _without_waiting(
        self, session: AsyncSession, new: list[tuple[Msg, ReceivedEvent]], outcome: _Outcome
    ) -> list[tuple[Msg, ReceivedEvent]]:
        """Moves to `outcome.deferred` the events that an earlier, handed-back event of their
        aggregate (not in this chunk, and not settled by another replica) must precede."""
        if not self._held:
            return new
        oldest = time.monotonic() - self._held_expiry
        for key in list(self._held):
            waiting = {seq: w for seq, w in self._held[key].items() if w.due > oldest}
            if waiting:
                self._held[key] = waiting
            else:
                del self._held[key]
        here = {event.stream_sequence for _, event in new}

        def blockers(event: ReceivedEvent) -> dict[uuid.UUID, tuple[str, int]]:
            key = _aggregate_key(event)
            return {
                waiting.event_id: (key, seq)
                for seq, waiting in self._held.get(key or "", {}).items()
                if key is not None and seq < event.stream_sequence and seq not in here
            }

        suspects: dict[uuid.UUID, tuple[str, int]] = {}
        for _, event in new:
            suspects.update(blockers(event))
        if suspects:
            settled = await session.execute(self._settled_elsewhere, {"ids": list(suspects)})
            for event_id in settled.scalars():
                key, seq = suspects[event_id]
                self._forget_waiting(key, seq)
        ready: list[tuple[Msg, ReceivedEvent]] = []
        for msg, event in new:
            if blockers(event):
                outcome.deferred.append((msg, event))
            else:
                ready.append((msg, event))
        return ready

    async def _apply_one_by_one(
        self, session: AsyncSession, new: list[tuple[Msg, ReceivedEvent]], outcome: _Outcome
    ) -> list[tuple[Msg, ReceivedEvent, Exception]]:
        failed: list[tuple[Msg, ReceivedEvent, Exception]] = []
        stopped_aggregates: set[str] = set()
        for index, (msg, event) in enumerate(new):
            if self._stopping.is_set():
                rest = new[index:]
                outcome.unstarted = [later for later, _ in rest]
                await session.execute(self._release, {"ids": [later.event_id for _, later in rest]})
                break
            key = _aggregate_key(event)
            if key is not None and key in stopped_aggregates:
                outcome.deferred.append((msg, event))
                continue
            with request_context(event.request_id):
                try:
                    async with session.begin_nested():
                        await self._handler(session, event)
                except Exception as err:
                    if is_infrastructure_error(err):
                        raise InfrastructureError(_describe(err)) from err
                    failed.append((msg, event, err))
                    if key is not None:
                        stopped_aggregates.add(key)
                else:
                    outcome.applied.append((msg, event))
        return failed

    async def _count(
        self,
        session: AsyncSession,
        failed: list[tuple[Msg, ReceivedEvent, Exception]],
        outcome: _Outcome,
    ) -> None:
        """Counts this chunk's handler failures, and forgets those of events now applied, in
        the chunk's transaction. (The count of an event given up on stays: should its dead
        letter fail to publish, the next delivery goes to the DLQ at its first failure.)"""
        totals: dict[uuid.UUID, int] = {}
        if failed:
            result = await session.execute(
                self._count_failures,
                {
                    "ids": [event.event_id for _, event, _ in failed],
                    "floors": [
                        self.max_deliver if isinstance(error, PermanentEventError) else 0
                        for _, _, error in failed
                    ],
                    "errors": [_describe(error) for _, _, error in failed],
                },
            )
            totals = {row.event_id: row.failures for row in result}
        for msg, event, error in failed:
            failures = totals.get(event.event_id, 1)
            if isinstance(error, PermanentEventError):
                # Its count says "given up"; the dead letter tells how often it came.
                outcome.failed.append((msg, event, error, event.delivery_count, True))
            else:
                give_up = failures >= self.max_deliver
                outcome.failed.append((msg, event, error, failures, give_up))
        settled = [event.event_id for _, event in outcome.applied if _may_have_failed(event)]
        if settled:
            await session.execute(self._forget_failures, {"ids": settled})

    async def _apply_together(
        self, session: AsyncSession, new: list[tuple[Msg, ReceivedEvent]]
    ) -> bool:
        """Runs the batch handler over `new` in the transaction; False when there is none.
        Raises `_TogetherFailed` when it failed (the transaction is then rolled back, and the
        events applied one by one in a new one)."""
        if self._batch_handler is None:
            return False
        try:
            await self._batch_handler(session, [event for _, event in new])
        except Exception as err:
            if is_infrastructure_error(err):
                raise InfrastructureError(_describe(err)) from err
            # Each event's own failure, if any, is logged (with its traceback) one by one.
            self._log.warning("consumer.batch_failed", events=len(new), error=_describe(err))
            raise _TogetherFailed from err
        return True

    async def _one_by_batch(self, session: AsyncSession, event: ReceivedEvent) -> None:
        assert self._batch_handler is not None
        await self._batch_handler(session, [event])

    async def _claim(self, session: AsyncSession, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Inserts the `processed_events` rows; returns the ids that were not there (events new
        to us)."""
        result = await session.execute(self._claim_statement, {"ids": event_ids})
        return set(result.scalars())

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except Exception as err:
            # Committed already: a redelivery will be recognised as a duplicate.
            self._log.warning("consumer.ack_failed", error=_describe(err))

    # -- order per aggregate ---------------------------------------------------------------------

    def _hold(self, event: ReceivedEvent, delay: float) -> None:
        key = _aggregate_key(event)
        if key is not None:
            self._held.setdefault(key, {})[event.stream_sequence] = _Waiting(
                event_id=event.event_id, due=time.monotonic() + delay
            )

    def _release_held(self, event: ReceivedEvent) -> None:
        key = _aggregate_key(event)
        if key is not None:
            self._forget_waiting(key, event.stream_sequence)

    def _forget_waiting(self, key: str, seq: int) -> None:
        waiting = self._held.get(key)
        if waiting is not None:
            waiting.pop(seq, None)
            if not waiting:
                del self._held[key]

    async def _defer(self, msg: Msg, event: ReceivedEvent) -> None:
        """Hands back an event that must wait for an earlier one of its aggregate, until just
        after that one is due again."""
        key = _aggregate_key(event)
        now = time.monotonic()
        earlier = [
            waiting.due
            for seq, waiting in self._held.get(key or "", {}).items()
            if seq < event.stream_sequence
        ]
        delay = max(min(earlier, default=now) - now, 0.0) + _DEFER_MARGIN
        self.deferred += 1
        self._deferred_metric.inc()
        self._hold(event, delay)
        try:
            await msg.nak(delay=delay)
        except Exception as err:
            self._log.warning("consumer.nak_failed", error=_describe(err))

    # -- failures -------------------------------------------------------------------------------

    async def _on_failure(
        self, msg: Msg, event: ReceivedEvent, error: Exception, failures: int, *, give_up: bool
    ) -> None:
        self._failures_metric.inc()
        if give_up:
            self._log.error(
                "consumer.giving_up",
                event_id=str(event.event_id),
                subject=event.subject,
                failures=failures,
                error=_describe(error),
                exc_info=error,
            )
            self._release_held(event)
            await self._dead_letter(msg, error, attempts=failures)
            return
        delay = self.backoff[min(failures - 1, len(self.backoff) - 1)]
        self._log.warning(
            "consumer.handler_failed",
            event_id=str(event.event_id),
            subject=event.subject,
            failures=failures,
            retry_in=delay,
            error=_describe(error),
            # The traceback once per message; later failures are usually the same.
            exc_info=error if failures == 1 else None,
        )
        self.retried += 1
        self._hold(event, delay)
        try:
            await msg.nak(delay=delay)
        except Exception as err:
            self._log.warning("consumer.nak_failed", error=_describe(err))

    async def _dead_letter(self, msg: Msg, error: BaseException, *, attempts: int) -> None:
        """Copies the message to `dlq.<durable>` with the reason, then terminates it."""
        metadata = msg.metadata
        headers = {
            name: value
            for name, value in (msg.headers or {}).items()
            if not name.startswith("Nats-")
        }
        headers.update(
            {
                Headers.MSG_ID: (f"{self.durable}.{metadata.stream}.{metadata.sequence.stream}"),
                Headers.DLQ_ERROR: _describe(error),
                Headers.DLQ_CONSUMER: self.durable,
                Headers.DLQ_DELIVERIES: str(attempts),
                Headers.DLQ_AT: datetime.now(UTC).isoformat(),
                Headers.ORIGINAL_SUBJECT: msg.subject,
                Headers.ORIGINAL_STREAM: metadata.stream,
                Headers.ORIGINAL_SEQUENCE: str(metadata.sequence.stream),
            }
        )
        try:
            await self._js.publish(self.dlq_subject, msg.data, headers=headers, timeout=5.0)
        except Exception as err:
            # NATS trouble: keep the message, it comes back and we try the dead letter again.
            self._log.error("consumer.dead_letter_failed", error=_describe(err))
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.backoff[-1])
            return
        self.dead_lettered += 1
        self._dead_lettered_metric.inc()
        self._log.error(
            "consumer.dead_lettered",
            subject=msg.subject,
            stream_sequence=metadata.sequence.stream,
            dlq_subject=self.dlq_subject,
        )
        with contextlib.suppress(Exception):
            await msg.term()

    # -- housekeeping ---------------------------------------------------------------------------

    async def _cleanup_forever(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.cleanup_interval)
            if self._stopping.is_set():
                return
            try:
                await self.cleanup_history()
            except Exception as err:
                self._log.warning("consumer.cleanup_failed", error=_describe(err))

    async def cleanup_history(self, chunk: int = 5000) -> int:
        """Forgets what this consumer recorded about events older than `processed_retention`:
        that it applied them, its failures on them, the effects it had for them."""
        total = 0
        tables = schema_tables(self.schema)
        for table, column in (
            (tables.processed_events, "processed_at"),
            (tables.consumer_failures, "failed_at"),
            (tables.effect_ledger, "started_at"),
        ):
            name = f'"{self.schema}".{table.name}'
            statement = text(
                f"DELETE FROM {name} WHERE ctid IN (SELECT ctid FROM {name}"  # noqa: S608
                f" WHERE consumer = :consumer AND {column} < now() - make_interval(secs => :age)"
                " LIMIT :chunk)"
            )
            while not self._stopping.is_set():
                async with self._session_factory() as session, session.begin():
                    result = await session.execute(
                        statement,
                        {
                            "consumer": self.durable,
                            "age": self.processed_retention.total_seconds(),
                            "chunk": chunk,
                        },
                    )
                deleted = int(getattr(result, "rowcount", 0) or 0)
                total += deleted
                if deleted < chunk:
                    break
        return total


def _may_have_failed(event: ReceivedEvent) -> bool:
    """Whether a handler may have failed on this event before: it is a redelivery, or a replay
    from the DLQ (whose `Nats-Msg-Id` is not the event id)."""
    return event.delivery_count > 1 or event.headers.get(Headers.MSG_ID) != str(event.event_id)


def _aggregate_key(event: ReceivedEvent) -> str | None:
    """The aggregate whose events must be applied in order; None when the event names none."""
    aggregate_type = event.headers.get(Headers.AGGREGATE_TYPE)
    aggregate_id = event.headers.get(Headers.AGGREGATE_ID)
    if aggregate_type and aggregate_id:
        return f"{aggregate_type}:{aggregate_id}"
    return None


def _lane_key(msg: Msg) -> str:
    headers = msg.headers or {}
    aggregate_type = headers.get(Headers.AGGREGATE_TYPE)
    aggregate_id = headers.get(Headers.AGGREGATE_ID)
    if aggregate_type and aggregate_id:
        return f"{aggregate_type}:{aggregate_id}"
    return msg.subject
