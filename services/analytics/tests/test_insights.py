"""Fan insights come with their reasons and follow the documented models; snapshots are kept
per period and reused while fresh; the written summary comes from the figures, or from an
OpenAI-compatible LLM when one is configured (the figures' own summary when it fails)."""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import openai
import pytest

from huntaze.analytics.v1 import analytics_pb2 as pb
from huntaze.crm.v1 import crm_pb2
from huntaze_analytics.service import AnalyticsService
from huntaze_analytics.summaries import FACTS, LlmWriter
from huntaze_kit.db import create_engine, create_read_pool, libpq_url, session_factory

from .conftest import NOW, Running


class FakeLlm:
    """An OpenAI-compatible chat completions endpoint: answers `reply`, or `status` errors."""

    def __init__(self) -> None:
        self.reply = "Revenue grew; write to your quiet whales."
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.requests.append(body)
                if fake.status != 200:
                    payload = {"error": {"message": "down", "type": "server_error"}}
                else:
                    payload = {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": fake.reply},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                data = json.dumps(payload).encode()
                self.send_response(fake.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"


@pytest.fixture
def llm() -> Iterator[FakeLlm]:
    fake = FakeLlm()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


async def _seed(analytics: Running, creator: str) -> dict[str, str]:
    publish = analytics.publisher
    fans = {name: str(uuid.uuid4()) for name in ("whale", "expiring", "steady", "quiet")}
    small = [str(uuid.uuid4()) for _ in range(9)]
    for fan in [*fans.values(), *small]:
        joined = 60 if fan == fans["steady"] else 120
        await publish.fan(creator, fan, when=NOW - timedelta(days=joined))
    for index, fan in enumerate(small):
        await publish.purchase(creator, fan, (index + 1) * 100, when=NOW - timedelta(days=2))
    # The whale: $50 three times, last 30 days ago. Quiet since.
    for days in (90, 60, 30):
        await publish.purchase(creator, fans["whale"], 5000, when=NOW - timedelta(days=days))
    # Renewal off, ends in 2 days.
    await publish.purchase(creator, fans["expiring"], 500, when=NOW - timedelta(days=20))
    await publish.fan(
        creator, fans["expiring"], created=False, state=crm_pb2.SUBSCRIPTION_STATE_CANCELLED,
        expires_at=NOW + timedelta(days=2), when=NOW - timedelta(days=1),
    )  # fmt: skip
    # Joined two months ago, buys every three weeks, last 3 days ago: the best expected value.
    for days in (53, 33, 13, 3):
        await publish.purchase(creator, fans["steady"], 2000, when=NOW - timedelta(days=days))
    # Engaged by messages, silent for 20 days.
    for _ in range(5):
        await publish.fan_writes(
            creator, fans["quiet"], str(uuid.uuid4()), when=NOW - timedelta(days=20)
        )
    await analytics.settle()
    return fans


async def test_insights_say_why_and_follow_the_documented_models(analytics: Running) -> None:
    creator = str(uuid.uuid4())
    fans = await _seed(analytics, creator)
    creator_id = uuid.UUID(creator)
    insights = await analytics.service.fan_insights(creator_id=creator_id, period=pb.PERIOD_30D)

    top = insights.top_spenders[0]
    assert (top.fan_id, top.spend_cents, top.value) == (fans["whale"], 15000, 15000)
    assert top.reason == "Spent $150.00 over 3 purchases; last active 30 days ago."

    churn = {item.fan_id: item for item in insights.churn_risks}
    assert set(churn) == {fans["expiring"], fans["whale"], fans["quiet"]}
    assert churn[fans["expiring"]].value == 95
    assert churn[fans["expiring"]].reason == (
        "Renewal is off and the subscription ends in 2 days; $5.00 spent so far."
    )
    assert churn[fans["quiet"]].value == 50
    assert churn[fans["quiet"]].reason == (
        "Was engaged (0 purchases, 5 messages) and has been silent for 20 days."
    )
    assert insights.churn_risks[0].fan_id == fans["expiring"]

    best = insights.expected_ltv[0]
    assert best.fan_id == fans["steady"]
    months = 57 / 30.0  # from joining to the last purchase
    expected = 8000 + math.exp(-3 / 60) * (8000 / months) * 12
    assert best.value == round(expected)
    assert "95% likely to keep buying" in best.reason

    [whale] = insights.quiet_whales
    assert whale.fan_id == fans["whale"]
    assert whale.reason.startswith("In your top 10% of spenders (from $80.00) with $150.00 spent")
    assert whale.reason.endswith("and silent for 30 days.")


async def test_snapshots_are_kept_per_period_and_reused_while_fresh(analytics: Running) -> None:
    creator = str(uuid.uuid4())
    await _seed(analytics, creator)
    creator_id = uuid.UUID(creator)
    first = await analytics.service.fan_insights(creator_id=creator_id, period=pb.PERIOD_7D)
    again = await analytics.service.overview(creator_id=creator_id, period=pb.PERIOD_7D)
    await analytics.service.fan_insights(creator_id=creator_id, period=pb.PERIOD_90D)
    assert again.insights == first
    summary = await analytics.service.summary(creator_id=creator_id, period=pb.PERIOD_7D)
    assert summary.written_by == FACTS
    assert summary.summary.startswith("Over the 7 days from 2026-11-24 to 2026-11-30, revenue was")
    assert (await analytics.service.summary(creator_id=creator_id, period=pb.PERIOD_7D)) == summary
    overview = await analytics.service.overview(creator_id=creator_id, period=pb.PERIOD_7D)
    assert overview.summary == summary.summary
    conn = await asyncpg.connect(libpq_url(analytics.database_url))
    try:
        rows = await conn.fetch(
            "SELECT period, period_start, period_end FROM analytics.insight_snapshots"
            " WHERE creator_id = $1 ORDER BY period",
            creator_id,
        )
        summaries = await conn.fetchval(
            "SELECT count(*) FROM analytics.insight_summaries WHERE creator_id = $1", creator_id
        )
    finally:
        await conn.close()
    assert [(r[0], r[1].isoformat(), r[2].isoformat()) for r in rows] == [
        ("7d", "2026-11-24", "2026-11-30"),
        ("90d", "2026-09-02", "2026-11-30"),
    ]
    assert summaries == 1


@pytest.fixture
async def with_llm(analytics: Running, llm: FakeLlm) -> AsyncIterator[AnalyticsService]:
    engine = create_engine(analytics.database_url, application_name="test")
    reads = await create_read_pool(analytics.database_url, application_name="test", max_size=4)
    client = openai.AsyncOpenAI(base_url=llm.url, api_key="none", max_retries=0)
    try:
        yield AnalyticsService(
            session_factory(engine),
            reads,
            writer=LlmWriter(client=client, name="compatible", model="summary-model"),
            snapshot_max_age=timedelta(hours=1),
            clock=lambda: NOW,
        )
    finally:
        await client.close()
        await reads.close()
        await engine.dispose()


async def test_a_configured_llm_writes_the_summary_from_the_figures(
    analytics: Running, llm: FakeLlm, with_llm: AnalyticsService
) -> None:
    creator = str(uuid.uuid4())
    await _seed(analytics, creator)
    summary = await with_llm.summary(creator_id=uuid.UUID(creator), period=pb.PERIOD_30D)
    assert (summary.summary, summary.written_by) == (llm.reply, "compatible:summary-model")
    [request] = llm.requests
    figures = json.loads(request["messages"][1]["content"].removeprefix("Figures: "))
    assert figures["revenue_cents"] == 4500 + 500 + 2000 * 2  # the last 30 days
    assert figures["quiet_whales"] == 1

    # The LLM down: the factual summary, never none.
    llm.status = 500
    other = str(uuid.uuid4())
    await _seed(analytics, other)
    fallback = await with_llm.summary(creator_id=uuid.UUID(other), period=pb.PERIOD_30D)
    assert fallback.written_by == FACTS
    assert fallback.summary.startswith("Over the 30 days from 2026-11-01 to 2026-11-30")
