"""The AI agent's use cases. Only this layer commits.

From events (inside the consumer's transaction): an incoming fan message becomes one `pending`
suggestion (the unique (creator, message) key makes a redelivered event a no-op); a reply of the
creator cancels what the agent still had open in that conversation and joins the style index; a
purchase soon after an AI message is attributed to it.

From the workers: a pending suggestion is drafted (many at once) and becomes `suggested`,
`scheduled` (autopilot), `handed_off` or `ignored`; a scheduled one, once due, is sent through
the CRM under the idempotency key of its incoming message.

From the creator (gRPC): configuration, and accepting (as drafted or edited) or rejecting a
suggestion. Accepting sends under the same key as the autopilot would, so one incoming message
is answered at most once whichever path sends it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.ai.v1 import events_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze_ai_agent import convert
from huntaze_ai_agent.configuration import AiConfiguration, QuietHours
from huntaze_ai_agent.crm_client import CrmClient, Metadata, fan_profile
from huntaze_ai_agent.drafting import Attempt, Drafter, Usage, within_budget
from huntaze_ai_agent.guardrails import Decision, decide, quiet_hours_end
from huntaze_ai_agent.models import SCHEMA, AuditEntry, LlmCall, Suggestion
from huntaze_ai_agent.prompts import DraftRequest, FanProfile, Prompt, StyleExample, build_prompt
from huntaze_ai_agent.providers import Completion
from huntaze_ai_agent.repository import (
    load_configuration,
    load_configurations,
    save_configuration,
)
from huntaze_ai_agent.style_index import Lookup, StyleIndex, add_past_reply
from huntaze_ai_agent.workers import GroupCommit
from huntaze_kit.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from huntaze_kit.logging import get_logger, request_context
from huntaze_kit.outbox import OutboxEvent, record_event, record_events

log = get_logger(__name__)

Clock = Callable[[], datetime]

DRAFTS_CHANNEL = "ai_drafts"
# Every send of the agent for one incoming message uses this key: the CRM queues it once.
IDEMPOTENCY_PREFIX = "ai:"
BUDGET_REASON = "AUTOMATION_BUDGET_EXHAUSTED"
OPEN_STATUSES = ("pending", "suggested", "scheduled")
AUTOPILOT = "autopilot"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Timing:
    """How long the autopilot waits before it sends (a person does not answer at once), how
    long a worker holds a claimed suggestion (and one whose context the CRM did not give), and
    how long after an AI message a purchase is attributed to it."""

    autopilot_min_delay: timedelta = timedelta(seconds=20)
    autopilot_max_delay: timedelta = timedelta(seconds=60)
    lease: timedelta = timedelta(seconds=120)
    draft_retry: timedelta = timedelta(seconds=2)
    send_retry: timedelta = timedelta(seconds=30)
    attribution_window: timedelta = timedelta(hours=24)


# What a draft stores on its suggestion (with the column's type), and the values of a
# suggestion that has none.
_DRAFT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mode", "text"),
    ("text", "text"),
    ("provider", "text"),
    ("model", "text"),
    ("prompt_fingerprint", "text"),
    ("input_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("cost_micros", "bigint"),
    ("latency_ms", "bigint"),
    ("fallback", "text"),
    ("send_after", "timestamptz"),
)
_DRAFT_DEFAULTS: dict[str, Any] = {
    "mode": "",
    "text": "",
    "provider": "",
    "model": "",
    "prompt_fingerprint": "",
    "input_tokens": 0,
    "output_tokens": 0,
    "cost_micros": 0,
    "latency_ms": 0,
    "fallback": "",
}


# Drafting's end for many suggestions in one statement, shaped the same for any number (so
# compiled once): the outcomes as arrays, one element per suggestion, in `_SETTLE_TYPES` order.
_SETTLE_TYPES: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("status", "text"),
    ("handoff_reason", "text"),
    *_DRAFT_COLUMNS,
)
_SETTLE = text(
    # Names and types from the constants above: no input reaches the SQL text.
    f"UPDATE {SCHEMA}.suggestions AS s SET "  # noqa: S608
    + ", ".join(f"{name} = v.{name}" for name, _ in _SETTLE_TYPES[1:])
    + ", claimed_until = NULL, updated_at = now() FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _SETTLE_TYPES)
    + ") AS v("
    + ", ".join(name for name, _ in _SETTLE_TYPES)
    + ") WHERE s.id = v.id AND s.status = 'pending' RETURNING s.*"
)


_RECORD_INCOMING = (
    insert(Suggestion)
    .on_conflict_do_nothing(index_elements=["creator_id", "message_id"])
    .returning(Suggestion)
)


@dataclass(frozen=True)
class Claimed:
    """A pending suggestion claimed for drafting, with its creator's configuration and their
    past replies most like it."""

    suggestion: Suggestion
    configuration: AiConfiguration
    examples: tuple[StyleExample, ...]


@dataclass(frozen=True)
class PaidCall:
    """An LLM call for one suggestion, and the prompt it sends."""

    suggestion: Suggestion
    request: DraftRequest
    prompt: Prompt


@dataclass(frozen=True)
class Outcome:
    """How drafting ended for one suggestion: its new status, the hand-off reason, and the
    draft's columns (`_DRAFT_COLUMNS`) when there is one."""

    suggestion: Suggestion
    status: str
    reason: str = ""
    draft: dict[str, Any] = field(default_factory=dict)


