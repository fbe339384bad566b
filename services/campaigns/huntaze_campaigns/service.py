"""The campaigns use cases. Only this layer commits.

From the creator (gRPC): templates, campaign drafts, scheduling (the audience resolved from the
CRM into a snapshot, exclusions applied here, the holdout and the variants drawn once from a
recorded seed, every send queued in the same transaction), pause, resume, cancel, and metrics.

From the scheduler: due sends, claimed with `FOR UPDATE SKIP LOCKED`, each made through the
CRM's `SendMessage` as an automated send under a key that names the campaign, the fan and the
step: a send made again after a crash answers the CRM's first message, never a second one. The
per-fan automation budget refusing it leaves it skipped, with the reason.

A campaign whose audience allows it goes through the platform's mass-message queue instead
(`mass_eligible`: one message, the same text for every fan, no follow-ups; exclusions are
applied here, and the queue gets the explicit fans left): up to `MASS_CHUNK` due sends at a time,
under a key named after the chunk's first fan, are recorded by the CRM against each fan's
automation budget (`RecordMassMessage`: refused fans are skipped with the reason), then the
command `campaigns.mass_message.send_requested` is published for the others, in the transaction
that moves their sends on. A crash before that commit forms the same chunk and key again, which
the CRM answers with the same messages; after it, nothing is left to send. The worker's
`onlyfans.mass_message.*` events bring back the outcome, the queue's figures (sent, viewed,
bought) and unsend.

From events (inside the consumer's transaction): delivery outcomes, replies and purchases
(which stop a fan's sequence; purchases within a campaign's window are attributed to it), and
new subscribers (enrolled in running welcome campaigns).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.campaigns.v1 import events_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze.onlyfans.v1 import events_pb2 as platform_events
from huntaze_campaigns import convert, repository
from huntaze_campaigns.crm_client import AudienceSource, CrmClient
from huntaze_campaigns.measurement import Comparison, compare, rate
from huntaze_campaigns.models import (
    SCHEMA,
    AttributedPurchase,
    Campaign,
    MassMessage,
    Recipient,
    Send,
    Template,
)
from huntaze_campaigns.repository import DueSend, PlannedFan, Results
from huntaze_campaigns.templates import render, unknown_variables, variables_of
from huntaze_kit.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    RateLimited,
)
from huntaze_kit.logging import get_logger
from huntaze_kit.outbox import record_event

log = get_logger(__name__)

Clock = Callable[[], datetime]

BUDGET_EXHAUSTED = "AUTOMATION_BUDGET_EXHAUSTED"
DEFAULT_WINDOW_HOURS = 72
DEFAULT_SILENT_DAYS = 30
DEFAULT_PAGE = 50
MAX_PAGE = 200
FINAL_STATUSES = ("completed", "cancelled")
# Fans per platform mass message (the CRM records them in one call, well within its deadline).
MASS_CHUNK = 500
# How long after it went out the platform lets a mass message be deleted (a little less than
# its 24 hours, so a command in flight still finds it deletable).
UNSEND_WINDOW = timedelta(hours=23, minutes=30)
MASS_MESSAGE_REQUESTED = "campaigns.mass_message.send_requested"
MASS_UNSEND_REQUESTED = "campaigns.mass_message.unsend_requested"
# Re-engagement without a list: expired fans (and silent ones, `silent_for_days`).
REENGAGE_STATES = (crm_pb2.SUBSCRIPTION_STATE_EXPIRED,)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Timing:
    """How long a claimed send is held before another scheduler may take it, and how long a
    send the CRM could not take (an outage) waits before it is tried again."""

    lease: timedelta = timedelta(seconds=60)
    retry: timedelta = timedelta(seconds=15)


@dataclass(frozen=True)
class Draft:
    """A campaign as the creator describes it (validated by `CampaignsService`)."""

    name: str
    kind: str
    list_id: str = ""
    silent_for_days: int = 0
    exclusions: dict[str, Any] | None = None
    variants: tuple[dict[str, Any], ...] = ()
    steps: tuple[dict[str, Any], ...] = ()
    holdout_percent: int = 0
    attribution_window_hours: int = 0
    timezone: str = ""
    template_id: str = ""


@dataclass(frozen=True)
class VariantResult:
    key: str
    recipients: int
    sent: int
    failed: int
    skipped_budget: int
    skipped_other: int
    pending: int
    stopped: int
    purchases: int
    revenue_cents: int
    converted: int
    opened: int = 0
    unsent: int = 0

    @property
    def conversion(self) -> float:
        return rate(self.converted, self.recipients)

    @property
    def revenue_per_recipient(self) -> float:
        return self.revenue_cents / self.recipients if self.recipients else 0.0


@dataclass(frozen=True)
class Metrics:
    campaign: Campaign
    total: VariantResult
    variants: list[VariantResult]
    holdout: int
    holdout_converted: int
    lift: Comparison | None
    comparisons: list[Comparison]
    computed_at: datetime


def _uuid(value: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as error:
        raise InvalidArgument.for_field(name, "is not a valid id") from error


def _not_found(what: str) -> NotFound:
    return NotFound(message=f"{what} not found.", reason=f"{what.upper()}_NOT_FOUND")


def _weights(variants: Sequence[dict[str, Any]]) -> list[int]:
    return [int(v.get("weight") or 1) for v in variants]


def _delays(campaign: Campaign) -> list[timedelta]:
    return [timedelta(minutes=int(step["delay_minutes"])) for step in campaign.steps]


def draw(fans: Sequence[tuple[uuid.UUID, str, str]], *, campaign: Campaign) -> list[PlannedFan]:
    """The holdout and each fan's variant, drawn once from the campaign's seed over the
    audience in fan id order (the same seed and audience always draw the same)."""
    rng = random.Random(campaign.seed)  # noqa: S311  (a fair draw, not a secret)
    ordered = sorted(fans, key=lambda fan: fan[0])
    held = round(len(ordered) * campaign.holdout_percent / 100)
    holdout = set(rng.sample(range(len(ordered)), held))
    keys = [str(v["key"]) for v in campaign.variants]
    chosen = rng.choices(keys, weights=_weights(campaign.variants), k=len(ordered))
    return [
        PlannedFan(
            fan_id=fan_id,
            platform_fan_id=platform_fan_id,
            display_name=name,
            variant="" if index in holdout else chosen[index],
            holdout=index in holdout,
        )
        for index, (fan_id, platform_fan_id, name) in enumerate(ordered)
    ]


def _draw_one(campaign: Campaign, fan_id: uuid.UUID) -> tuple[bool, str]:
    """A newcomer's holdout and variant, drawn from the campaign's seed and the fan's id."""
    rng = random.Random(f"{campaign.seed}:{fan_id}")  # noqa: S311
    holdout = rng.random() * 100 < campaign.holdout_percent
    keys = [str(v["key"]) for v in campaign.variants]
    variant = rng.choices(keys, weights=_weights(campaign.variants), k=1)[0]
    return holdout, "" if holdout else variant


