"""The rollups agree with a direct computation over the events; replays change nothing; a
rebuild from the events table gives the same rollups; late events land in their own day; two
creators never see each other's numbers; a new timezone cuts the creator's days anew."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from huntaze.analytics.v1 import analytics_pb2 as pb
from huntaze.crm.v1 import crm_pb2
from huntaze_analytics import facts
from huntaze_kit.db import libpq_url

from .conftest import NOW, Running

NEW_YORK = ZoneInfo("America/New_York")
KINDS = {
    crm_pb2.PURCHASE_KIND_TIP: "tip_cents",
    crm_pb2.PURCHASE_KIND_PPV_UNLOCK: "ppv_cents",
    crm_pb2.PURCHASE_KIND_SUBSCRIPTION: "subscription_cents",
    crm_pb2.PURCHASE_KIND_RENEWAL: "renewal_cents",
}
PLATFORMS = {crm_pb2.PLATFORM_ONLYFANS: "onlyfans", crm_pb2.PLATFORM_REDDIT: "reddit"}


def local_day(when: datetime) -> date:
    return when.astimezone(NEW_YORK).date()


async def seed(analytics: Running, creator: str) -> dict[str, object]:
    """A creator's month in events; answers what was seeded, for the direct computation."""
    publish = analytics.publisher
    await publish.timezone(creator, "America/New_York")
    await analytics.settle()
    rng = random.Random(creator)
    fans = [str(uuid.uuid4()) for _ in range(6)]
    for index, fan in enumerate(fans):
        await publish.fan(
            creator, fan, when=NOW - timedelta(days=50 - index * 8), name=f"Fan {index}"
        )
    purchases = []
    for _ in range(60):
        when = NOW - timedelta(minutes=rng.randrange(0, 70 * 24 * 60))
        fan = rng.choice(fans)
        cents = rng.randrange(100, 5000)
        kind = rng.choice(list(KINDS))
        platform = rng.choice(list(PLATFORMS))
        purchases.append((fan, cents, kind, platform, when))
        await publish.purchase(creator, fan, cents, when=when, kind=kind, platform=platform)
    # Conversations: a reply 5 minutes, one an hour after the fan wrote; a mass message is no
    # reply; a fan who wrote twice waits from the first message.
    conversation = [str(uuid.uuid4()) for _ in range(3)]
    waits = []
    first = await publish.fan_writes(
        creator, fans[0], conversation[0], when=NOW - timedelta(hours=5)
    )
    await publish.reply(
        creator, fans[0], conversation[0], when=NOW - timedelta(hours=5) + timedelta(minutes=5)
    )
    waits.append(300.0)
    await publish.fan_writes(creator, fans[1], conversation[1], when=NOW - timedelta(hours=3))
    await publish.fan_writes(
        creator, fans[1], conversation[1], when=NOW - timedelta(hours=2, minutes=30)
    )
    await publish.reply(
        creator, fans[1], conversation[1], when=NOW - timedelta(hours=2, minutes=50),
        sender=crm_pb2.SENDER_KIND_AUTOMATION,
    )  # fmt: skip
    await publish.reply(creator, fans[1], conversation[1], when=NOW - timedelta(hours=2))
    waits.append(3600.0)
    unread = await publish.fan_writes(
        creator, fans[2], conversation[2], when=NOW - timedelta(hours=1)
    )
    await publish.read(creator, conversation[0], [first.message.message.id], when=NOW)  # type: ignore[attr-defined]
    # Subscriptions: fans[3] ends and comes back; fans[4] ends soon with renewal off.
    await publish.fan(
        creator,
        fans[3],
        created=False,
        state=crm_pb2.SUBSCRIPTION_STATE_EXPIRED,
        when=NOW - timedelta(days=6),
    )
    await publish.fan(creator, fans[3], created=False, when=NOW - timedelta(days=2))
    await publish.fan(
        creator, fans[4], created=False, state=crm_pb2.SUBSCRIPTION_STATE_CANCELLED,
        expires_at=NOW + timedelta(days=3), when=NOW - timedelta(days=1),
    )  # fmt: skip
    # The AI: 3 shown; 2 accepted, 1 edited, 1 rejected, 1 sent by the autopilot.
    for outcome in (None, None, None, "accepted", "accepted", "edited", "rejected", "sent"):
        await publish.suggestion(creator, outcome=outcome, when=NOW - timedelta(hours=4))
    await publish.attributed(creator, 1500, when=NOW - timedelta(hours=3))
    await publish.needs_attention(creator, when=NOW - timedelta(minutes=10))
    campaigns = [str(uuid.uuid4()), str(uuid.uuid4())]
    await publish.campaign(creator, campaigns[0], "started", when=NOW - timedelta(days=2))
    await publish.campaign(creator, campaigns[1], "started", when=NOW - timedelta(days=3))
    await publish.campaign(creator, campaigns[1], "completed", when=NOW - timedelta(days=1))
    await analytics.settle()
    return {"purchases": purchases, "waits": waits, "fans": fans, "unread": unread}


