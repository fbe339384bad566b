"""External side effects at most once per event: the effect ledger.

A consumer's transaction can be retried (a failed commit, an outage, a crash before the ack),
but an email, a message sent on a platform, an LLM call or a webhook cannot be taken back. So
before the effect happens, its intent is recorded in `effect_ledger` (consumer, event id,
effect name) in a transaction of its own, committed at once; only the caller that inserted the
row performs the effect. Afterwards the row is marked completed.

* Effect done and recorded: every retry finds the row and skips the effect.
* The effect raised (say the SMTP server refused the connection): the row is removed, so a
  retry of the event may try again. Only raise when the effect surely did not happen.
* A crash (or a lost database) between the intent and the completion leaves a started row
  without completion: the outcome is unknown, and a retry skips the effect and logs
  `effect.outcome_unknown` (at most once wins over at least once).

The effect does not run inside the consumer's batch transaction, which it would otherwise
hold open and whose failure would leave no trace of it:

    ledger = EffectLedger(session_factory=sessions, schema="auth", consumer="auth-email-sender")

    async def handle(session: AsyncSession, event: ReceivedEvent) -> None:
        await ledger.once(event_id=event.event_id, effect="email", action=lambda: send(...))
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum

from sqlalchemy import TextClause, Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_kit.logging import get_logger
from huntaze_kit.outbox import schema_tables
from huntaze_kit.streams import validate_durable_name

log = get_logger(__name__)


class EffectOutcome(StrEnum):
    """What `EffectLedger.once` did."""

    PERFORMED = "performed"
    ALREADY_DONE = "already_done"
    OUTCOME_UNKNOWN = "outcome_unknown"


class EffectLedger:
    """Runs each (event, effect) of one consumer at most once, across retries and processes."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        schema: str,
        consumer: str,
    ) -> None:
        table = schema_tables(schema).effect_ledger  # checks the schema name: safe in SQL
        q = f'"{schema}".{table.name}'
        self.consumer = validate_durable_name(consumer)
        self._session_factory = session_factory
        event_id = bindparam("event_id", type_=Uuid(as_uuid=True))
        self._start = text(
            f"INSERT INTO {q} (consumer, event_id, effect)"  # noqa: S608
            " VALUES (:consumer, :event_id, :effect)"
            " ON CONFLICT DO NOTHING RETURNING true AS started"
        ).bindparams(event_id, consumer=self.consumer)
        this_one = " WHERE consumer = :consumer AND event_id = :event_id AND effect = :effect"
        self._completed, self._complete, self._forget = (
            text(statement + this_one).bindparams(event_id, consumer=self.consumer)
            for statement in (
                f"SELECT completed_at IS NOT NULL FROM {q}",  # noqa: S608
                f"UPDATE {q} SET completed_at = now()",  # noqa: S608
                f"DELETE FROM {q}",  # noqa: S608
            )
        )

    async def once(
        self, *, event_id: uuid.UUID, effect: str, action: Callable[[], Awaitable[object]]
    ) -> EffectOutcome:
        """Runs `action` unless this effect of this event was started before. Database errors
        before the effect propagate (the consumer pauses and retries the event); the action's
        own errors propagate after its intent is withdrawn."""
        values = {"event_id": event_id, "effect": effect}
        async with self._session_factory() as session, session.begin():
            started = (await session.execute(self._start, values)).first() is not None
            if not started:
                done = bool(await session.scalar(self._completed, values))
        context = {"consumer": self.consumer, "event_id": str(event_id), "effect": effect}
        if not started:
            if done:
                log.info("effect.skipped", **context)
                return EffectOutcome.ALREADY_DONE
            log.warning("effect.outcome_unknown", **context)
            return EffectOutcome.OUTCOME_UNKNOWN
        try:
            await action()
        except Exception:
            # (Not on cancellation: the effect may be under way, its intent stays.)
            if not await self._try(self._forget, values):
                # The intent stays: this effect will not be tried again (at most once).
                log.error("effect.withdraw_failed", **context)
            raise
        if not await self._try(self._complete, values):
            # Done all the same: the started row alone keeps it from happening again.
            log.warning("effect.completion_not_recorded", **context)
        return EffectOutcome.PERFORMED

    async def _try(self, statement: TextClause, values: dict[str, object]) -> bool:
        """Runs `statement` in a transaction of its own; False (logged) when that failed."""
        try:
            async with self._session_factory() as session, session.begin():
                await session.execute(statement, values)
        except Exception as err:
            log.warning("effect.ledger_write_failed", consumer=self.consumer, error=repr(err))
            return False
        return True
