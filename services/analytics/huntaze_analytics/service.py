"""Use cases of analytics: taking in events (and rebuilding from them), and the figures the API
answers. Reads run on the read pool, several at once; writes (snapshots, summaries, a rebuild)
run in a transaction the service commits."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeAlias

import asyncpg
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.analytics.v1 import analytics_pb2 as pb
from huntaze_analytics import facts, insights, repository
from huntaze_analytics.models import ROLLUP_COUNTS
from huntaze_analytics.rollups import Rollups, zone
from huntaze_analytics.summaries import Figures, SummaryWriter
from huntaze_kit.consumers import ReceivedEvent
from huntaze_kit.db import driver_connection

Clock = Callable[[], datetime]

Period: TypeAlias = pb.Period.ValueType
PERIOD_DAYS: dict[Period, int] = {pb.PERIOD_7D: 7, pb.PERIOD_30D: 30, pb.PERIOD_90D: 90}
PERIOD_NAMES: dict[Period, str] = {pb.PERIOD_7D: "7d", pb.PERIOD_30D: "30d", pb.PERIOD_90D: "90d"}
DEFAULT_PERIOD: Period = pb.PERIOD_30D
TOP_PERFORMERS = 5
CSV_COLUMNS = (*ROLLUP_COUNTS, "active_fans")
# Snapshots kept parsed, the oldest forgotten first.
PARSED_SNAPSHOTS = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


def _period(value: Period) -> Period:
    return value if value in PERIOD_DAYS else DEFAULT_PERIOD


@dataclass(frozen=True)
class Window:
    """A period in the creator's days: `start`..`end` (today), and the same length before."""

    period: Period
    timezone: str
    now: datetime
    start: date
    end: date
    previous_start: date

    @classmethod
    def of(cls, period: Period, *, timezone: str, now: datetime) -> Window:
        days = PERIOD_DAYS[period]
        today = now.astimezone(zone(timezone)).date()
        start = today - timedelta(days=days - 1)
        return cls(period, timezone, now, start, today, start - timedelta(days=days))

    @property
    def days(self) -> int:
        return PERIOD_DAYS[self.period]

    @property
    def name(self) -> str:
        return PERIOD_NAMES[self.period]


def change(current: int, previous: int) -> pb.Change:
    result = pb.Change(current=current, previous=previous)
    if previous:
        result.percent = round((current - previous) * 100 / previous, 1)
    return result


def acceptance(accepted: int, edited: int, rejected: int) -> float | None:
    resolved = accepted + edited + rejected
    return round((accepted + edited) * 100 / resolved, 1) if resolved else None