def direct_revenue(
    purchases: list[tuple[str, int, int, int, datetime]], start: date, end: date
) -> Counter[str]:
    totals: Counter[str] = Counter()
    for _fan, cents, kind, platform, when in purchases:
        if start <= local_day(when) <= end:
            totals["revenue_cents"] += cents
            totals["purchases"] += 1
            totals[KINDS[kind]] += cents
            totals[PLATFORMS[platform]] += cents
    return totals


async def test_dashboard_and_overview_equal_a_direct_computation(analytics: Running) -> None:
    creator = str(uuid.uuid4())
    seeded = await seed(analytics, creator)
    purchases = seeded["purchases"]
    assert isinstance(purchases, list)
    service = analytics.service
    creator_id = uuid.UUID(creator)

    overview = await service.overview(creator_id=creator_id, period=pb.PERIOD_30D)
    today = local_day(NOW)
    start = today - timedelta(days=29)
    assert (overview.start_day, overview.end_day) == (start.isoformat(), today.isoformat())
    assert overview.timezone == "America/New_York"
    current = direct_revenue(purchases, start, today)
    previous = direct_revenue(purchases, start - timedelta(days=30), start - timedelta(days=1))
    assert overview.revenue.total_cents.current == current["revenue_cents"]
    assert overview.revenue.total_cents.previous == previous["revenue_cents"]
    assert overview.revenue.purchases.current == current["purchases"]
    for column in KINDS.values():
        assert getattr(overview.revenue, column) == current[column]
    assert {p.platform: p.revenue_cents for p in overview.platforms} == {
        name: current[name] for name in PLATFORMS.values() if current[name]
    }
    spend = Counter()
    for fan, cents, *_ in purchases:
        spend[fan] += cents
    assert [p.spend_cents for p in overview.top_performers] == sorted(spend.values(), reverse=True)[
        :5
    ]

    fans = seeded["fans"]
    assert isinstance(fans, list)
    buyers = {fan for fan, *_, when in purchases if local_day(when) >= start}
    assert overview.fans.active == len(buyers | set(fans[:3]))  # the three who wrote
    assert overview.fans.total == 6
    assert overview.fans.subscribers == 6  # fans[3] came back, fans[4] runs until it ends
    assert overview.fans.expired == 1
    assert overview.fans.returning == 1
    assert overview.fans.expiring == 1
    assert overview.fans.new_fans.current == sum(
        1 for i in range(6) if local_day(NOW - timedelta(days=50 - i * 8)) >= start
    )

    waits = sorted(seeded["waits"])  # type: ignore[arg-type]
    buckets = Counter(facts.response_bucket(w) for w in waits)
    assert overview.messages.replies_timed == len(waits)
    assert overview.messages.median_response_seconds == facts.percentile(buckets, 0.5)
    low, high = facts.bucket_bounds(facts.response_bucket(waits[0]))
    assert low <= overview.messages.median_response_seconds <= round(high, 1)
    assert overview.messages.received.current == 4
    assert overview.messages.sent.current == 3

    assert (overview.ai.shown, overview.ai.accepted, overview.ai.edited, overview.ai.rejected) == (
        3, 2, 1, 1,
    )  # fmt: skip
    assert overview.ai.autopilot_sends == 1
    assert overview.ai.acceptance_percent == 75.0
    assert overview.ai.attributed_revenue_cents == 1500
    assert overview.campaigns.active == 1
    assert {r.event_type: r.events for r in overview.campaigns.results} == {
        "campaigns.campaign.started": 2,
        "campaigns.campaign.completed": 1,
    }

    dashboard = await service.dashboard(creator_id=creator_id)
    yesterday = today - timedelta(days=1)
    assert (
        dashboard.revenue_today_cents.current
        == direct_revenue(purchases, today, today)["revenue_cents"]
    )
    assert (
        dashboard.revenue_today_cents.previous
        == direct_revenue(purchases, yesterday, yesterday)["revenue_cents"]
    )
    week_start = today - timedelta(days=6)
    assert (
        dashboard.revenue_week_cents.current
        == direct_revenue(purchases, week_start, today)["revenue_cents"]
    )
    assert (
        dashboard.revenue_week_cents.previous
        == direct_revenue(
            purchases, week_start - timedelta(days=7), week_start - timedelta(days=1)
        )["revenue_cents"]
    )
    # Four fan messages, one of them read.
    assert dashboard.unread_messages == 3
    assert dashboard.active_campaigns == 1
    assert [a.reason for a in dashboard.accounts_needing_attention] == ["wrong_password"]
    assert dashboard.ai_acceptance_percent == 75.0
    assert [a.key for a in dashboard.quick_actions] == [
        "reconnect_account", "reply_unread", "win_back_expiring",
    ]  # fmt: skip

    series = await service.series(
        creator_id=creator_id, period=pb.PERIOD_7D, granularity=pb.GRANULARITY_DAY
    )
    assert [p.bucket for p in series.points] == [
        (week_start + timedelta(days=i)).isoformat() for i in range(7)
    ]
    for point in series.points:
        day = date.fromisoformat(point.bucket)
        assert point.revenue_cents == direct_revenue(purchases, day, day)["revenue_cents"]
    hours = await service.series(
        creator_id=creator_id, period=pb.PERIOD_7D, granularity=pb.GRANULARITY_HOUR
    )
    assert len(hours.points) == NOW.astimezone(NEW_YORK).hour + 1
    assert (
        sum(p.revenue_cents for p in hours.points)
        == direct_revenue(purchases, today, today)["revenue_cents"]
    )

    export = await service.export_csv(creator_id=creator_id, period=pb.PERIOD_7D)
    lines = export.content.splitlines()
    assert lines[0].startswith("day,revenue_cents,")
    assert len(lines) == 8
    assert (
        sum(int(line.split(",")[1]) for line in lines[1:]) == dashboard.revenue_week_cents.current
    )