def _page_token(campaign: Campaign) -> str:
    raw = json.dumps([campaign.created_at.isoformat(), str(campaign.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _after(token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    try:
        created, identifier = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(created), uuid.UUID(identifier)
    except (ValueError, TypeError, binascii.Error) as error:
        raise InvalidArgument.for_field("page.page_token", "is not valid") from error


class CampaignsService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        crm: CrmClient,
        timing: Timing | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._crm = crm
        self.timing = timing or Timing()
        self.clock = clock

    # --- templates -----------------------------------------------------------------------------

    async def list_templates(
        self, *, creator_id: uuid.UUID, niche: str | None
    ) -> list[tuple[Template, Results]]:
        async with self._sessions() as session:
            await repository.seed_templates(session, creator_id=creator_id)
            await session.commit()
            query = select(Template).where(Template.creator_id == creator_id)
            if niche:
                query = query.where(Template.niche == niche)
            rows = await session.scalars(query.order_by(Template.niche, Template.name, Template.id))
            templates = list(rows.all())
            results = await repository.template_results(session, creator_id=creator_id)
        return [(t, results.get(t.id, Results())) for t in templates]

    async def update_template(
        self,
        *,
        creator_id: uuid.UUID,
        template_id: str,
        name: str | None,
        text: str | None,
        price_cents: int | None,
    ) -> tuple[Template, Results]:
        identifier = _uuid(template_id, "template_id")
        if text is not None and (unknown := unknown_variables(text)):
            raise InvalidArgument.for_field("text", f"unknown variables: {', '.join(unknown)}")
        values: dict[str, Any] = {
            key: value
            for key, value in (("name", name), ("text", text), ("price_cents", price_cents))
            if value is not None
        }
        async with self._sessions() as session:
            updated = await session.scalar(
                update(Template)
                .where(Template.creator_id == creator_id, Template.id == identifier)
                .values(updated_at=func.now(), **values)
                .returning(Template)
            )
            if updated is None:
                raise _not_found("Template")
            await session.commit()
            results = await repository.template_results(session, creator_id=creator_id)
        return updated, results.get(updated.id, Results())

    # --- campaigns -----------------------------------------------------------------------------

    def _checked(self, draft: Draft, template: Template | None) -> dict[str, Any]:
        """The campaign's columns from a draft, or INVALID_ARGUMENT with every violation."""
        violations: list[FieldViolation] = []
        if draft.kind not in ("one_off", "welcome", "reengagement", "sequence"):
            violations.append(FieldViolation("kind", "is required"))
        list_id = _audience_list(draft, violations)
        variants = [dict(v) for v in draft.variants]
        if not variants and template is not None:
            variants = [{"key": "A", "text": template.text, "price_cents": template.price_cents}]
        _check_messages(draft, variants, violations)
        timezone = draft.timezone or "UTC"
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            violations.append(FieldViolation("timezone", "is not an IANA time zone"))
        exclusions = dict(draft.exclusions or {})
        for index, value in enumerate(exclusions.get("bought_in_campaign_ids", [])):
            try:
                uuid.UUID(value)
            except ValueError:
                violations.append(
                    FieldViolation(
                        f"exclusions.bought_in_campaign_ids[{index}]", "is not a valid id"
                    )
                )
        if violations:
            raise InvalidArgument(message="The campaign is not valid.", violations=violations)
        return {
            "name": draft.name,
            "kind": draft.kind,
            "list_id": list_id,
            "silent_for_days": draft.silent_for_days,
            "exclusions": exclusions,
            "variants": variants,
            "steps": [dict(s) for s in draft.steps],
            "holdout_percent": draft.holdout_percent,
            "attribution_window_hours": draft.attribution_window_hours or DEFAULT_WINDOW_HOURS,
            "timezone": timezone,
            "template_id": template.id if template is not None else None,
        }

    async def _template(
        self, session: AsyncSession, creator_id: uuid.UUID, template_id: str
    ) -> Template | None:
        if not template_id:
            return None
        template = await session.get(Template, _uuid(template_id, "template_id"))
        if template is None or template.creator_id != creator_id:
            raise _not_found("Template")
        return template

    async def _check_list(self, creator_id: uuid.UUID, list_id: uuid.UUID | None) -> None:
        """NOT_FOUND unless the list is the creator's (asked of the CRM before anything is
        written: another creator's list is refused here, not only when scheduling)."""
        if list_id is None:
            return
        try:
            await self._crm.fan_list(creator_id=creator_id, list_id=list_id)
        except NotFound as missing:
            raise NotFound(message="List not found.", reason="LIST_NOT_FOUND") from missing

    async def create_campaign(self, *, creator_id: uuid.UUID, draft: Draft) -> Campaign:
        async with self._sessions() as session:
            template = await self._template(session, creator_id, draft.template_id)
            columns = self._checked(draft, template)
        await self._check_list(creator_id, columns["list_id"])
        async with self._sessions() as session:
            campaign = Campaign(
                id=uuid.uuid4(),
                creator_id=creator_id,
                status="draft",
                seed=random.SystemRandom().getrandbits(62),
                **columns,
            )
            session.add(campaign)
            await session.commit()
            await session.refresh(campaign)
        return campaign

    async def _owned(
        self, session: AsyncSession, creator_id: uuid.UUID, campaign_id: str, *, lock: bool
    ) -> Campaign:
        identifier = _uuid(campaign_id, "campaign_id")
        query = select(Campaign).where(Campaign.id == identifier, Campaign.creator_id == creator_id)
        campaign = await session.scalar(query.with_for_update() if lock else query)
        if campaign is None:
            raise _not_found("Campaign")
        return campaign

    async def get_campaign(self, *, creator_id: uuid.UUID, campaign_id: str) -> Campaign:
        async with self._sessions() as session:
            return await self._owned(session, creator_id, campaign_id, lock=False)

    async def list_campaigns(
        self, *, creator_id: uuid.UUID, status: str | None, page_size: int, page_token: str
    ) -> tuple[list[Campaign], str]:
        if page_size > MAX_PAGE or page_size < 0:
            raise InvalidArgument.for_field("page.page_size", f"must be at most {MAX_PAGE}")
        size = page_size or DEFAULT_PAGE
        query = select(Campaign).where(Campaign.creator_id == creator_id)
        if status:
            query = query.where(Campaign.status == status)
        after = _after(page_token)
        if after is not None:
            query = query.where(
                (Campaign.created_at < after[0])
                | ((Campaign.created_at == after[0]) & (Campaign.id < after[1]))
            )
        async with self._sessions() as session:
            rows = list(
                (
                    await session.scalars(
                        query.order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(
                            size + 1
                        )
                    )
                ).all()
            )
        more = len(rows) > size
        rows = rows[:size]
        return rows, _page_token(rows[-1]) if more else ""

    async def update_campaign(
        self,
        *,
        creator_id: uuid.UUID,
        campaign_id: str,
        name: str | None,
        list_id: str | None,
        holdout_percent: int | None,
        timezone: str | None,
        variants: Sequence[dict[str, Any]] | None,
    ) -> Campaign:
        async with self._sessions() as session:
            campaign = await self._owned(session, creator_id, campaign_id, lock=True)
            if campaign.status != "draft":
                raise FailedPrecondition(
                    message="Only a draft can be edited.", reason="CAMPAIGN_NOT_DRAFT"
                )
            template = (
                await session.get(Template, campaign.template_id) if campaign.template_id else None
            )
            draft = Draft(
                name=name if name is not None else campaign.name,
                kind=campaign.kind,
                list_id=(
                    list_id
                    if list_id is not None
                    else (str(campaign.list_id) if campaign.list_id else "")
                ),
                silent_for_days=campaign.silent_for_days,
                exclusions=campaign.exclusions,
                variants=tuple(variants if variants else campaign.variants),
                steps=tuple(campaign.steps),
                holdout_percent=(
                    holdout_percent if holdout_percent is not None else campaign.holdout_percent
                ),
                attribution_window_hours=campaign.attribution_window_hours,
                timezone=timezone if timezone is not None else campaign.timezone,
            )
            columns = self._checked(draft, template)
            if list_id is not None and columns["list_id"] != campaign.list_id:
                await self._check_list(creator_id, columns["list_id"])
            for column, value in columns.items():
                setattr(campaign, column, value)
            campaign.updated_at = self.clock()
            await session.commit()
            await session.refresh(campaign)
        return campaign

    async def delete_campaign(self, *, creator_id: uuid.UUID, campaign_id: str) -> None:
        async with self._sessions() as session:
            campaign = await self._owned(session, creator_id, campaign_id, lock=True)
            if campaign.status not in ("draft", *FINAL_STATUSES):
                raise FailedPrecondition(
                    message="Cancel the campaign before deleting it.",
                    reason="CAMPAIGN_IN_PROGRESS",
                )
            await session.delete(campaign)
            await session.commit()

    # --- scheduling ----------------------------------------------------------------------------

    def _send_time(self, campaign: Campaign, send_at: str) -> datetime:
        now = self.clock()
        if not send_at:
            return now
        try:
            moment = datetime.fromisoformat(send_at)
        except ValueError as error:
            raise InvalidArgument.for_field(
                "send_at", "is not a date and time (e.g. 2026-12-01T18:00)"
            ) from error
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(campaign.timezone))
        return max(moment.astimezone(UTC), now)

    async def schedule(self, *, creator_id: uuid.UUID, campaign_id: str, send_at: str) -> Campaign:
        """Snapshots the audience, draws the holdout and variants, and queues every send."""
        async with self._sessions() as session:
            campaign = await self._owned(session, creator_id, campaign_id, lock=False)
        if campaign.status != "draft":
            raise FailedPrecondition(
                message=f"This campaign is {campaign.status} already.",
                reason="CAMPAIGN_NOT_DRAFT",
            )
        start = self._send_time(campaign, send_at)
        planned: list[PlannedFan] = []
        excluded = 0
        if campaign.kind != "welcome":
            fans, excluded = await self._audience(campaign)
            planned = draw(fans, campaign=campaign)
        async with self._sessions() as session:
            # Locked and checked again: a concurrent schedule or cancel wins once.
            current = await self._owned(session, creator_id, campaign_id, lock=True)
            if current.status != "draft":
                raise FailedPrecondition(
                    message=f"This campaign is {current.status} already.",
                    reason="CAMPAIGN_NOT_DRAFT",
                )
            if planned:
                await repository.store_snapshot(
                    session,
                    campaign=current,
                    fans=planned,
                    step_delays=_delays(current),
                    start=start,
                )
            current.status = "scheduled"
            current.mass_message = mass_eligible(current)
            current.send_at = start
            current.audience_count = len(planned)
            current.holdout_count = sum(1 for fan in planned if fan.holdout)
            current.excluded_count = excluded
            current.updated_at = self.clock()
            if campaign.kind != "welcome" and not planned:
                current.status = "completed"
                current.completed_at = self.clock()
            await self._changed(session, current, "scheduled")
            await session.commit()
            await session.refresh(current)
        log.info(
            "campaigns.scheduled",
            campaign_id=str(current.id),
            audience=current.audience_count,
            holdout=current.holdout_count,
            excluded=excluded,
        )
        return current

    async def _audience(self, campaign: Campaign) -> tuple[list[tuple[uuid.UUID, str, str]], int]:
        """The fans to reach (id, platform id, name) after the exclusions, and how many these
        left out. Exclusions are applied here: the platform is never trusted to apply them."""
        exclusions = campaign.exclusions
        automated_hours = int(exclusions.get("automated_within_hours") or 0)
        human_hours = int(exclusions.get("human_within_hours") or 0)
        now = self.clock()
        async with self._sessions() as session:
            buyers = await repository.bought_in(
                session,
                creator_id=campaign.creator_id,
                campaign_ids=[uuid.UUID(c) for c in exclusions.get("bought_in_campaign_ids", [])],
            )
        source = AudienceSource(
            list_id=campaign.list_id,
            subscription_states=REENGAGE_STATES if campaign.list_id is None else (),
            silent_for_days=(
                (campaign.silent_for_days or DEFAULT_SILENT_DAYS) if campaign.list_id is None else 0
            ),
            recent_sends_within_hours=max(automated_hours, human_hours),
        )
        kept: list[tuple[uuid.UUID, str, str]] = []
        excluded = 0
        async for page in self._crm.audience(creator_id=campaign.creator_id, source=source):
            for fan in page:
                fan_id = uuid.UUID(fan.fan_id)
                if (
                    not fan.platform_fan_id
                    or fan_id in buyers
                    or _within(fan, "last_automated_at", automated_hours, now)
                    or _within(fan, "last_human_at", human_hours, now)
                ):
                    excluded += 1
                    continue
                kept.append((fan_id, fan.platform_fan_id, fan.display_name))
        return kept, excluded

    async def _transition(
        self,
        *,
        creator_id: uuid.UUID,
        campaign_id: str,
        allowed: Sequence[str],
        to: str | Callable[[Campaign], str],
        event: str,
    ) -> Campaign:
        async with self._sessions() as session:
            campaign = await self._owned(session, creator_id, campaign_id, lock=True)
            if campaign.status not in allowed:
                raise FailedPrecondition(
                    message=f"This campaign is {campaign.status}.",
                    reason=f"CAMPAIGN_{campaign.status.upper()}",
                )
            campaign.status = to if isinstance(to, str) else to(campaign)
            campaign.updated_at = self.clock()
            if campaign.status == "cancelled":
                campaign.completed_at = self.clock()
                await session.execute(
                    update(Send)
                    .where(Send.campaign_id == campaign.id, Send.state == "queued")
                    .values(state="cancelled", reason="campaign_cancelled", claimed_until=None)
                )
            await self._changed(session, campaign, event)
            await session.commit()
            await session.refresh(campaign)
        return campaign

    async def pause(self, *, creator_id: uuid.UUID, campaign_id: str) -> Campaign:
        return await self._transition(
            creator_id=creator_id,
            campaign_id=campaign_id,
            allowed=("scheduled", "running"),
            to="paused",
            event="paused",
        )

    async def resume(self, *, creator_id: uuid.UUID, campaign_id: str) -> Campaign:
        now = self.clock()
        return await self._transition(
            creator_id=creator_id,
            campaign_id=campaign_id,
            allowed=("paused",),
            to=lambda c: "running" if c.send_at is not None and c.send_at <= now else "scheduled",
            event="resumed",
        )

    async def cancel(self, *, creator_id: uuid.UUID, campaign_id: str) -> Campaign:
        return await self._transition(
            creator_id=creator_id,
            campaign_id=campaign_id,
            allowed=("draft", "scheduled", "running", "paused"),
            to="cancelled",
            event="cancelled",
        )

    # --- the scheduler -------------------------------------------------------------------------

    async def claim_due(self, *, limit: int) -> list[DueSend]:
        now = self.clock()
        async with self._sessions() as session:
            claimed = await repository.claim_due(
                session, now=now, until=now + self.timing.lease, limit=limit
            )
            started = {send.campaign_id for send in claimed}
            if started:
                await session.execute(
                    update(Campaign)
                    .where(Campaign.id.in_(started), Campaign.status == "scheduled")
                    .values(status="running", updated_at=func.now())
                )
            await session.commit()
        return claimed

    async def dispatch(self, send: DueSend) -> None:
        """Makes one claimed send through the CRM, and records what came of it."""
        async with self._sessions() as session:
            campaign = await session.get(Campaign, send.campaign_id)
            recipient = await session.get(Recipient, (send.campaign_id, send.fan_id))
        if campaign is None or recipient is None:
            return  # deleted meanwhile
        if campaign.status not in ("scheduled", "running"):
            await self._record(send, "queued", claimed_until=None)  # paused: wait
            return
        if recipient.stopped_at is not None:
            await self._record(send, "stopped", reason=recipient.stop_reason)
            return
        if campaign.mass_message and send.step == 0:
            await self._dispatch_mass(campaign.id)
            return
        text, price, media = self._message(campaign, send)
        try:
            message = await self._crm.send(
                creator_id=send.creator_id,
                fan_id=send.fan_id,
                text=render(text, display_name=recipient.display_name),
                price_cents=price,
                platform_media_ids=media,
                idempotency_key=send.idempotency_key,
            )
        except RateLimited as refused:
            reason = "automation_budget" if refused.reason == BUDGET_EXHAUSTED else "rate_limited"
            await self._record(send, "skipped", reason=reason)
            return
        except DomainError as error:
            if error.status_code.name in ("NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"):
                await self._record(send, "skipped", reason=(error.reason or "refused").lower())
                return
            log.warning("campaigns.send_deferred", reason=error.reason, detail=error.message)
            await self._record(send, "queued", claimed_until=self.clock() + self.timing.retry)
            return
        values: dict[str, Any] = {
            "crm_message_id": uuid.UUID(message.id),
            "requested_at": self.clock(),
        }
        state = "requested"
        if message.delivery_status == crm_pb2.DELIVERY_STATUS_SENT:
            state = "sent"  # made before a crash, and delivered since
            values["platform_message_id"] = message.platform_message_id
            # When the platform sent it, as for the sends settled by their event: purchases
            # are matched to the copy the fan had before buying.
            values["sent_at"] = convert.from_timestamp(message.sent_at) or self.clock()
        await self._record(send, state, **values)

    async def _dispatch_mass(self, campaign_id: uuid.UUID) -> None:
        """Sends the campaign's due first messages through the platform's queue, a chunk at a
        time (see the module's notes): each chunk's sends, the CRM's record of them and the
        command move on together, once."""
        while True:
            async with self._sessions() as session:
                campaign = await session.get(Campaign, campaign_id, with_for_update=True)
                if campaign is None or campaign.status not in ("scheduled", "running"):
                    return
                chunk = list(
                    (
                        await session.scalars(
                            select(Send)
                            .where(
                                Send.campaign_id == campaign_id,
                                Send.step == 0,
                                Send.state == "queued",
                                Send.due_at <= self.clock(),
                            )
                            .order_by(Send.fan_id)
                            .limit(MASS_CHUNK)
                            .with_for_update()
                        )
                    ).all()
                )
                if not chunk:
                    return
                key = f"{repository.KEY_PREFIX}{campaign_id}:mass:{chunk[0].fan_id}"
                text, price, media = self._message(campaign, DueSend.of(chunk[0]))
                recorded = await self._crm.record_mass_message(
                    creator_id=campaign.creator_id,
                    fan_ids=[send.fan_id for send in chunk],
                    text=text,
                    price_cents=price,
                    platform_media_ids=media,
                    idempotency_key=key,
                )
                now = self.clock()
                platform_fan_ids: list[str] = []
                message_ids: list[str] = []
                requested: list[uuid.UUID] = []
                skipped: dict[uuid.UUID, str] = {}
                for send, recipient in zip(chunk, recorded, strict=True):
                    if recipient.message_id:
                        requested.append(send.fan_id)
                        message_ids.append(recipient.message_id)
                        platform_fan_ids.append(recipient.platform_fan_id)
                    else:
                        skipped[send.fan_id] = (
                            "automation_budget"
                            if recipient.refused_reason == BUDGET_EXHAUSTED
                            else recipient.refused_reason.lower() or "refused"
                        )
                # Two statements for the chunk (the tallies' triggers run per statement).
                await repository.request_mass_sends(
                    session,
                    campaign_id=campaign_id,
                    fan_ids=requested,
                    crm_message_ids=[uuid.UUID(m) for m in message_ids],
                    mass_key=key,
                    now=now,
                )
                await repository.skip_sends(session, campaign_id=campaign_id, reasons=skipped)
                if platform_fan_ids:
                    await session.execute(
                        insert(MassMessage)
                        .values(
                            idempotency_key=key,
                            campaign_id=campaign_id,
                            creator_id=campaign.creator_id,
                            recipients=len(platform_fan_ids),
                            requested_at=now,
                        )
                        .on_conflict_do_nothing()
                    )
                    await record_event(
                        session,
                        schema=SCHEMA,
                        subject=MASS_MESSAGE_REQUESTED,
                        event=events_pb2.MassMessageSendRequested(
                            creator_id=str(campaign.creator_id),
                            idempotency_key=key,
                            text=text,
                            platform_fan_ids=platform_fan_ids,
                            price_cents=price,
                            platform_media_ids=media,
                            occurred_at=convert.timestamp(now),
                            campaign_id=str(campaign_id),
                            crm_message_ids=message_ids,
                        ),
                        aggregate_type="mass_message",
                        aggregate_id=key,
                        creator_id=str(campaign.creator_id),
                    )
                await session.flush()
                done = await repository.complete_if_done(session, campaign_id=campaign_id, now=now)
                if done is not None:
                    await self._changed(session, done, "completed")
                await session.commit()
            log.info(
                "campaigns.mass_message_requested",
                campaign_id=str(campaign_id),
                recipients=len(platform_fan_ids),
                skipped=len(chunk) - len(platform_fan_ids),
            )

    def _message(self, campaign: Campaign, send: DueSend) -> tuple[str, int, list[str]]:
        """The text, price and media of a send: its variant's, or its follow-up's."""
        if send.step == 0:
            chosen = next(
                (v for v in campaign.variants if v["key"] == send.variant), campaign.variants[0]
            )
        else:
            chosen = campaign.steps[send.step - 1]
        return (
            str(chosen["text"]),
            int(chosen.get("price_cents") or 0),
            [str(m) for m in chosen.get("platform_media_ids", [])],
        )

    async def _record(self, send: DueSend, state: str, **values: Any) -> None:
        async with self._sessions() as session:
            if state == "queued":
                await session.execute(
                    update(Send).where(repository.send_key(send)).values(**values)
                )
            else:
                await repository.settle_send(
                    session, send=send, allowed=("queued",), state=state, **values
                )
                done = await repository.complete_if_done(
                    session, campaign_id=send.campaign_id, now=self.clock()
                )
                if done is not None:
                    await self._changed(session, done, "completed")
            await session.commit()

    # --- from events (the consumer's session; no commit) ---------------------------------------

    async def delivered(
        self, session: AsyncSession, *, message: crm_pb2.Message, failed_reason: str | None
    ) -> None:
        """The platform's answer to one of our sends (`crm.message.sent` / `.failed`)."""
        key = repository.parse_key(message.idempotency_key)
        if key is None:
            return
        campaign_id, fan_id, step = key
        send = DueSend(campaign_id, fan_id, step, uuid.UUID(int=0), "")
        values: dict[str, Any] = {"crm_message_id": uuid.UUID(message.id)}
        if failed_reason is None:
            values |= {
                "state": "sent",
                "platform_message_id": message.platform_message_id,
                "sent_at": convert.from_timestamp(message.sent_at) or self.clock(),
            }
            allowed: tuple[str, ...] = ("queued", "requested", "failed")
        else:
            values |= {"state": "failed", "reason": failed_reason[:500]}
            allowed = ("queued", "requested")
        await repository.settle_send(session, send=send, allowed=allowed, **values)

    async def stop_sequences(
        self,
        session: AsyncSession,
        *,
        creator_id: uuid.UUID,
        fan_id: uuid.UUID,
        at: datetime,
        reason: str,
    ) -> None:
        """The fan replied or bought: their sequences send no more follow-ups."""
        stopped = await session.scalars(
            update(Recipient)
            .where(
                Recipient.creator_id == creator_id,
                Recipient.fan_id == fan_id,
                Recipient.stopped_at.is_(None),
                Recipient.enrolled_at <= at,
                ~Recipient.holdout,
                Recipient.campaign_id.in_(
                    select(Campaign.id).where(
                        Campaign.creator_id == creator_id, Campaign.kind == "sequence"
                    )
                ),
            )
            .values(stopped_at=at, stop_reason=reason)
            .returning(Recipient.campaign_id)
        )
        campaigns: list[uuid.UUID] = list(stopped.all())
        if campaigns:
            await session.execute(
                update(Send)
                .where(
                    Send.campaign_id.in_(campaigns),
                    Send.fan_id == fan_id,
                    Send.state == "queued",
                    Send.step > 0,
                )
                .values(state="stopped", reason=reason, claimed_until=None)
            )
            for campaign_id in campaigns:
                done = await repository.complete_if_done(
                    session, campaign_id=campaign_id, now=self.clock()
                )
                if done is not None:
                    await self._changed(session, done, "completed")

    async def purchase_recorded(
        self, session: AsyncSession, *, event: crm_events.PurchaseRecorded
    ) -> None:
        """Attributes the purchase to every campaign whose window it falls in (the fan was
        sent to, or held out), then stops the fan's sequences."""
        purchase = event.purchase
        creator_id = _uuid(event.creator_id, "creator_id")
        fan_id = _uuid(purchase.fan_id, "purchase.fan_id")
        at = convert.from_timestamp(purchase.occurred_at) or self.clock()
        window = func.make_interval(0, 0, 0, 0, Campaign.attribution_window_hours)
        rows = await session.execute(
            select(Recipient.campaign_id)
            .join(Campaign, Campaign.id == Recipient.campaign_id)
            .where(
                Recipient.creator_id == creator_id,
                Recipient.fan_id == fan_id,
                Recipient.enrolled_at <= at,
                Recipient.enrolled_at + window > at,
            )
        )
        campaigns = [row[0] for row in rows.all()]
        if campaigns:
            sold_by = await self._sold_by(
                session, campaigns=campaigns, fan_id=fan_id, purchase=purchase, at=at
            )
            await session.execute(
                insert(AttributedPurchase)
                .values(
                    [
                        {
                            "campaign_id": campaign_id,
                            "purchase_id": _uuid(purchase.id, "purchase.id"),
                            "creator_id": creator_id,
                            "fan_id": fan_id,
                            "amount_cents": purchase.amount_cents,
                            "crm_message_id": (
                                uuid.UUID(purchase.message_id) if purchase.message_id else None
                            ),
                            "from_message": campaign_id in sold_by,
                            "occurred_at": at,
                        }
                        for campaign_id in campaigns
                    ]
                )
                .on_conflict_do_nothing()
            )
            # The fan converted (for the lift, whatever they bought): counted once per campaign.
            await session.execute(
                update(Recipient)
                .where(
                    Recipient.campaign_id.in_(campaigns),
                    Recipient.fan_id == fan_id,
                    Recipient.converted_at.is_(None),
                )
                .values(converted_at=at)
            )
        await self.stop_sequences(
            session, creator_id=creator_id, fan_id=fan_id, at=at, reason="bought"
        )

    async def _sold_by(
        self,
        session: AsyncSession,
        *,
        campaigns: Sequence[uuid.UUID],
        fan_id: uuid.UUID,
        purchase: crm_pb2.Purchase,
        at: datetime,
    ) -> set[uuid.UUID]:
        """The campaign whose message the purchase bought: the one the CRM linked it to; else,
        for an unlock the platform reports without its message (its transactions name none),
        the campaign whose latest copy sent to the fan before it had the price paid."""
        if purchase.message_id:
            found = await session.scalars(
                select(Send.campaign_id).where(
                    Send.campaign_id.in_(campaigns),
                    Send.fan_id == fan_id,
                    Send.crm_message_id == uuid.UUID(purchase.message_id),
                )
            )
            return set(found.all())
        if purchase.kind != crm_pb2.PURCHASE_KIND_PPV_UNLOCK:
            return set()
        sent = (
            await session.execute(
                select(Send, Campaign)
                .join(Campaign, Campaign.id == Send.campaign_id)
                .where(
                    Send.campaign_id.in_(campaigns),
                    Send.fan_id == fan_id,
                    Send.state == "sent",
                    Send.sent_at <= at,
                )
                .order_by(Send.sent_at.desc())
            )
        ).all()
        for send, campaign in sent:
            due = DueSend(send.campaign_id, send.fan_id, send.step, send.creator_id, send.variant)
            if self._message(campaign, due)[1] == purchase.amount_cents:
                return {send.campaign_id}
        return set()

    async def fan_subscribed(
        self, session: AsyncSession, *, creator_id: uuid.UUID, fan: crm_pb2.Fan
    ) -> None:
        """A new subscriber joins the creator's running welcome campaigns (once each)."""
        if fan.subscription_state != crm_pb2.SUBSCRIPTION_STATE_ACTIVE or not fan.platform_fan_id:
            return
        subscribed = convert.from_timestamp(fan.subscribed_at) or self.clock()
        now = self.clock()
        welcomes = await session.scalars(
            select(Campaign).where(
                Campaign.creator_id == creator_id,
                Campaign.kind == "welcome",
                Campaign.status.in_(("scheduled", "running")),
                Campaign.send_at <= subscribed,
                Campaign.send_at <= now,
            )
        )
        for campaign in welcomes.all():
            fan_id = _uuid(fan.id, "fan.id")
            holdout, variant = _draw_one(campaign, fan_id)
            await repository.enroll(
                session,
                campaign=campaign,
                fan=PlannedFan(fan_id, fan.platform_fan_id, fan.display_name, variant, holdout),
                step_delays=_delays(campaign),
                start=now,
            )
            if campaign.status == "scheduled":
                campaign.status = "running"

    async def unsend(self, *, creator_id: uuid.UUID, campaign_id: str) -> Campaign:
        """Asks the worker to delete each of the campaign's mass messages the platform still
        allows deleting; NOTHING_TO_UNSEND when there is none."""
        now = self.clock()
        async with self._sessions() as session:
            campaign = await self._owned(session, creator_id, campaign_id, lock=True)
            deletable = list(
                (
                    await session.scalars(
                        select(MassMessage)
                        .where(
                            MassMessage.campaign_id == campaign.id,
                            MassMessage.state == "queued",
                            MassMessage.queued_at > now - UNSEND_WINDOW,
                        )
                        .order_by(MassMessage.idempotency_key)
                        .with_for_update()
                    )
                ).all()
            )
            if not deletable:
                raise FailedPrecondition(
                    message="Nothing of this campaign can be unsent: only mass messages the "
                    "platform queued in the last 24 hours can.",
                    reason="NOTHING_TO_UNSEND",
                )
            # The CRM's messages each one carried, so the command names them (the worker's
            # outcome passes them on to the CRM, which marks them unsent).
            carried: dict[str, list[str]] = {mass.idempotency_key: [] for mass in deletable}
            for mass_key, message_id in await session.execute(
                select(Send.mass_key, Send.crm_message_id)
                .where(
                    Send.campaign_id == campaign.id,
                    Send.mass_key.in_(list(carried)),
                    Send.state == "sent",
                    Send.crm_message_id.is_not(None),
                )
                .order_by(Send.fan_id)
            ):
                carried[mass_key].append(str(message_id))
            for mass in deletable:
                mass.state = "unsend_requested"
                await record_event(
                    session,
                    schema=SCHEMA,
                    subject=MASS_UNSEND_REQUESTED,
                    event=events_pb2.MassMessageUnsendRequested(
                        creator_id=str(creator_id),
                        idempotency_key=mass.idempotency_key,
                        platform_queue_id=mass.platform_queue_id,
                        campaign_id=str(campaign.id),
                        occurred_at=convert.timestamp(now),
                        crm_message_ids=carried[mass.idempotency_key],
                    ),
                    aggregate_type="mass_message",
                    aggregate_id=mass.idempotency_key,
                    creator_id=str(creator_id),
                )
            campaign.updated_at = now
            await session.commit()
            await session.refresh(campaign)
        return campaign

    # --- from the platform worker (the consumer's session; no commit) ---------------------------

    async def _mass(self, session: AsyncSession, key: str, creator: str) -> MassMessage | None:
        """Our mass message of this key and creator (locked); None for anyone else's."""
        mass = await session.get(MassMessage, key, with_for_update=True)
        if mass is None or str(mass.creator_id) != creator:
            return None
        return mass

    async def mass_queued(
        self, session: AsyncSession, *, event: platform_events.MassMessageQueued
    ) -> None:
        """The platform took the mass message: its sends are sent."""
        mass = await self._mass(session, event.idempotency_key, event.creator_id)
        if mass is None or mass.state != "requested":
            return
        at = convert.from_timestamp(event.occurred_at) or self.clock()
        mass.state, mass.platform_queue_id, mass.queued_at = "queued", event.platform_queue_id, at
        await session.execute(
            update(Send)
            .where(Send.mass_key == mass.idempotency_key, Send.state == "requested")
            .values(
                state="sent",
                sent_at=at,
                platform_message_id=f"queue:{event.platform_queue_id}",
            )
        )

    async def mass_failed(
        self, session: AsyncSession, *, event: platform_events.MassMessageFailed
    ) -> None:
        mass = await self._mass(session, event.idempotency_key, event.creator_id)
        if mass is None or mass.state != "requested":
            return
        reason = (event.reason or "failed")[:500]
        mass.state, mass.reason = "failed", reason
        await session.execute(
            update(Send)
            .where(Send.mass_key == mass.idempotency_key, Send.state == "requested")
            .values(state="failed", reason=reason)
        )

    async def mass_stats(
        self, session: AsyncSession, *, event: platform_events.MassMessageStats
    ) -> None:
        """The queue's figures as the platform reports them now (they only grow)."""
        mass = await self._mass(session, event.idempotency_key, event.creator_id)
        if mass is None:
            return
        mass.sent = max(mass.sent, event.sent)
        mass.viewed = max(mass.viewed, event.viewed)
        mass.purchased = max(mass.purchased, event.purchased)

    async def mass_unsent(
        self,
        session: AsyncSession,
        *,
        event: platform_events.MassMessageUnsent,
        failed: bool,
    ) -> None:
        mass = await self._mass(session, event.idempotency_key, event.creator_id)
        if mass is None or mass.state != "unsend_requested":
            return
        now = convert.from_timestamp(event.occurred_at) or self.clock()
        if failed:
            mass.state, mass.reason = "unsend_failed", (event.reason or "failed")[:500]
            return
        mass.state, mass.unsent_at = "unsent", now
        await session.execute(
            update(Send)
            .where(Send.mass_key == mass.idempotency_key, Send.state == "sent")
            .values(state="unsent", reason="unsent")
        )
        await session.execute(
            update(Campaign)
            .where(Campaign.id == mass.campaign_id, Campaign.unsent_at.is_(None))
            .values(unsent_at=now, updated_at=func.now())
        )

    # --- metrics -------------------------------------------------------------------------------

    async def metrics(self, *, creator_id: uuid.UUID, campaign_id: str) -> Metrics:
        async with self._sessions() as session:
            campaign = await self._owned(session, creator_id, campaign_id, lock=False)
            counts = await repository.campaign_counts(session, campaign_id=campaign.id)
            # A mass message has one variant: the queue's views are its.
            opened = int(
                await session.scalar(
                    select(func.coalesce(func.sum(MassMessage.viewed), 0)).where(
                        MassMessage.campaign_id == campaign.id
                    )
                )
                or 0
            )
        keys = [str(v["key"]) for v in campaign.variants]
        keys += sorted({variant for variant, holdout in counts if not holdout} - {*keys, ""})
        variants = [
            _variant_result(key, counts.get((key, False)), opened=opened if index == 0 else 0)
            for index, key in enumerate(keys)
        ]
        holdout = counts.get(("", True))
        total = _sum_results(variants)
        # In a thread: the statistics library may still be loading (it takes seconds).
        lift, comparisons = await asyncio.to_thread(_comparisons, total, variants, holdout)
        return Metrics(
            campaign=campaign,
            total=total,
            variants=variants,
            holdout=holdout.recipients if holdout else 0,
            holdout_converted=holdout.converted if holdout else 0,
            lift=lift,
            comparisons=comparisons,
            computed_at=self.clock(),
        )

    # --- events --------------------------------------------------------------------------------

    async def _changed(self, session: AsyncSession, campaign: Campaign, event: str) -> None:
        await session.flush()
        await record_event(
            session,
            schema=SCHEMA,
            subject=f"campaigns.campaign.{event}",
            event=events_pb2.CampaignChanged(
                creator_id=str(campaign.creator_id),
                campaign=convert.campaign(campaign),
                occurred_at=convert.timestamp(self.clock()),
            ),
            aggregate_type="campaign",
            aggregate_id=str(campaign.id),
            creator_id=str(campaign.creator_id),
        )


def _audience_list(draft: Draft, violations: list[FieldViolation]) -> uuid.UUID | None:
    if draft.kind == "welcome" and draft.list_id:
        violations.append(
            FieldViolation("list_id", "a welcome campaign reaches new subscribers, not a list")
        )
    if not draft.list_id:
        if draft.kind in ("one_off", "sequence"):
            violations.append(FieldViolation("list_id", "is required for this kind of campaign"))
        return None
    try:
        return uuid.UUID(draft.list_id)
    except ValueError:
        violations.append(FieldViolation("list_id", "is not a valid id"))
        return None


def _check_messages(
    draft: Draft, variants: Sequence[dict[str, Any]], violations: list[FieldViolation]
) -> None:
    if not variants:
        violations.append(FieldViolation("variants", "needs at least one (or a template)"))
    keys = [str(v.get("key", "")) for v in variants]
    if len(set(keys)) != len(keys):
        violations.append(FieldViolation("variants", "keys must differ"))
    if draft.steps and draft.kind != "sequence":
        violations.append(FieldViolation("steps", "only a sequence has follow-ups"))
    texts = [(f"variants[{i}].text", v.get("text", "")) for i, v in enumerate(variants)]
    texts += [(f"steps[{i}].text", s.get("text", "")) for i, s in enumerate(draft.steps)]
    for field, text in texts:
        if unknown := unknown_variables(str(text)):
            violations.append(FieldViolation(field, f"unknown variables: {', '.join(unknown)}"))


def _comparisons(
    total: VariantResult,
    variants: Sequence[VariantResult],
    holdout: repository.VariantCounts | None,
) -> tuple[Comparison | None, list[Comparison]]:
    """The lift of the sent group over the holdout, and each variant against the first."""
    lift = None
    if holdout is not None:
        lift = compare(
            "sent - holdout",
            converted_a=total.converted,
            total_a=total.recipients,
            converted_b=holdout.converted,
            total_b=holdout.recipients,
        )
    comparisons = []
    for variant in variants[1:]:
        found = compare(
            f"{variant.key} - {variants[0].key}",
            converted_a=variant.converted,
            total_a=variant.recipients,
            converted_b=variants[0].converted,
            total_b=variants[0].recipients,
        )
        if found is not None:
            comparisons.append(found)
    return lift, comparisons


def _within(fan: crm_pb2.AudienceFan, name: str, hours: int, now: datetime) -> bool:
    stamp = getattr(fan, name)
    if not hours or (stamp.seconds == 0 and stamp.nanos == 0):
        return False
    last = stamp.ToDatetime(tzinfo=UTC)
    return bool(last > now - timedelta(hours=hours))


def mass_eligible(campaign: Campaign) -> bool:
    """Whether the platform's mass-message queue can carry the campaign: a one-off or
    re-engagement message in one version, the same text for every fan (no variables). The
    exclusions are applied when the audience is resolved and the queue gets the fans left by id
    (the platform ignores some exclusion fields: it is never trusted to exclude); the fans the
    automation budget refuses are left out of it."""
    return (
        campaign.kind in ("one_off", "reengagement")
        and len(campaign.variants) == 1
        and not campaign.steps
        and not variables_of(str(campaign.variants[0]["text"]))
    )


def _variant_result(
    key: str, counts: repository.VariantCounts | None, *, opened: int = 0
) -> VariantResult:
    counts = counts or repository.VariantCounts()

    def number(state: str, reason: str | None = None) -> int:
        return sum(
            n
            for (s, r), n in counts.states.items()
            if s == state and (reason is None or r == reason)
        )

    skipped = number("skipped")
    budget = number("skipped", "automation_budget")
    return VariantResult(
        key=key,
        recipients=counts.recipients,
        sent=number("sent"),
        failed=number("failed"),
        skipped_budget=budget,
        skipped_other=skipped - budget,
        pending=number("queued") + number("requested"),
        stopped=counts.stopped,
        opened=opened,
        unsent=number("unsent"),
        purchases=counts.purchases,
        revenue_cents=counts.revenue_cents,
        converted=counts.converted,
    )


def _sum_results(results: Sequence[VariantResult]) -> VariantResult:
    return VariantResult(
        key="",
        **{
            name: sum(getattr(r, name) for r in results)
            for name in (
                "recipients",
                "sent",
                "failed",
                "skipped_budget",
                "skipped_other",
                "pending",
                "stopped",
                "purchases",
                "revenue_cents",
                "converted",
                "opened",
                "unsent",
            )
        },
    )