class AnalyticsService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        reads: asyncpg.Pool,
        *,
        writer: SummaryWriter,
        snapshot_max_age: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._reads = reads
        self._writer = writer
        self._snapshot_max_age = snapshot_max_age
        self._clock = clock
        self.rollups = Rollups()
        self._parsed: dict[int, pb.FanInsights] = {}

    # -- taking events in ---------------------------------------------------------------------

    async def ingest(self, session: AsyncSession, events: Sequence[ReceivedEvent]) -> None:
        """The consumers' batch handler: stores and applies events in their transaction."""
        conn = await driver_connection(session)
        now = self._clock()
        stored = [facts.from_received(event, now=now) for event in events]
        for creator_id in await self.rollups.apply(conn, stored):
            # A new timezone: the creator's days are cut anew.
            await self.rollups.rebuild(conn, creator_id=creator_id)

    async def rebuild(self, *, creator_id: uuid.UUID | None = None) -> int:
        """Rebuilds the rollups (of one creator, or all) from the events table; answers how
        many events were applied."""
        async with self._sessions() as session, session.begin():
            conn = await driver_connection(session)
            return await self.rollups.rebuild(conn, creator_id=creator_id)

    # -- reading --------------------------------------------------------------------------------

    async def _window(
        self, creator_id: uuid.UUID, period: Period
    ) -> tuple[Window, repository.Creator]:
        found = await repository.creator(self._reads, creator_id)
        return Window.of(_period(period), timezone=found.timezone, now=self._clock()), found

    async def overview(self, *, creator_id: uuid.UUID, period: Period) -> pb.Overview:
        window, found = await self._window(creator_id, period)
        figures, top, snapshot = await asyncio.gather(
            self._figures_of(creator_id, window),
            repository.top_fans(self._reads, creator_id, limit=TOP_PERFORMERS),
            self._snapshot(creator_id, window),
        )
        current, previous = figures.current, figures.previous
        total = sum(cents for _, cents, _ in figures.platforms)
        return pb.Overview(
            period=window.period,
            start_day=window.start.isoformat(),
            end_day=window.end.isoformat(),
            timezone=window.timezone,
            revenue=self._revenue(current, previous),
            platforms=[
                pb.PlatformShare(
                    platform=name,
                    revenue_cents=cents,
                    purchases=count,
                    percent=round(cents * 100 / total, 1) if total else 0.0,
                )
                for name, cents, count in figures.platforms
            ],
            fans=self._fans_of(found, figures),
            messages=self._messages(current, previous, figures.buckets),
            ai=self._ai(current),
            campaigns=pb.Campaigns(
                active=figures.active_campaigns,
                results=[pb.CampaignResult(event_type=t, events=n) for t, n in figures.events],
            ),
            top_performers=[insights.top_spender(row, now=window.now) for row in top],
            insights=self._insights_of(snapshot),
            summary=snapshot.summary or "",
        )

    async def _figures_of(self, creator_id: uuid.UUID, window: Window) -> repository.Figures:
        return await repository.figures(
            self._reads,
            creator_id,
            previous_start=window.previous_start,
            start=window.start,
            end=window.end,
            now=window.now,
            prefix=facts.CAMPAIGNS_PREFIX,
        )

    @staticmethod
    def _fans_of(found: repository.Creator, figures: repository.Figures) -> pb.Fans:
        return pb.Fans(
            total=found.fans_total,
            subscribers=found.subscribers,
            new_fans=change(figures.current["new_fans"], figures.previous["new_fans"]),
            active=figures.active,
            expiring=figures.expiring,
            expired=figures.current["expired_fans"],
            returning=figures.current["returning_fans"],
        )

    @staticmethod
    def _revenue(current: dict[str, int], previous: dict[str, int]) -> pb.Revenue:
        return pb.Revenue(
            total_cents=change(current["revenue_cents"], previous["revenue_cents"]),
            subscription_cents=current["subscription_cents"],
            renewal_cents=current["renewal_cents"],
            tip_cents=current["tip_cents"],
            ppv_cents=current["ppv_cents"],
            purchases=change(current["purchases"], previous["purchases"]),
        )

    @staticmethod
    def _messages(
        current: dict[str, int], previous: dict[str, int], buckets: dict[int, int]
    ) -> pb.Messages:
        answer = pb.Messages(
            received=change(current["messages_in"], previous["messages_in"]),
            sent=change(current["messages_out"], previous["messages_out"]),
            replies_timed=sum(buckets.values()),
        )
        median, p90 = facts.percentile(buckets, 0.5), facts.percentile(buckets, 0.9)
        if median is not None and p90 is not None:
            answer.median_response_seconds = median
            answer.p90_response_seconds = p90
        return answer

    @staticmethod
    def _ai(current: dict[str, int]) -> pb.AiPerformance:
        answer = pb.AiPerformance(
            shown=current["ai_shown"],
            accepted=current["ai_accepted"],
            edited=current["ai_edited"],
            rejected=current["ai_rejected"],
            autopilot_sends=current["ai_autopilot_sends"],
            attributed_revenue_cents=current["ai_attributed_cents"],
        )
        rate = acceptance(current["ai_accepted"], current["ai_edited"], current["ai_rejected"])
        if rate is not None:
            answer.acceptance_percent = rate
        return answer

    async def dashboard(self, *, creator_id: uuid.UUID) -> pb.Dashboard:
        week, found = await self._window(creator_id, pb.PERIOD_7D)
        yesterday = week.end - timedelta(days=1)
        figures, (today, before), attention = await asyncio.gather(
            self._figures_of(creator_id, week),
            repository.sums(self._reads, creator_id, split=week.end, start=yesterday, end=week.end),
            repository.accounts_needing_attention(self._reads, creator_id),
        )
        current, previous = figures.current, figures.previous
        answer = pb.Dashboard(
            timezone=week.timezone,
            revenue_today_cents=change(today["revenue_cents"], before["revenue_cents"]),
            revenue_week_cents=change(current["revenue_cents"], previous["revenue_cents"]),
            fans=self._fans_of(found, figures),
            unread_messages=figures.unread,
            active_campaigns=figures.active_campaigns,
            accounts_needing_attention=[
                pb.AccountAttention(platform=row[0], reason=row[1], message=row[2])
                for row in attention
            ],
        )
        for item, row in zip(answer.accounts_needing_attention, attention, strict=True):
            item.since.FromDatetime(row[3])
        rate = acceptance(current["ai_accepted"], current["ai_edited"], current["ai_rejected"])
        if rate is not None:
            answer.ai_acceptance_percent = rate
        answer.quick_actions.extend(quick_actions(answer))
        return answer

    async def series(
        self, *, creator_id: uuid.UUID, period: Period, granularity: pb.Granularity.ValueType
    ) -> pb.Series:
        window, _ = await self._window(creator_id, period)
        answer = pb.Series(
            period=window.period,
            granularity=granularity or pb.GRANULARITY_DAY,
            timezone=window.timezone,
        )
        if granularity == pb.GRANULARITY_HOUR:
            midnight = datetime.combine(window.end, datetime.min.time())
            rows = await repository.hourly_rows(
                self._reads, creator_id, start=midnight, end=midnight + timedelta(days=1)
            )
            current_hour = window.now.astimezone(zone(window.timezone)).hour
            for hour in range(current_hour + 1):
                at = midnight + timedelta(hours=hour)
                answer.points.append(_point(at.strftime("%Y-%m-%dT%H:00"), rows.get(at, {})))
            return answer
        days = await repository.daily_rows(
            self._reads, creator_id, start=window.start, end=window.end
        )
        for offset in range(window.days):
            day = window.start + timedelta(days=offset)
            answer.points.append(_point(day.isoformat(), days.get(day, {})))
        return answer

    async def export_csv(self, *, creator_id: uuid.UUID, period: Period) -> pb.ExportCsvResponse:
        window, _ = await self._window(creator_id, period)
        days = await repository.daily_rows(
            self._reads, creator_id, start=window.start, end=window.end
        )
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("day", *CSV_COLUMNS))
        for offset in range(window.days):
            day = window.start + timedelta(days=offset)
            row = days.get(day, {})
            writer.writerow((day.isoformat(), *(row.get(name, 0) for name in CSV_COLUMNS)))
        return pb.ExportCsvResponse(
            filename=f"huntaze-analytics-{window.start}-{window.end}.csv", content=out.getvalue()
        )

    # -- insights and summaries -----------------------------------------------------------------

    async def fan_insights(self, *, creator_id: uuid.UUID, period: Period) -> pb.FanInsights:
        window, _ = await self._window(creator_id, period)
        return self._insights_of(await self._snapshot(creator_id, window))

    async def summary(self, *, creator_id: uuid.UUID, period: Period) -> pb.InsightSummary:
        window, found = await self._window(creator_id, period)
        snapshot = await self._snapshot(creator_id, window)
        if snapshot.summary is None:
            text, written_by = await self._writer.write(
                await self._figures(creator_id, window, found, snapshot)
            )
            async with self._sessions() as session, session.begin():
                conn = await driver_connection(session)
                created = await repository.save_summary(
                    conn,
                    snapshot_id=snapshot.id,
                    creator_id=creator_id,
                    period=window.name,
                    summary=text,
                    written_by=written_by,
                )
        else:
            text, written_by = snapshot.summary, snapshot.written_by or ""
            created = snapshot.summarized_at or snapshot.created_at
        answer = pb.InsightSummary(
            period=window.period,
            start_day=snapshot.period_start.isoformat(),
            end_day=snapshot.period_end.isoformat(),
            summary=text,
            written_by=written_by,
        )
        answer.created_at.FromDatetime(created)
        return answer

    async def _figures(
        self,
        creator_id: uuid.UUID,
        window: Window,
        found: repository.Creator,
        snapshot: repository.Snapshot,
    ) -> Figures:
        figures = await self._figures_of(creator_id, window)
        current, previous = figures.current, figures.previous
        found_insights = self._insights_of(snapshot)
        top = found_insights.top_spenders[0] if found_insights.top_spenders else None
        return Figures(
            period_days=window.days,
            start_day=window.start.isoformat(),
            end_day=window.end.isoformat(),
            revenue_cents=current["revenue_cents"],
            previous_revenue_cents=previous["revenue_cents"],
            purchases=current["purchases"],
            new_fans=current["new_fans"],
            active_fans=figures.active,
            expiring=figures.expiring,
            messages_received=current["messages_in"],
            messages_sent=current["messages_out"],
            median_response_seconds=facts.percentile(figures.buckets, 0.5),
            ai_acceptance_percent=acceptance(
                current["ai_accepted"], current["ai_edited"], current["ai_rejected"]
            ),
            top_spender=(
                f"{top.display_name or 'a fan'} ({insights.money(top.spend_cents)})" if top else ""
            ),
            churn_risks=len(found_insights.churn_risks),
            quiet_whales=len(found_insights.quiet_whales),
        )

    def _insights_of(self, snapshot: repository.Snapshot) -> pb.FanInsights:
        """The snapshot's insights (parsed once per snapshot: every overview shows them)."""
        parsed = self._parsed.get(snapshot.id)
        if parsed is None:
            parsed = json_format.ParseDict(snapshot.raw, pb.FanInsights())
            if len(self._parsed) >= PARSED_SNAPSHOTS:
                self._parsed.pop(next(iter(self._parsed)))
            self._parsed[snapshot.id] = parsed
        return parsed

    async def _snapshot(self, creator_id: uuid.UUID, window: Window) -> repository.Snapshot:
        """The period's latest snapshot; a new one when there is none, it is too old or its
        period has moved on (a new day)."""
        found = await repository.latest_snapshot(self._reads, creator_id, period=window.name)
        if (
            found is not None
            and found.period_end == window.end
            and window.now - found.created_at < self._snapshot_max_age
        ):
            return found
        computed = await self.compute_insights(creator_id=creator_id, window=window)
        raw = json_format.MessageToDict(computed)
        async with self._sessions() as session, session.begin():
            conn = await driver_connection(session)
            snapshot_id = await repository.save_snapshot(
                conn,
                creator_id=creator_id,
                period=window.name,
                start=window.start,
                end=window.end,
                raw=raw,
            )
        return repository.Snapshot(
            id=snapshot_id,
            period=window.name,
            period_start=window.start,
            period_end=window.end,
            raw=raw,
            created_at=window.now,
            summary=None,
            written_by=None,
            summarized_at=None,
        )

    async def compute_insights(self, *, creator_id: uuid.UUID, window: Window) -> pb.FanInsights:
        now = window.now
        top, churn, ltv, (threshold, whales) = await asyncio.gather(
            repository.top_fans(self._reads, creator_id, limit=insights.LIMIT),
            repository.churn_candidates(
                self._reads,
                creator_id,
                now=now,
                quiet_days=insights.QUIET_DAYS,
                limit=insights.LIMIT,
            ),
            repository.ltv_candidates(self._reads, creator_id, now=now, limit=insights.LIMIT),
            repository.quiet_whales(
                self._reads,
                creator_id,
                now=now,
                quiet_days=insights.QUIET_DAYS,
                limit=insights.LIMIT,
            ),
        )
        answer = pb.FanInsights(
            period=window.period,
            top_spenders=[insights.top_spender(row, now=now) for row in top],
            churn_risks=sorted(
                (insights.churn_risk(row, now=now) for row in churn),
                key=lambda item: (-item.value, -item.spend_cents),
            ),
            expected_ltv=[insights.expected_ltv(row, now=now) for row in ltv],
            quiet_whales=[
                insights.quiet_whale(row, now=now, threshold=threshold) for row in whales
            ],
        )
        answer.computed_at.FromDatetime(now)
        return answer