async def test_replaying_the_same_events_changes_nothing(analytics: Running) -> None:
    creator = str(uuid.uuid4())
    await seed(analytics, creator)
    before = await analytics.derived()
    applied = analytics.applied()
    # Every event once more, under new message ids (past the stream's duplicate window).
    for published in list(analytics.publisher.sent):
        await analytics.publisher.again(published)
    await analytics.settle(applied + len(analytics.publisher.sent) // 2)
    assert await analytics.derived() == before
    assert sum(c.duplicates for c in analytics.server.consumers) >= applied


async def test_a_rebuild_from_the_events_table_gives_the_same_rollups(analytics: Running) -> None:
    for _ in range(2):
        await seed(analytics, str(uuid.uuid4()))
    before = await analytics.derived()
    assert before["daily_rollups"]
    assert await analytics.service.rebuild() == len(analytics.publisher.sent)
    assert await analytics.derived() == before
    # The command an operator runs does the same.
    env = {
        **os.environ,
        "HUNTAZE_DATABASE_URL": analytics.database_url,
        "HUNTAZE_LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [sys.executable, "-m", "huntaze_analytics", "rebuild"], env=env, check=True, timeout=120
    )
    assert await analytics.derived() == before


async def test_a_late_event_lands_in_its_own_day(analytics: Running) -> None:
    creator = str(uuid.uuid4())
    fan = str(uuid.uuid4())
    await analytics.publisher.fan(creator, fan, when=NOW - timedelta(days=10))
    await analytics.publisher.purchase(creator, fan, 1000, when=NOW - timedelta(hours=1))
    # Bought yesterday, recorded today.
    await analytics.publisher.purchase(creator, fan, 700, when=NOW - timedelta(days=1))
    await analytics.settle()
    dashboard = await analytics.service.dashboard(creator_id=uuid.UUID(creator))
    assert dashboard.revenue_today_cents.current == 1000
    assert dashboard.revenue_today_cents.previous == 700
    series = await analytics.service.series(
        creator_id=uuid.UUID(creator), period=pb.PERIOD_7D, granularity=pb.GRANULARITY_DAY
    )
    assert [p.revenue_cents for p in series.points][-2:] == [700, 1000]


async def test_two_creators_never_see_each_others_numbers(analytics: Running) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    first_fan, second_fan = str(uuid.uuid4()), str(uuid.uuid4())
    await analytics.publisher.fan(first, first_fan, when=NOW - timedelta(days=2))
    await analytics.publisher.purchase(first, first_fan, 1111, when=NOW - timedelta(hours=2))
    await analytics.publisher.fan(second, second_fan, when=NOW - timedelta(days=2))
    await analytics.publisher.purchase(second, second_fan, 2222, when=NOW - timedelta(hours=2))
    await analytics.publisher.fan_writes(second, second_fan, str(uuid.uuid4()), when=NOW)
    await analytics.settle()
    for creator, cents, fan, unread in ((first, 1111, first_fan, 0), (second, 2222, second_fan, 1)):
        creator_id = uuid.UUID(creator)
        overview = await analytics.service.overview(creator_id=creator_id, period=pb.PERIOD_7D)
        assert overview.revenue.total_cents.current == cents
        assert [p.fan_id for p in overview.top_performers] == [fan]
        assert overview.fans.total == 1
        dashboard = await analytics.service.dashboard(creator_id=creator_id)
        assert dashboard.unread_messages == unread
        insights = await analytics.service.fan_insights(creator_id=creator_id, period=pb.PERIOD_7D)
        assert [i.fan_id for i in insights.top_spenders] == [fan]


async def test_a_new_timezone_cuts_the_creators_days_anew(analytics: Running) -> None:
    creator = str(uuid.uuid4())
    fan = str(uuid.uuid4())
    # 03:00 UTC on the 30th: the 30th in UTC, still the 29th in New York.
    await analytics.publisher.purchase(
        creator, fan, 500, when=datetime(2026, 11, 30, 3, tzinfo=NOW.tzinfo)
    )
    await analytics.settle()
    creator_id = uuid.UUID(creator)
    dashboard = await analytics.service.dashboard(creator_id=creator_id)
    assert (dashboard.timezone, dashboard.revenue_today_cents.current) == ("UTC", 500)
    await analytics.publisher.timezone(creator, "America/New_York")
    await analytics.settle()
    dashboard = await analytics.service.dashboard(creator_id=creator_id)
    assert dashboard.timezone == "America/New_York"
    assert (dashboard.revenue_today_cents.current, dashboard.revenue_today_cents.previous) == (
        0,
        500,
    )
    before = await analytics.derived()
    await analytics.service.rebuild()
    assert await analytics.derived() == before


async def test_events_are_kept_in_monthly_partitions(analytics: Running) -> None:
    creator = str(uuid.uuid4())
    fan = str(uuid.uuid4())
    for months_ago in (0, 3, 14):
        when = NOW - timedelta(days=31 * months_ago)
        await analytics.publisher.purchase(creator, fan, 100, when=when)
    # A type analytics does not read is stored all the same.
    await analytics.publisher.campaign(creator, str(uuid.uuid4()), "variant_chosen", when=NOW)
    await analytics.settle()
    conn = await asyncpg.connect(libpq_url(analytics.database_url))
    try:
        rows = await conn.fetch(
            "SELECT tableoid::regclass::text AS part, event_type FROM analytics.events"
            " WHERE creator_id = $1 ORDER BY occurred_at",
            uuid.UUID(creator),
        )
    finally:
        await conn.close()
    assert sorted((row["part"], row["event_type"]) for row in rows) == [
        ("analytics.events_202509", "crm.purchase.recorded"),
        ("analytics.events_202608", "crm.purchase.recorded"),
        ("analytics.events_202611", "campaigns.campaign.variant_chosen"),
        ("analytics.events_202611", "crm.purchase.recorded"),
    ]
