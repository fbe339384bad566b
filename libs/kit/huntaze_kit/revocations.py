"""Feeds a `RevocationList` from `auth.session.revoked` events.

An ephemeral JetStream consumer replays the revocations of the last access-token lifetime at
start (older ones cannot matter: their tokens have expired), then follows new ones.

The consumer lives in the NATS server's memory, so a NATS restart loses it. After every
reconnection the follower makes a new one that starts at the time of the newest event it has
applied (or one token lifetime back), so no revocation published meanwhile is missed; the few
delivered twice are harmless. (nats-py's ordered consumer cannot be used for this: its own
recovery asks for a start sequence while the start time is still set, which JetStream refuses,
and it never recovers.)
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from huntaze.auth.v1 import events_pb2
from huntaze_kit.identity import RevocationList
from huntaze_kit.logging import get_logger

SESSION_REVOKED_SUBJECT = "auth.session.revoked"

log = get_logger(__name__)


class RevocationFollower:
    def __init__(
        self,
        nats: NatsClient,
        revocations: RevocationList,
        *,
        lookback: timedelta = timedelta(minutes=16),
        check_interval: float = 1.0,
    ) -> None:
        self._nats = nats
        self._js: JetStreamContext = nats.jetstream()
        self._revocations = revocations
        self._lookback = lookback
        self._check_interval = check_interval
        self._subscription: JetStreamContext.PushSubscription | None = None
        # The JetStream time of the newest event applied: where a new consumer starts.
        self._newest: datetime | None = None
        # The connection's reconnection count when the current consumer was made.
        self._reconnects = 0
        self._watch: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def _on_message(self, msg: Msg) -> None:
        try:
            event = events_pb2.SessionRevoked.FromString(msg.data)
        except Exception:  # a malformed event must not stop the follower
            log.warning("revocation_event_unreadable", subject=msg.subject)
            return
        self._revocations.revoke(
            event.session_id, at=event.occurred_at.ToDatetime(tzinfo=UTC).timestamp()
        )
        stored_at: datetime = msg.metadata.timestamp
        if self._newest is None or stored_at > self._newest:
            self._newest = stored_at

    def _start_time(self) -> datetime:
        floor = datetime.now(UTC) - self._lookback
        if self._newest is None or self._newest < floor:
            return floor
        return self._newest

    async def _subscribe(self) -> JetStreamContext.PushSubscription:
        reconnects: int = self._nats.stats["reconnects"]
        subscription: JetStreamContext.PushSubscription = await self._js.subscribe(
            SESSION_REVOKED_SUBJECT,
            cb=self._on_message,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=self._start_time(),
                ack_policy=AckPolicy.NONE,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        self._reconnects = reconnects
        return subscription

    async def start(self, *, retry_interval: float = 1.0) -> None:
        """Subscribes, waiting for the AUTH stream when auth has not created it yet, then
        watches the connection to subscribe anew after each reconnection."""
        while True:
            try:
                self._subscription = await self._subscribe()
            except NotFoundError:
                log.info("revocation_stream_missing_retrying")
                await asyncio.sleep(retry_interval)
                continue
            break
        self._watch = asyncio.create_task(self._resubscribe_after_reconnects())
        self.ready.set()

    async def _resubscribe_after_reconnects(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._check_interval)
            if self._nats.stats["reconnects"] == self._reconnects or not self._nats.is_connected:
                continue
            try:
                subscription = await self._subscribe()
            except Exception as error:  # NATS may be back without JetStream ready yet: retry
                if not failing:
                    log.warning("revocations_resubscribe_failed", error=repr(error))
                failing = True
                continue
            failing = False
            previous, self._subscription = self._subscription, subscription
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous.unsubscribe()
            log.info("revocations_resubscribed", reconnects=self._reconnects)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
