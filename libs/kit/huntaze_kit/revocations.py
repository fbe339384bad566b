"""Feeds a `RevocationList` from `auth.session.revoked` events.

An ordered, ephemeral JetStream consumer replays the revocations of the last access-token
lifetime at start (older ones cannot matter: their tokens have expired), then follows new ones.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from huntaze.auth.v1 import events_pb2
from huntaze_kit.identity import RevocationList
from huntaze_kit.logging import get_logger

SESSION_REVOKED_SUBJECT = "auth.session.revoked"

log = get_logger(__name__)


class RevocationFollower:
    def __init__(
        self,
        js: JetStreamContext,
        revocations: RevocationList,
        *,
        lookback: timedelta = timedelta(minutes=16),
    ) -> None:
        self._js = js
        self._revocations = revocations
        self._lookback = lookback
        self._subscription: JetStreamContext.PushSubscription | None = None
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

    async def start(self, *, retry_interval: float = 1.0) -> None:
        """Subscribes, waiting for the AUTH stream when auth has not created it yet."""
        while True:
            start_time = datetime.now(UTC) - self._lookback
            try:
                self._subscription = await self._js.subscribe(
                    SESSION_REVOKED_SUBJECT,
                    cb=self._on_message,
                    ordered_consumer=True,
                    config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.BY_START_TIME,
                        opt_start_time=start_time,
                    ),
                )
            except NotFoundError:
                log.info("revocation_stream_missing_retrying")
                await asyncio.sleep(retry_interval)
                continue
            self.ready.set()
            return

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