def _acts_on(claimed: Claimed) -> bool:
    """False when the creator's configuration leaves this suggestion's fan or platform alone."""
    s, configuration = claimed.suggestion, claimed.configuration
    return configuration.mode_for(str(s.fan_id)) != "off" and configuration.acts_on(s.platform)


def _uuid(value: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as error:
        raise InvalidArgument.for_field(name, "is not a valid id") from error


def _month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class AiAgentService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        drafter: Drafter,
        crm: CrmClient,
        timing: Timing | None = None,
        clock: Clock = utc_now,
        style: StyleIndex | None = None,
    ) -> None:
        self._sessions = sessions
        self.drafter = drafter
        self.style = style or StyleIndex()
        self._crm = crm
        self.timing = timing or Timing()
        self.clock = clock
        # The LLM's answers and drafts end one at a time: stored together, while the previous
        # commit runs.
        self._ledger = GroupCommit[tuple[Suggestion, Attempt]](self._complete_calls)
        self._settler = GroupCommit[Outcome](self._settle_many)

    # --- configuration -------------------------------------------------------------------------

    async def get_configuration(self, *, creator_id: uuid.UUID) -> AiConfiguration:
        async with self._sessions() as session:
            return await load_configuration(session, creator_id=creator_id)

    async def update_configuration(
        self, *, creator_id: uuid.UUID, configuration: AiConfiguration
    ) -> AiConfiguration:
        async with self._sessions() as session:
            await save_configuration(session, creator_id=creator_id, configuration=configuration)
            await session.commit()
        return configuration

    # --- from events (the consumer's session; no commit) -------------------------------------

    async def record_incoming(
        self,
        session: AsyncSession,
        *,
        events: Sequence[tuple[crm_events.MessageReceived, str | None]],
    ) -> None:
        """One pending suggestion per incoming message (with the request id it came with),
        whatever the number of deliveries; many messages in one statement."""
        rows = []
        # The fan as the CRM had them with each message: what drafting at once needs.
        fans: dict[uuid.UUID, FanProfile] = {}
        for event, request_id in events:
            message = event.message
            if event.HasField("fan"):
                fans[_uuid(message.id, "message.id")] = fan_profile(event.fan)
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "creator_id": _uuid(event.creator_id, "creator_id"),
                    "message_id": _uuid(message.id, "message.id"),
                    "conversation_id": _uuid(message.conversation_id, "message.conversation_id"),
                    "fan_id": _uuid(message.fan_id, "message.fan_id"),
                    "platform": convert.platform_name(message.platform),
                    "incoming_text": message.text,
                    "received_at": convert.from_timestamp(message.created_at) or self.clock(),
                    "request_id": request_id or "",
                }
            )
        if not rows:
            return
        # One statement for the lot, of one shape whatever their number (compiled once); a
        # message delivered again inserts nothing.
        inserted = list(await session.scalars(_RECORD_INCOMING, rows))
        waiting = inserted
        # Only drafts that need no I/O (an LLM's answer, an embedding) are made here: the
        # consumer's transaction, and every CRM event behind it, must not wait on a network.
        if inserted and not self.drafter.pays and not self.style.vectors:
            waiting = await self._draft_now(session, inserted, fans)
        if waiting:
            # Delivered at commit: the drafting workers wake at once.
            await session.execute(text(f"NOTIFY {DRAFTS_CHANNEL}"))

    async def _draft_now(
        self,
        session: AsyncSession,
        suggestions: Sequence[Suggestion],
        fans: dict[uuid.UUID, FanProfile],
    ) -> list[Suggestion]:
        """Drafts, in the consumer's transaction, the new suggestions whose event carried the
        fan, when the provider is local and past replies are found by text search (no I/O,
        nothing paid): no claim, no call to the CRM and no transaction of their own; they are
        settled, with their events, as the message is recorded. Answers the suggestions left
        for the drafting workers (an event without the fan, or a draft that failed)."""
        ready = [s for s in suggestions if s.message_id in fans]
        if not ready:
            return list(suggestions)
        claimed = await self._with_context(session, ready)
        try:
            outcomes, _ = await self._decide_all(
                claimed, {fans[s.message_id].fan_id: fans[s.message_id] for s in ready}
            )
        except Exception:
            # Still pending: the workers draft them (and log what fails again).
            log.exception("ai.draft_now_failed", suggestions=len(ready))
            return list(suggestions)
        await self._settle_in(session, outcomes)
        return [s for s in suggestions if s.message_id not in fans]

    async def creator_replied(
        self, session: AsyncSession, *, event: crm_events.MessageSendRequested
    ) -> None:
        """A reply written by the creator (or their team): what the agent had open in that
        conversation is void, and the reply joins the style index."""
        if event.sender_kind not in (
            crm_pb2.SENDER_KIND_CREATOR,
            crm_pb2.SENDER_KIND_TEAM_MEMBER,
        ) or event.idempotency_key.startswith(IDEMPOTENCY_PREFIX):
            return
        creator_id = _uuid(event.creator_id, "creator_id")
        conversation_id = _uuid(event.conversation_id, "conversation_id")
        replied_at = convert.from_timestamp(event.occurred_at) or self.clock()
        cancelled = await session.scalars(
            update(Suggestion)
            .where(
                Suggestion.creator_id == creator_id,
                Suggestion.conversation_id == conversation_id,
                Suggestion.status.in_(OPEN_STATUSES),
                Suggestion.received_at <= replied_at,
            )
            .values(status="cancelled", updated_at=func.now())
            .returning(Suggestion)
        )
        for suggestion in cancelled.all():
            await self._resolved(session, suggestion, "cancelled")
        last_incoming = await session.scalar(
            select(Suggestion.incoming_text)
            .where(
                Suggestion.creator_id == creator_id,
                Suggestion.conversation_id == conversation_id,
                Suggestion.received_at <= replied_at,
            )
            .order_by(Suggestion.received_at.desc())
            .limit(1)
        )
        if last_incoming and event.text.strip():
            add_past_reply(
                session, creator_id=creator_id, fan_message=last_incoming, reply=event.text
            )

    async def purchase_recorded(
        self, session: AsyncSession, *, event: crm_events.PurchaseRecorded
    ) -> None:
        """Attributes the purchase to the fan's last AI message within the window before it."""
        purchase = event.purchase
        creator_id = _uuid(event.creator_id, "creator_id")
        bought_at = convert.from_timestamp(purchase.occurred_at) or self.clock()
        entry = await session.scalar(
            select(AuditEntry)
            .where(
                AuditEntry.creator_id == creator_id,
                AuditEntry.fan_id == _uuid(purchase.fan_id, "purchase.fan_id"),
                AuditEntry.created_at <= bought_at,
                AuditEntry.created_at > bought_at - self.timing.attribution_window,
            )
            .order_by(AuditEntry.created_at.desc())
            .limit(1)
        )
        if entry is None:
            return
        await record_event(
            session,
            schema=SCHEMA,
            subject="ai.revenue.attributed",
            event=events_pb2.RevenueAttributed(
                creator_id=str(creator_id),
                fan_id=purchase.fan_id,
                purchase_id=purchase.id,
                amount_cents=purchase.amount_cents,
                audit_entry_id=str(entry.id),
                sent_message_id=str(entry.sent_message_id),
                occurred_at=convert.timestamp(self.clock()),
            ),
            aggregate_type="fan",
            aggregate_id=purchase.fan_id,
            creator_id=str(creator_id),
        )

    # --- drafting (workers) ---------------------------------------------------------------------

    async def _claim(self, condition: Any, order: Any, limit: int) -> list[Suggestion]:
        """Claims up to `limit` suggestions matching `condition` for one lease."""
        async with self._sessions() as session:
            rows = await self._claim_in(session, condition, order, limit)
            await session.commit()
        return rows

    async def _claim_in(
        self, session: AsyncSession, condition: Any, order: Any, limit: int
    ) -> list[Suggestion]:
        now = self.clock()
        chosen = (
            select(Suggestion.id)
            .where(
                condition,
                (Suggestion.claimed_until.is_(None)) | (Suggestion.claimed_until < now),
            )
            .order_by(order)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        claimed = await session.scalars(
            update(Suggestion)
            .where(Suggestion.id.in_(chosen))
            .values(claimed_until=now + self.timing.lease)
            .returning(Suggestion)
        )
        return list(claimed.all())

    async def claim_drafts(self, *, limit: int) -> list[Claimed]:
        """Claims up to `limit` pending suggestions and reads, in the same transaction, what
        drafting them needs from the agent's own tables."""
        async with self._sessions() as session:
            rows = await self._claim_in(
                session, Suggestion.status == "pending", Suggestion.created_at, limit
            )
            claimed = await self._with_context(session, rows)
            await session.commit()
        return claimed

    async def _with_context(
        self, session: AsyncSession, suggestions: Sequence[Suggestion]
    ) -> list[Claimed]:
        if not suggestions:
            return []
        configurations = await load_configurations(
            session, creator_ids={s.creator_id for s in suggestions}
        )
        # Read for every one, though some will be ignored or handed off: one query either way.
        examples = await self.style.similar_many(
            session, [Lookup(s.id, s.creator_id, s.incoming_text) for s in suggestions]
        )
        return [
            Claimed(s, configurations[s.creator_id], tuple(examples[s.id])) for s in suggestions
        ]

    async def claim_pending(self, *, limit: int) -> list[Suggestion]:
        return await self._claim(Suggestion.status == "pending", Suggestion.created_at, limit)

    async def claim_due(self, *, limit: int) -> list[Suggestion]:
        return await self._claim(
            (Suggestion.status == "scheduled") & (Suggestion.send_after <= self.clock()),
            Suggestion.send_after,
            limit,
        )

    async def draft(self, suggestion: Suggestion) -> None:
        """Drafts one claimed pending suggestion, or hands it off, or marks it ignored."""
        async with self._sessions() as session:
            claimed = await self._with_context(session, [suggestion])
        for work in await self.draft_batch(claimed):
            await work

    async def draft_batch(self, batch: Sequence[Claimed]) -> list[Awaitable[None]]:
        """Drafts claimed pending suggestions together: the fans are read in one CRM call per
        creator, and what the local provider writes is stored in one transaction. An LLM's
        drafts take seconds each: they are answered as work left to do, one per suggestion,
        each stored as it ends."""
        try:
            fans = await self._fans([c.suggestion for c in batch if _acts_on(c)])
        except grpc.aio.AioRpcError:
            await self._release([c.suggestion for c in batch])
            raise
        outcomes, paid = await self._decide_all(batch, fans)
        await self._settle_many(outcomes)
        return await self._llm_drafts(paid) if paid else []

    async def _release(self, suggestions: Sequence[Suggestion]) -> None:
        """Claimed suggestions whose drafting could not start (the CRM did not answer, nothing
        was paid for): taken up again after `timing.draft_retry`, not once the lease runs out."""
        async with self._sessions() as session:
            await session.execute(
                update(Suggestion)
                .where(
                    Suggestion.id.in_([s.id for s in suggestions]),
                    Suggestion.status == "pending",
                )
                .values(claimed_until=self.clock() + self.timing.draft_retry)
            )
            await session.commit()

    async def _decide_all(
        self, batch: Sequence[Claimed], fans: dict[str, FanProfile]
    ) -> tuple[list[Outcome], list[tuple[Suggestion, DraftRequest, Decision]]]:
        """What becomes of each claimed suggestion, given its fan (by fan id): the outcomes
        known now (the local provider's drafts among them), and the LLM calls to make."""
        outcomes: list[Outcome] = []
        active: list[Suggestion] = []
        configurations: dict[uuid.UUID, AiConfiguration] = {}
        examples: dict[uuid.UUID, tuple[StyleExample, ...]] = {}
        for claimed in batch:
            s, configuration = claimed.suggestion, claimed.configuration
            if not _acts_on(claimed):
                outcomes.append(Outcome(s, "ignored"))
                continue
            active.append(s)
            configurations[s.creator_id] = configuration
            examples[s.id] = claimed.examples
        now = self.clock()
        paid: list[tuple[Suggestion, DraftRequest, Decision]] = []
        for suggestion in active:
            configuration = configurations[suggestion.creator_id]
            fan = fans.get(str(suggestion.fan_id))
            if fan is None:  # deleted from the CRM since the message came
                outcomes.append(Outcome(suggestion, "ignored"))
                continue
            decision = decide(
                configuration,
                fan=fan,
                platform=suggestion.platform,
                incoming=suggestion.incoming_text,
                now=now,
            )
            if decision.action == "ignore":
                outcomes.append(Outcome(suggestion, "ignored"))
            elif decision.action == "handoff":
                outcomes.append(Outcome(suggestion, "handed_off", reason=decision.reason or ""))
            else:
                request = DraftRequest(
                    configuration=configuration,
                    fan=fan,
                    incoming=suggestion.incoming_text,
                    examples=examples[suggestion.id],
                )
                if self.drafter.pays:
                    paid.append((suggestion, request, decision))
                else:  # the local provider needs no I/O: drafted here, stored with the rest
                    outcomes.append(await self._drafted(suggestion, request, decision))
        return outcomes, paid

    async def _llm_drafts(
        self, drafts: Sequence[tuple[Suggestion, DraftRequest, Decision]]
    ) -> list[Awaitable[None]]:
        """The conversations (one CRM call per creator, all at once), then the calls recorded
        as started in one transaction; each call is the work left for its suggestion."""
        by_creator: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID]]] = {}
        for s, _, _ in drafts:
            by_creator.setdefault(s.creator_id, []).append((s.conversation_id, s.message_id))
        try:
            answers = await asyncio.gather(
                *(
                    self._crm.histories(creator_id=creator_id, messages=messages)
                    for creator_id, messages in by_creator.items()
                )
            )
        except grpc.aio.AioRpcError:
            await self._release([s for s, _, _ in drafts])
            raise
        histories = {key: turns for answer in answers for key, turns in answer.items()}
        calls = []
        for suggestion, request, _ in drafts:
            with_history = dataclasses.replace(request, history=histories[suggestion.message_id])
            calls.append(PaidCall(suggestion, with_history, build_prompt(with_history)))
        known = await self._begin_calls(calls)
        return [
            self._draft_with_llm(call, decision, known[call.suggestion.id])
            for call, (_, _, decision) in zip(calls, drafts, strict=True)
        ]

    async def _fans(self, suggestions: Sequence[Suggestion]) -> dict[str, FanProfile]:
        """The fans of `suggestions` by id, one CRM call per creator, all at once."""
        by_creator: dict[uuid.UUID, set[uuid.UUID]] = {}
        for suggestion in suggestions:
            by_creator.setdefault(suggestion.creator_id, set()).add(suggestion.fan_id)
        answers = await asyncio.gather(
            *(
                self._crm.fans(creator_id=creator_id, fan_ids=fan_ids)
                for creator_id, fan_ids in by_creator.items()
            )
        )
        return {str(fan_id): fan for answer in answers for fan_id, fan in answer.items()}

    async def _draft_with_llm(
        self, call: PaidCall, decision: Decision, known: Attempt | None
    ) -> None:
        suggestion = call.suggestion
        with request_context(suggestion.request_id or None):
            attempt = known if known is not None else await self._call(call)
            outcome = await self._drafted(
                suggestion, call.request, decision, prompt=call.prompt, attempt=attempt
            )
            await self._settler.submit(outcome)

    async def _drafted(
        self,
        suggestion: Suggestion,
        request: DraftRequest,
        decision: Decision,
        *,
        prompt: Prompt | None = None,
        attempt: Attempt | None = None,
    ) -> Outcome:
        """The draft (checked, or the local provider's when the LLM's is refused or missing)
        and what becomes of it."""
        prompt = prompt or build_prompt(request)
        if attempt is None:
            attempt = await self._attempt_once(suggestion, request, prompt)
        draft = await self.drafter.finish(request, prompt, attempt)
        if draft.text is None:
            return Outcome(suggestion, "handed_off", reason="no_safe_reply")
        autopilot = decision.action == AUTOPILOT
        completion = draft.completion
        paid = draft.paid
        return Outcome(
            suggestion,
            "scheduled" if autopilot else "suggested",
            draft={
                "mode": decision.action,
                "text": draft.text,
                "provider": completion.provider,
                "model": completion.model,
                "prompt_fingerprint": draft.prompt_fingerprint,
                # What was paid counts, even when the local provider's reply replaced it.
                "input_tokens": (paid or completion).input_tokens,
                "output_tokens": (paid or completion).output_tokens,
                "cost_micros": (paid or completion).cost_micros,
                "latency_ms": completion.latency_ms + (paid.latency_ms if paid else 0),
                "fallback": draft.fallback or "",
                "send_after": (
                    self.send_time(request.configuration.guardrails.quiet_hours)
                    if autopilot
                    else None
                ),
            },
        )

    def send_time(self, quiet_hours: QuietHours | None) -> datetime:
        """When the autopilot sends a reply drafted now: after a human-like delay, counted
        from the end of the creator's quiet hours when they are on."""
        low = self.timing.autopilot_min_delay.total_seconds()
        high = max(low, self.timing.autopilot_max_delay.total_seconds())
        now = self.clock()
        start = quiet_hours_end(quiet_hours, now) or now
        return start + timedelta(seconds=random.uniform(low, high))  # noqa: S311

    async def _attempt_once(
        self, suggestion: Suggestion, request: DraftRequest, prompt: Prompt
    ) -> Attempt:
        """The provider's answer for this message: from the ledger when it was paid for
        already, else from one call recorded before and after it is made."""
        if not self.drafter.pays:
            return await self.drafter.attempt(request, prompt, spent=Usage())
        call = PaidCall(suggestion, request, prompt)
        known = (await self._begin_calls([call]))[suggestion.id]
        return known if known is not None else await self._call(call)

    async def _begin_calls(self, calls: Sequence[PaidCall]) -> dict[uuid.UUID, Attempt | None]:
        """For each suggestion, in one transaction: the ledger's answer when its call was made
        before, a refusal when its creator's budget is spent, or None: its call is recorded as
        started (committed before it is made, so that it is never made twice) and is to be
        made now."""
        answers: dict[uuid.UUID, Attempt | None] = {}
        provider = self.drafter.provider
        async with self._sessions() as session:
            earlier = await session.scalars(
                select(LlmCall).where(
                    tuple_(LlmCall.creator_id, LlmCall.message_id).in_(
                        [(c.suggestion.creator_id, c.suggestion.message_id) for c in calls]
                    )
                )
            )
            made = {(row.creator_id, row.message_id): row for row in earlier}
            spent = await self._usages(session, {c.suggestion.creator_id for c in calls})
            started = []
            for call in calls:
                suggestion = call.suggestion
                known = made.get((suggestion.creator_id, suggestion.message_id))
                if known is not None:
                    # Started and never finished: it may have been paid for; never call twice.
                    answers[suggestion.id] = (
                        Attempt(_completion(known))
                        if known.status == "completed"
                        else Attempt(None, "provider_failed")
                    )
                elif not within_budget(
                    call.request.configuration.budget, spent[suggestion.creator_id]
                ):
                    answers[suggestion.id] = Attempt(None, "over_budget")
                else:
                    answers[suggestion.id] = None
                    started.append(
                        {
                            "creator_id": suggestion.creator_id,
                            "message_id": suggestion.message_id,
                            "provider": provider.name,
                            "model": provider.model,
                            "prompt_fingerprint": call.prompt.fingerprint,
                        }
                    )
            if started:
                await session.execute(insert(LlmCall), started)
                await session.commit()
        return answers

    async def _call(self, call: PaidCall) -> Attempt:
        """Makes a started call, then records its answer (with the others ending meanwhile)."""
        attempt = await self.drafter.attempt(call.request, call.prompt, spent=Usage())
        await self._ledger.submit((call.suggestion, attempt))
        return attempt

    async def _complete_calls(self, ended: Sequence[tuple[Suggestion, Attempt]]) -> None:
        now = self.clock()
        rows: list[dict[str, Any]] = []
        for suggestion, attempt in ended:
            key = {"creator_id": suggestion.creator_id, "message_id": suggestion.message_id}
            completion = attempt.completion
            if completion is None:
                rows.append(
                    key | {"status": "failed", "error": attempt.fallback or "", "completed_at": now}
                )
                continue
            rows.append(
                key
                | {
                    "status": "completed",
                    "text": completion.text,
                    "model": completion.model,
                    "input_tokens": completion.input_tokens,
                    "output_tokens": completion.output_tokens,
                    "cost_micros": completion.cost_micros,
                    "latency_ms": completion.latency_ms,
                    "completed_at": now,
                }
            )
        async with self._sessions() as session:
            # Grouped by their keys: one executemany per shape (failed, completed).
            for shape in ({"failed"}, {"completed"}):
                same = [row for row in rows if row["status"] in shape]
                if same:
                    await session.execute(update(LlmCall), same)
            await session.commit()

    async def _usages(
        self, session: AsyncSession, creator_ids: set[uuid.UUID]
    ) -> dict[uuid.UUID, Usage]:
        rows = await session.execute(
            select(
                LlmCall.creator_id,
                func.coalesce(func.sum(LlmCall.input_tokens + LlmCall.output_tokens), 0),
                func.coalesce(func.sum(LlmCall.cost_micros), 0),
            )
            .where(
                LlmCall.creator_id.in_(creator_ids),
                LlmCall.created_at >= _month_start(self.clock()),
            )
            .group_by(LlmCall.creator_id)
        )
        found = {row[0]: Usage(tokens=int(row[1]), cost_micros=int(row[2])) for row in rows}
        return {creator_id: found.get(creator_id, Usage()) for creator_id in creator_ids}

    async def usage(self, *, creator_id: uuid.UUID) -> Usage:
        """What the creator's LLM calls cost this month."""
        async with self._sessions() as session:
            return (await self._usages(session, {creator_id}))[creator_id]

    async def _settle_many(self, outcomes: Sequence[Outcome]) -> None:
        """Ends drafting for each outcome in one transaction: unless the creator replied
        meanwhile (then it is cancelled already), stores it and its event."""
        if not outcomes:
            return
        async with self._sessions() as session:
            await self._settle_in(session, outcomes)
            await session.commit()

    async def _settle_in(self, session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
        """`_settle_many` in a transaction of the caller's."""
        if not outcomes:
            return
        arrays: dict[str, list[Any]] = {
            "id": [o.suggestion.id for o in outcomes],
            "status": [o.status for o in outcomes],
            "handoff_reason": [o.reason for o in outcomes],
        }
        for name, _ in _DRAFT_COLUMNS:
            arrays[name] = [o.draft.get(name, _DRAFT_DEFAULTS.get(name)) for o in outcomes]
        settled = await session.scalars(
            select(Suggestion).from_statement(_SETTLE).params(**arrays),
            execution_options={"populate_existing": True},
        )
        events = [self._settled_event(row) for row in settled.all()]
        await record_events(
            session, schema=SCHEMA, events=[event for event in events if event is not None]
        )

    def _settled_event(self, suggestion: Suggestion) -> OutboxEvent | None:
        if suggestion.status == "handed_off":
            return self._outbox_event(
                suggestion,
                "ai.handoff.requested",
                events_pb2.HandoffRequested(
                    creator_id=str(suggestion.creator_id),
                    suggestion=convert.suggestion(suggestion),
                    reason=suggestion.handoff_reason,
                    occurred_at=convert.timestamp(self.clock()),
                ),
            )
        if suggestion.status in ("suggested", "scheduled"):
            return self._outbox_event(
                suggestion,
                "ai.suggestion.created",
                events_pb2.SuggestionCreated(
                    creator_id=str(suggestion.creator_id),
                    suggestion=convert.suggestion(suggestion),
                    occurred_at=convert.timestamp(self.clock()),
                ),
            )
        return None

    # --- autopilot ------------------------------------------------------------------------------

    async def send_batch(self, suggestions: Sequence[Suggestion]) -> list[Awaitable[None]]:
        """Each claimed, due reply is its own send."""
        return [self.send_due(suggestion) for suggestion in suggestions]

    async def send_due(self, suggestion: Suggestion) -> None:
        """Sends one claimed, due autopilot reply with a service token, unless the creator's
        quiet hours began meanwhile (or were set since): then it waits for their end."""
        with request_context(suggestion.request_id or None):
            configuration = await self.get_configuration(creator_id=suggestion.creator_id)
            quiet_hours = configuration.guardrails.quiet_hours
            if quiet_hours_end(quiet_hours, self.clock()) is not None:
                await self._postpone(suggestion, self.send_time(quiet_hours))
                return
            try:
                metadata = await self._crm.service_metadata(suggestion.creator_id)
                message = await self._crm.send(
                    metadata=metadata,
                    conversation_id=suggestion.conversation_id,
                    text=suggestion.text,
                    idempotency_key=IDEMPOTENCY_PREFIX + str(suggestion.message_id),
                    automated=True,
                )
            except DomainError as error:
                if error.reason == BUDGET_REASON:
                    await self._autopilot_refused(suggestion)
                    return
                log.warning("ai.autopilot_send_failed", reason=error.reason, detail=error.message)
                await self._retry_later(suggestion)
                return
            await self._sent(
                suggestion,
                sent_message_id=uuid.UUID(message.id),
                approved_by=AUTOPILOT,
                status="sent",
                text=suggestion.text,
                allowed=("scheduled", "cancelled"),
            )

    async def _autopilot_refused(self, suggestion: Suggestion) -> None:
        async with self._sessions() as session:
            settled: Suggestion | None = await session.scalar(
                update(Suggestion)
                .where(Suggestion.id == suggestion.id, Suggestion.status == "scheduled")
                .values(
                    status="handed_off",
                    handoff_reason="automation_budget",
                    claimed_until=None,
                    updated_at=func.now(),
                )
                .returning(Suggestion)
            )
            if settled is not None:
                await self._handoff(session, settled, "automation_budget")
            await session.commit()

    async def _postpone(self, suggestion: Suggestion, send_after: datetime) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(Suggestion)
                .where(Suggestion.id == suggestion.id, Suggestion.status == "scheduled")
                .values(send_after=send_after, claimed_until=None, updated_at=func.now())
            )
            await session.commit()

    async def _retry_later(self, suggestion: Suggestion) -> None:
        async with self._sessions() as session:
            await session.execute(
                update(Suggestion)
                .where(Suggestion.id == suggestion.id)
                .values(claimed_until=self.clock() + self.timing.send_retry)
            )
            await session.commit()

    async def _sent(
        self,
        suggestion: Suggestion,
        *,
        sent_message_id: uuid.UUID,
        approved_by: str,
        status: str,
        text: str,
        allowed: Sequence[str],
    ) -> Suggestion:
        """Records a sent reply: its status, its audit entry and its event."""
        async with self._sessions() as session:
            sent: Suggestion | None = await session.scalar(
                update(Suggestion)
                .where(Suggestion.id == suggestion.id, Suggestion.status.in_(allowed))
                .values(
                    status=status,
                    text=text,
                    sent_message_id=sent_message_id,
                    claimed_until=None,
                    updated_at=func.now(),
                )
                .returning(Suggestion)
            )
            if sent is None:  # answered already (a concurrent accept, or a retried send)
                current = await session.get(Suggestion, suggestion.id)
                return current or suggestion
            session.add(
                AuditEntry(
                    id=uuid.uuid4(),
                    creator_id=sent.creator_id,
                    suggestion_id=sent.id,
                    conversation_id=sent.conversation_id,
                    fan_id=sent.fan_id,
                    sent_message_id=sent_message_id,
                    text=text,
                    prompt_fingerprint=sent.prompt_fingerprint,
                    provider=sent.provider,
                    model=sent.model,
                    input_tokens=sent.input_tokens,
                    output_tokens=sent.output_tokens,
                    cost_micros=sent.cost_micros,
                    latency_ms=sent.latency_ms,
                    approved_by=approved_by,
                    edited=status == "edited",
                    created_at=self.clock(),
                )
            )
            await self._resolved(session, sent, status)
            await session.commit()
            return sent

    # --- the creator's decisions ------------------------------------------------------------

    async def accept(
        self,
        *,
        creator_id: uuid.UUID,
        user_id: str,
        metadata: Metadata,
        suggestion_id: str,
        text: str,
    ) -> Suggestion:
        """Sends the suggestion as the creator, as drafted or as edited."""
        suggestion = await self.get_suggestion(creator_id=creator_id, suggestion_id=suggestion_id)
        if suggestion.status not in ("suggested", "scheduled"):
            raise FailedPrecondition(
                message=f"This suggestion is {suggestion.status.replace('_', ' ')}.",
                reason="SUGGESTION_NOT_OPEN",
            )
        final = text.strip() or suggestion.text
        edited = final != suggestion.text
        message = await self._crm.send(
            metadata=metadata,
            conversation_id=suggestion.conversation_id,
            text=final,
            idempotency_key=IDEMPOTENCY_PREFIX + str(suggestion.message_id),
            automated=False,
        )
        return await self._sent(
            suggestion,
            sent_message_id=uuid.UUID(message.id),
            approved_by=user_id,
            status="edited" if edited else "accepted",
            text=final,
            allowed=("suggested", "scheduled"),
        )

    async def reject(self, *, creator_id: uuid.UUID, suggestion_id: str) -> Suggestion:
        identifier = _uuid(suggestion_id, "id")
        async with self._sessions() as session:
            rejected: Suggestion | None = await session.scalar(
                update(Suggestion)
                .where(
                    Suggestion.creator_id == creator_id,
                    Suggestion.id == identifier,
                    Suggestion.status.in_(("suggested", "scheduled")),
                )
                .values(status="rejected", updated_at=func.now())
                .returning(Suggestion)
            )
            if rejected is None:
                current = await self.get_suggestion(
                    creator_id=creator_id, suggestion_id=suggestion_id
                )
                raise FailedPrecondition(
                    message=f"This suggestion is {current.status.replace('_', ' ')}.",
                    reason="SUGGESTION_NOT_OPEN",
                )
            await self._resolved(session, rejected, "rejected")
            await session.commit()
        return rejected

    async def get_suggestion(self, *, creator_id: uuid.UUID, suggestion_id: str) -> Suggestion:
        identifier = _uuid(suggestion_id, "id")
        async with self._sessions() as session:
            suggestion = await session.get(Suggestion, identifier)
        if suggestion is None or suggestion.creator_id != creator_id:
            raise NotFound(message="No such suggestion.", reason="SUGGESTION_NOT_FOUND")
        return suggestion

    async def list_suggestions(
        self,
        *,
        creator_id: uuid.UUID,
        metadata: Metadata,
        conversation_id: str,
        statuses: Sequence[str],
        limit: int,
    ) -> list[Suggestion]:
        query = select(Suggestion).where(Suggestion.creator_id == creator_id)
        if conversation_id:
            conversation = _uuid(conversation_id, "conversation_id")
            # Another creator's conversation is not found, as in the CRM.
            await self._crm.check_conversation(metadata=metadata, conversation_id=conversation_id)
            query = query.where(Suggestion.conversation_id == conversation)
        if statuses:
            query = query.where(Suggestion.status.in_(statuses))
        async with self._sessions() as session:
            rows = await session.scalars(
                query.order_by(Suggestion.created_at.desc(), Suggestion.id).limit(limit)
            )
            return list(rows.all())

    async def list_audit(
        self, *, creator_id: uuid.UUID, metadata: Metadata, conversation_id: str, limit: int
    ) -> list[AuditEntry]:
        conversation = _uuid(conversation_id, "conversation_id")
        await self._crm.check_conversation(metadata=metadata, conversation_id=conversation_id)
        async with self._sessions() as session:
            rows = await session.scalars(
                select(AuditEntry)
                .where(
                    AuditEntry.creator_id == creator_id,
                    AuditEntry.conversation_id == conversation,
                )
                .order_by(AuditEntry.created_at.desc(), AuditEntry.id)
                .limit(limit)
            )
            return list(rows.all())

    # --- events ---------------------------------------------------------------------------------

    async def _event(
        self, session: AsyncSession, suggestion: Suggestion, subject: str, event: Any
    ) -> None:
        await record_event(
            session,
            schema=SCHEMA,
            subject=subject,
            event=event,
            aggregate_type="conversation",
            aggregate_id=str(suggestion.conversation_id),
            creator_id=str(suggestion.creator_id),
        )

    @staticmethod
    def _outbox_event(suggestion: Suggestion, subject: str, event: Any) -> OutboxEvent:
        return OutboxEvent(
            subject=subject,
            event=event,
            aggregate_type="conversation",
            aggregate_id=str(suggestion.conversation_id),
            creator_id=str(suggestion.creator_id),
            request_id=suggestion.request_id or None,
        )

    async def _handoff(self, session: AsyncSession, suggestion: Suggestion, reason: str) -> None:
        await self._event(
            session,
            suggestion,
            "ai.handoff.requested",
            events_pb2.HandoffRequested(
                creator_id=str(suggestion.creator_id),
                suggestion=convert.suggestion(suggestion),
                reason=reason,
                occurred_at=convert.timestamp(self.clock()),
            ),
        )

    async def _resolved(self, session: AsyncSession, suggestion: Suggestion, outcome: str) -> None:
        await self._event(
            session,
            suggestion,
            "ai.suggestion.resolved",
            events_pb2.SuggestionResolved(
                creator_id=str(suggestion.creator_id),
                suggestion=convert.suggestion(suggestion),
                outcome=outcome,
                occurred_at=convert.timestamp(self.clock()),
            ),
        )


def _completion(call: LlmCall) -> Completion:
    return Completion(
        text=call.text,
        provider=call.provider,
        model=call.model,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cost_micros=call.cost_micros,
        latency_ms=call.latency_ms,
    )
