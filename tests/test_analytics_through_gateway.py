"""Analytics through the gateway, every service a real process: purchases on the platform go
through the CRM's consumer and analytics' consumers, and the dashboard's revenue equals the
CRM's own sum of the creator's purchases; another creator sees none of it; the overview, the
series, the insights, the summary and the CSV export answer; bad input is a problem document."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from huntaze_devstack.testing import PlatformEvents, assert_problem
from tests.conftest import Suite


@dataclass(frozen=True)
class Creator:
    id: str


async def ok(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    answer = await client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def crm_purchase_sum(client: httpx.AsyncClient) -> int:
    """The CRM's own sum of the creator's purchases, fan by fan."""
    fans = await ok(client, "/api/crm/fans", limit="100")
    total = 0
    for fan in fans["fans"]:
        purchases = await ok(client, f"/api/crm/fans/{fan['id']}/purchases", limit="100")
        total += sum(int(p["amountCents"]) for p in purchases["purchases"])
    return total


async def until_equal(read: Any, expected: int, within: float = 30.0) -> int:
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if value == expected or time.monotonic() > deadline:
            return int(value)
        await asyncio.sleep(0.2)


async def test_the_dashboard_revenue_is_the_crms_sum_of_purchases(
    suite: Suite, worker: PlatformEvents
) -> None:
    async with (
        suite.signed_in() as (creator_id, _, client),
        suite.signed_in() as (
            other_id,
            _,
            other,
        ),
    ):
        amounts = [1250, 999, 4000, 1, 300]
        for index, cents in enumerate(amounts):
            await worker.fan_pays(
                Creator(creator_id),
                transaction_id=f"t-{uuid.uuid4().hex}",
                cents=cents,
                platform_fan_id=f"fan-{index % 2}",
            )
        await worker.fan_pays(
            Creator(other_id), transaction_id=f"t-{uuid.uuid4().hex}", cents=777,
            platform_fan_id="fan-9",
        )  # fmt: skip

        expected = sum(amounts)

        async def crm_total() -> int:
            return await crm_purchase_sum(client)

        async def dashboard_today() -> int:
            dashboard = await ok(client, "/api/dashboard")
            return int(dashboard["revenueTodayCents"]["current"])

        assert await until_equal(crm_total, expected) == expected
        assert await until_equal(dashboard_today, expected) == await crm_purchase_sum(client)

        dashboard = await ok(client, "/api/dashboard")
        assert int(dashboard["revenueWeekCents"]["current"]) == expected
        assert int(dashboard["fans"]["total"]) == 2
        assert any(a["key"] == "create_campaign" for a in dashboard["quickActions"])

        overview = await ok(client, "/api/analytics/overview", period="7d")
        assert overview["period"] == "7d"
        assert int(overview["revenue"]["totalCents"]["current"]) == expected
        assert int(overview["revenue"]["tipCents"]) == expected
        [platform] = overview["platforms"]
        assert platform["platform"] == "onlyfans"
        assert [int(p["spendCents"]) for p in overview["topPerformers"]] == [
            1250 + 4000 + 300,
            999 + 1,
        ]

        # The other creator sees their own purchase alone.
        async def other_today() -> int:
            return int((await ok(other, "/api/dashboard"))["revenueTodayCents"]["current"])

        assert await until_equal(other_today, 777) == 777
        other_overview = await ok(other, "/api/analytics/overview")
        assert int(other_overview["revenue"]["totalCents"]["current"]) == 777
        assert len(other_overview["topPerformers"]) == 1

        series = await ok(client, "/api/analytics/series", period="7d", granularity="day")
        assert len(series["points"]) == 7
        assert sum(int(p.get("revenueCents", 0)) for p in series["points"]) == expected
        hours = await ok(client, "/api/analytics/series", granularity="hour")
        assert sum(int(p.get("revenueCents", 0)) for p in hours["points"]) == expected

        insights = await ok(client, "/api/analytics/insights", period="30d")
        assert insights["topSpenders"][0]["reason"].startswith("Spent $55.50 over 3 purchases")
        summary = await ok(client, "/api/analytics/summary", period="7d")
        assert summary["writtenBy"] == "facts"
        assert "revenue was $65.50 from 5 purchases" in summary["summary"]

        export = await client.get("/api/analytics/export.csv", params={"period": "7d"})
        assert export.status_code == 200, export.text
        assert export.headers["content-type"].startswith("text/csv")
        assert "attachment" in export.headers["content-disposition"]
        lines = export.text.splitlines()
        assert lines[0].split(",")[:2] == ["day", "revenue_cents"]
        assert sum(int(line.split(",")[1]) for line in lines[1:]) == expected


async def test_analytics_bad_input_and_no_token_are_problem_documents(suite: Suite) -> None:
    async with suite.client() as anonymous:
        assert_problem(await anonymous.get("/api/dashboard"), 401)
        assert_problem(await anonymous.get("/api/analytics/export.csv"), 401)
    async with suite.signed_in() as (_, _, client):
        bad = await client.get("/api/analytics/overview", params={"period": "5d"})
        assert_problem(bad, 422)
        bad = await client.get("/api/analytics/series", params={"granularity": "minute"})
        assert_problem(bad, 422)
        bad = await client.get("/api/analytics/export.csv", params={"period": "1y"})
        assert_problem(bad, 422)
