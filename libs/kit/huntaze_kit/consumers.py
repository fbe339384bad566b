"""Idempotent JetStream consumers: each event is applied at most once per consumer, even when
NATS delivers it several times.

For every message, atomically: the event id goes into the service's `inbox` table for this
consumer (`ON CONFLICT DO NOTHING`); when it was already there, the message is a duplicate and
the handler is skipped; otherwise the handler runs with that same session. The transaction
commits, and only then is the message acknowledged. A crash before the commit leaves nothing
behind and NATS redelivers; a crash after it makes the redelivery a duplicate. (Messages
fetched together share one transaction, each handler under its own savepoint, so a failing
handler takes back only its own writes and inbox row; one commit for the lot saves round trips
and a WAL flush per message.) Handlers must not commit.

A consumer may take a `batch_handler` instead of (or besides) `handler`: it gets all the new
events of a chunk, in order, in one call under one savepoint, and can apply them with set-based
statements. When it raises, that savepoint is rolled back and the chunk's events are applied one
at a time, each under its own savepoint (by `handler`, or by `batch_handler` with one event), so a
poison event is still isolated from its neighbours.

A handler that raises is retried (`nak` with a growing delay) until `max_deliver` deliveries;
then the message goes to `dlq.<durable>` with the error in its headers, and is terminated.
A message without a valid event id, or a handler raising `PermanentEventError`, goes to the
dead letters at once. See `huntaze_kit.dlq` to list and replay them.

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
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import BadSubscriptionError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_kit.logging import get_logger, request_context
from huntaze_kit.outbox import schema_tables
from huntaze_kit.streams import Headers, dlq_subject, validate_durable_name

log = get_logger(__name__)

M = TypeVar("M", bound=Message)

DEFAULT_BACKOFF: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
# Longer than any stream's max age (see huntaze_kit.streams), so replays stay deduplicated.
DEFAULT_INBOX_RETENTION = timedelta(days=30)

_MAX_ERROR_LENGTH = 1000
# Savepoints per transaction: PostgreSQL tracks up to 64 subtransactions per session cheaply.
_MAX_MESSAGES_PER_TRANSACTION = 64
_STATUS = "Status"
_DESCRIPTION = "Description"


class PermanentEventError(Exception):
    """Raise from a handler when no retry can help: the message is dead-lettered at once."""


class InvalidEvent(PermanentEventError):
    """The message is not a well-formed Huntaze event (headers, type or payload)."""


class ConsumerGone(Exception):
    """JetStream deleted the consumer under us (for example the stream was recreated)."""


def _describe(error: BaseException) -> str:
    message = f"{type(error).__name__}: {error}".replace("\r", " ").replace("\n", " ")
    return message[:_MAX_ERROR_LENGTH]


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
        headers = dict(msg.headers or {})
        raw_id = headers.get(Headers.EVENT_ID)
        if not raw_id:
            raise InvalidEvent(f"no {Headers.EVENT_ID} header")
        try:
            event_id = uuid.UUID(raw_id)
        except ValueError as err:
            raise InvalidEvent(f"{Headers.EVENT_ID} {raw_id!r} is not a UUID") from err
        message_type = headers.get(Headers.EVENT_TYPE)
        if not message_type:
            raise InvalidEvent(f"no {Headers.EVENT_TYPE} header")
        metadata = msg.metadata
        return cls(
            event_id=event_id,
            subject=msg.subject,
            message_type=message_type,
            creator_id=headers.get(Headers.CREATOR_ID) or None,
            request_id=headers.get(Headers.REQUEST_ID) or None,
            payload=bytes(msg.data),
            delivery_count=metadata.num_delivered,
            headers=headers,
            stream_sequence=metadata.sequence.stream,
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
    failed: list[tuple[Msg, ReceivedEvent, Exception]] = field(default_factory=list)
    unstarted: list[Msg] = field(default_factory=list)


class _Puller:
    """Pull requests on one durable consumer that return as soon as messages are there.

    (nats-py's `fetch(n)` waits for all n messages or its timeout, which delays a trickle of
    events by up to that timeout.) A no-wait request takes what is available now; when there
    is nothing, a request for one message waits up to `wait` seconds.
    """

    def __init__(self, nc: NatsClient, stream: str, consumer: str) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._prefix = nc.new_inbox()
        self._sub: Subscription | None = None
        self._request_no = 0
        self._partial: list[Msg] = []

    async def open(self) -> None:
        if self._sub is None:
            self._sub = await self._nc.subscribe(f"{self._prefix}.*")

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def take_partial(self) -> list[Msg]:
        """Messages an interrupted fetch had already received (they need a nak)."""
        partial, self._partial = self._partial, []
        return partial

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        got = await self._request({"batch": batch, "no_wait": True}, batch, min(wait, 5.0))
        if got:
            return got
        expires = max(int(wait * 1_000_000_000), 1_000_000)
        return await self._request({"batch": 1, "expires": expires}, 1, wait + 1.0)

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
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=remaining)
            except NatsTimeoutError:
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


class EventConsumer:
    """A durable JetStream pull consumer that applies each event once, in the service schema.

    `durable` is `<service>-<purpose>` (NATS forbids dots in it). Messages of one fetched batch
    are handled in order; with `concurrency` > 1 they are spread over that many lanes by
    aggregate (events of one aggregate stay in order, in one lane).
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
        batch: int = 64,
        ack_wait: float = 30.0,
        concurrency: int = 1,
        fetch_wait: float = 5.0,
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
        inbox_retention: timedelta = DEFAULT_INBOX_RETENTION,
        inbox_cleanup_interval: float = 3600.0,
    ) -> None:
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        if not backoff or any(delay < 0 for delay in backoff):
            raise ValueError("backoff needs at least one non-negative delay")
        if batch < 1 or concurrency < 1:
            raise ValueError("batch and concurrency must be at least 1")
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
        self.batch = batch
        self.ack_wait = ack_wait
        self.concurrency = concurrency
        self.fetch_wait = fetch_wait
        self.deliver_policy = deliver_policy
        self.inbox_retention = inbox_retention
        self.inbox_cleanup_interval = inbox_cleanup_interval
        self.dlq_subject = dlq_subject(durable)

        # Counters, read by metrics and tests.
        self.processed = 0
        self.duplicates = 0
        self.retried = 0
        self.dead_lettered = 0

        self._nc = nats
        self._js = nats.jetstream()
        self._session_factory = session_factory
        self._batch_handler = batch_handler
        self._handler: Handler = handler or self._one_by_batch
        _, inbox = schema_tables(schema)  # checks the schema name: safe in SQL text
        table = f'"{schema}".{inbox.name}'
        ids = bindparam("ids", type_=ARRAY(Uuid(as_uuid=True)))
        self._claim_statement = (
            text(
                f"INSERT INTO {table} (consumer, event_id)"
                " SELECT :consumer, unnest(:ids) ON CONFLICT DO NOTHING RETURNING event_id"
            )
            .bindparams(ids, consumer=self.durable)
            .columns(event_id=Uuid(as_uuid=True))
        )
        self._release = text(
            f"DELETE FROM {table} WHERE consumer = :consumer AND event_id = ANY(:ids)"  # noqa: S608
        ).bindparams(ids, consumer=self.durable)
        self._puller: _Puller | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[Any] | None = None
        self._log = log.bind(consumer=self.durable, stream=stream)

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
            # One delivery more than we use: a crash while dead-lettering gets a second chance.
            max_deliver=self.max_deliver + 1,
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
        cleanup: asyncio.Task[None] | None = None
        try:
            await self.start()
            cleanup = asyncio.create_task(self._cleanup_forever(), name=f"{self.durable}-inbox")
            self._log.info("consumer.started", subjects=self.filter_subjects)
            await self._loop()
        finally:
            if cleanup is not None:
                cleanup.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await cleanup
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

    async def _loop(self) -> None:
        assert self._puller is not None
        failure_delay = 0.2
        while not self._stopping.is_set():
            fetch = asyncio.create_task(self._puller.fetch(self.batch, self.fetch_wait))
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
            if messages:
                await self._handle_batch(messages)

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
        keepalive = asyncio.create_task(self._keep_alive(messages))
        try:
            if self.concurrency == 1 or len(messages) == 1:
                await self._handle_lane(messages)
            else:
                lanes: dict[int, list[Msg]] = {}
                for msg in messages:
                    lanes.setdefault(hash(_lane_key(msg)) % self.concurrency, []).append(msg)
                await asyncio.gather(*(self._handle_lane(lane) for lane in lanes.values()))
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _handle_lane(self, messages: list[Msg]) -> None:
        for start in range(0, len(messages), _MAX_MESSAGES_PER_TRANSACTION):
            if self._stopping.is_set():
                await self._hand_back(messages[start:])
                return
            await self._handle_chunk(messages[start : start + _MAX_MESSAGES_PER_TRANSACTION])

    async def _keep_alive(self, messages: list[Msg]) -> None:
        """Tells NATS that messages waiting in this batch are not forgotten (no redelivery)."""
        interval = max(self.ack_wait / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            for msg in messages:
                if not msg.is_acked:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _handle_chunk(self, messages: list[Msg]) -> None:
        """Applies messages in one transaction, commits, then settles each: ack, retry or dead
        letter."""
        pending: list[tuple[Msg, ReceivedEvent]] = []
        for msg in messages:
            try:
                pending.append((msg, ReceivedEvent.from_msg(msg)))
            except InvalidEvent as err:
                await self._dead_letter(msg, err)
        if not pending:
            return
        outcome = _Outcome()
        try:
            await self._apply(pending, outcome)
        except Exception as err:
            # The transaction itself failed (commit, lost connection): none of it holds.
            self._log.warning("consumer.transaction_failed", error=_describe(err))
            outcome.failed += [(msg, event, err) for msg, event in outcome.applied]
            outcome.failed += [(msg, event, err) for msg, event in outcome.duplicates]
            outcome.applied, outcome.duplicates = [], []
        await self._hand_back(outcome.unstarted)
        for msg, _ in outcome.applied:
            self.processed += 1
            await self._ack(msg)
        for msg, event in outcome.duplicates:
            self.duplicates += 1
            self._log.info("consumer.duplicate", event_id=str(event.event_id))
            await self._ack(msg)
        for msg, event, error in outcome.failed:
            with request_context(event.request_id):
                await self._on_failure(msg, event, error)

    async def _apply(self, pending: list[tuple[Msg, ReceivedEvent]], outcome: _Outcome) -> None:
        """One statement claims every event id in the inbox; the new events are then applied
        by the batch handler under one savepoint or, without one or when it fails, each by the
        handler under its own savepoint, so a failing handler takes back only its own writes
        (and its inbox row is removed before the commit). One commit for the lot saves round
        trips and a WAL flush per message. Fills `outcome` as it goes."""
        async with self._session_factory() as session, session.begin():
            fresh = await self._claim(session, [event.event_id for _, event in pending])
            new: list[tuple[Msg, ReceivedEvent]] = []
            for msg, event in pending:
                if event.event_id not in fresh:
                    outcome.duplicates.append((msg, event))
                    continue
                fresh.discard(event.event_id)  # a second copy in this batch is a duplicate
                new.append((msg, event))
            if (
                len(new) > 1
                and not self._stopping.is_set()
                and await self._apply_together(session, new)
            ):
                outcome.applied += new
                return
            taken_back: list[uuid.UUID] = []
            for index, (msg, event) in enumerate(new):
                if self._stopping.is_set():
                    rest = new[index:]
                    outcome.unstarted = [later for later, _ in rest]
                    taken_back += [later.event_id for _, later in rest]
                    break
                with request_context(event.request_id):
                    try:
                        async with session.begin_nested():
                            await self._handler(session, event)
                    except Exception as err:
                        outcome.failed.append((msg, event, err))
                        taken_back.append(event.event_id)
                    else:
                        outcome.applied.append((msg, event))
            if taken_back:
                await session.execute(self._release, {"ids": taken_back})

    async def _apply_together(
        self, session: AsyncSession, new: list[tuple[Msg, ReceivedEvent]]
    ) -> bool:
        """Runs the batch handler over `new` under one savepoint; False (its writes taken
        back) when there is none or it failed: the events are then applied one by one."""
        if self._batch_handler is None:
            return False
        try:
            async with session.begin_nested():
                await self._batch_handler(session, [event for _, event in new])
        except Exception as err:
            # Each event's own failure, if any, is logged (with its traceback) one by one.
            self._log.warning("consumer.batch_failed", events=len(new), error=_describe(err))
            return False
        return True

    async def _one_by_batch(self, session: AsyncSession, event: ReceivedEvent) -> None:
        assert self._batch_handler is not None
        await self._batch_handler(session, [event])

    async def _claim(self, session: AsyncSession, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Inserts the inbox rows; returns the ids that were not there (events new to us)."""
        result = await session.execute(self._claim_statement, {"ids": event_ids})
        return set(result.scalars())

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except Exception as err:
            # Committed already: a redelivery will be recognised as a duplicate.
            self._log.warning("consumer.ack_failed", error=_describe(err))

    async def _on_failure(self, msg: Msg, event: ReceivedEvent, error: Exception) -> None:
        deliveries = event.delivery_count
        if isinstance(error, PermanentEventError) or deliveries >= self.max_deliver:
            self._log.error(
                "consumer.giving_up",
                event_id=str(event.event_id),
                subject=event.subject,
                deliveries=deliveries,
                error=_describe(error),
                exc_info=error,
            )
            await self._dead_letter(msg, error)
            return
        delay = self.backoff[min(deliveries - 1, len(self.backoff) - 1)]
        self._log.warning(
            "consumer.handler_failed",
            event_id=str(event.event_id),
            subject=event.subject,
            deliveries=deliveries,
            retry_in=delay,
            error=_describe(error),
            # The traceback once per message; later failures are usually the same.
            exc_info=error if deliveries == 1 else None,
        )
        self.retried += 1
        try:
            await msg.nak(delay=delay)
        except Exception as err:
            self._log.warning("consumer.nak_failed", error=_describe(err))

    async def _dead_letter(self, msg: Msg, error: BaseException) -> None:
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
                Headers.DLQ_DELIVERIES: str(metadata.num_delivered),
                Headers.DLQ_AT: datetime.now(UTC).isoformat(),
                Headers.ORIGINAL_SUBJECT: msg.subject,
                Headers.ORIGINAL_STREAM: metadata.stream,
                Headers.ORIGINAL_SEQUENCE: str(metadata.sequence.stream),
            }
        )
        try:
            await self._js.publish(self.dlq_subject, msg.data, headers=headers, timeout=5.0)
        except Exception as err:
            # Keep the message: it comes back later and we try the dead letter again.
            self._log.error("consumer.dead_letter_failed", error=_describe(err))
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.backoff[-1])
            return
        self.dead_lettered += 1
        self._log.error(
            "consumer.dead_lettered",
            subject=msg.subject,
            stream_sequence=metadata.sequence.stream,
            dlq_subject=self.dlq_subject,
        )
        with contextlib.suppress(Exception):
            await msg.term()

    # -- inbox housekeeping ---------------------------------------------------------------------

    async def _cleanup_forever(self) -> None:
        while not self._stopping.is_set():
            await self._sleep(self.inbox_cleanup_interval)
            if self._stopping.is_set():
                return
            try:
                await self.cleanup_inbox()
            except Exception as err:
                self._log.warning("consumer.inbox_cleanup_failed", error=_describe(err))

    async def cleanup_inbox(self, chunk: int = 5000) -> int:
        """Forgets events this consumer applied longer than `inbox_retention` ago."""
        inbox = f'"{self.schema}".inbox'
        statement = text(
            f"DELETE FROM {inbox} WHERE ctid IN (SELECT ctid FROM {inbox}"  # noqa: S608
            " WHERE consumer = :consumer AND processed_at < now() - make_interval(secs => :age)"
            " LIMIT :chunk)"
        )
        total = 0
        while not self._stopping.is_set():
            async with self._session_factory() as session, session.begin():
                result = await session.execute(
                    statement,
                    {
                        "consumer": self.durable,
                        "age": self.inbox_retention.total_seconds(),
                        "chunk": chunk,
                    },
                )
            deleted = int(getattr(result, "rowcount", 0) or 0)
            total += deleted
            if deleted < chunk:
                break
        return total


def _lane_key(msg: Msg) -> str:
    headers = msg.headers or {}
    aggregate_type = headers.get(Headers.AGGREGATE_TYPE)
    aggregate_id = headers.get(Headers.AGGREGATE_ID)
    if aggregate_type and aggregate_id:
        return f"{aggregate_type}:{aggregate_id}"
    return msg.subject