def _point(bucket: str, row: dict[str, int]) -> pb.SeriesPoint:
    return pb.SeriesPoint(
        bucket=bucket,
        revenue_cents=row.get("revenue_cents", 0),
        purchases=row.get("purchases", 0),
        new_fans=row.get("new_fans", 0),
        active_fans=row.get("active_fans", 0),
        messages_received=row.get("messages_in", 0),
        messages_sent=row.get("messages_out", 0),
        ai_accepted=row.get("ai_accepted", 0) + row.get("ai_edited", 0),
        ai_attributed_cents=row.get("ai_attributed_cents", 0),
    )


def quick_actions(dashboard: pb.Dashboard) -> list[pb.QuickAction]:
    """What to do next, most pressing first."""
    actions = []
    if dashboard.accounts_needing_attention:
        actions.append(
            pb.QuickAction(
                key="reconnect_account",
                label="Reconnect your OnlyFans account",
                href="/settings/connections",
            )
        )
    if dashboard.unread_messages:
        actions.append(
            pb.QuickAction(
                key="reply_unread",
                label=f"Reply to {dashboard.unread_messages} unread messages",
                href="/inbox",
            )
        )
    if dashboard.fans.expiring:
        actions.append(
            pb.QuickAction(
                key="win_back_expiring",
                label=f"Win back {dashboard.fans.expiring} fans whose subscription ends soon",
                href="/fans",
            )
        )
    if not dashboard.active_campaigns:
        actions.append(
            pb.QuickAction(key="create_campaign", label="Start a campaign", href="/campaigns/new")
        )
    return actions
