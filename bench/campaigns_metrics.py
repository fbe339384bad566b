"""The metrics of a campaign with 50,000 recipients: `GetCampaignMetrics` (counts per variant and
state, purchases, revenue, conversion, the lift over the holdout and the variants' difference
with confidence intervals), called one after another, directly over gRPC and through the
gateway. Goal: p95 under 100 ms.

The campaign is planned by the service; its outcomes (every copy sent, 4% of the sent group and
3% of the holdout buying) are written into its tables as the delivery and purchase events would
(the tables' triggers keep the tallies the metrics read). "SQL alone" is the same reads on one
connection with nothing around them: the service's and the gateway's share is the rest.

    python bench/campaigns_metrics.py [--fans 50000] [--calls 200]

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import uvloop
from _campaigns import campaigns_bench, fan_list
from _support import percentile

from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze_campaigns.repository import RECIPIENTS, SENDS
from huntaze_kit.db import libpq_url

OUTCOMES = """
WITH sent AS (
    UPDATE campaigns.sends SET state = 'sent', sent_at = now(), requested_at = now(),
           crm_message_id = gen_random_uuid(), platform_message_id = 'of-' || fan_id
    WHERE campaign_id = $1
    RETURNING fan_id
)
SELECT count(*) FROM sent
"""
CONVERTED = """
UPDATE campaigns.recipients r SET converted_at = p.occurred_at
FROM campaigns.purchases p
WHERE r.campaign_id = $1 AND p.campaign_id = r.campaign_id AND p.fan_id = r.fan_id
"""
PURCHASES = """
INSERT INTO campaigns.purchases
    (campaign_id, purchase_id, creator_id, fan_id, amount_cents, from_message, occurred_at)
SELECT r.campaign_id, gen_random_uuid(), r.creator_id, r.fan_id,
       CASE WHEN r.variant = 'B' THEN 1500 ELSE 900 END, NOT r.holdout, now()
FROM campaigns.recipients r
WHERE r.campaign_id = $1
  AND (abs(hashtext(r.fan_id::text)) % 100) < CASE WHEN r.holdout THEN 3 ELSE 4 END
"""


async def sql_alone(database_url: str, campaign_id: uuid.UUID, calls: int) -> list[float]:
    """Milliseconds of the service's reads, one connection, nothing around them."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        statements = [await connection.prepare(query) for query in (RECIPIENTS, SENDS)]
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            for statement in statements:
                await statement.fetch(campaign_id)
            timings.append((time.perf_counter() - started) * 1000)
        return timings
    finally:
        await connection.close()


async def run(fans: int, calls: int) -> None:
    async with campaigns_bench() as bench:
        list_id = await fan_list(bench.suite.database_url, bench.creator_id, fans)
        campaign = await bench.stub.CreateCampaign(
            pb.CreateCampaignRequest(
                name="Measured",
                kind=pb.CAMPAIGN_KIND_ONE_OFF,
                list_id=list_id,
                holdout_percent=10,
                variants=[
                    pb.Variant(key="A", text="Hey {name}", price_cents=900),
                    pb.Variant(key="B", text="{name}!", price_cents=1500),
                ],
            ),
            metadata=bench.auth,
        )
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        await bench.stub.ScheduleCampaign(
            pb.ScheduleCampaignRequest(campaign_id=campaign.id, send_at=later),
            metadata=bench.auth,
        )
        connection = await asyncpg.connect(libpq_url(bench.suite.database_url))
        try:
            sent = await connection.fetchval(OUTCOMES, uuid.UUID(campaign.id))
            await connection.execute(PURCHASES, uuid.UUID(campaign.id))
            await connection.execute(CONVERTED, uuid.UUID(campaign.id))
            await connection.execute("ANALYZE campaigns.sends; ANALYZE campaigns.recipients")
            bought = await connection.fetchval("SELECT count(*) FROM campaigns.purchases")
        finally:
            await connection.close()

        sql_ms = await sql_alone(bench.suite.database_url, uuid.UUID(campaign.id), calls)
        request = pb.GetCampaignMetricsRequest(campaign_id=campaign.id)
        for _ in range(5):  # warm: connections, plans, the statistics library's import
            await bench.stub.GetCampaignMetrics(request, metadata=bench.auth)
        grpc_ms: list[float] = []
        for _ in range(calls):
            started = time.perf_counter()
            metrics = await bench.stub.GetCampaignMetrics(request, metadata=bench.auth)
            grpc_ms.append((time.perf_counter() - started) * 1000)
        http_ms: list[float] = []
        async with httpx.AsyncClient(base_url=bench.suite.gateway_url, timeout=30.0) as client:
            headers = {"authorization": f"Bearer {bench.token}"}
            path = f"/api/campaigns/{campaign.id}/metrics"
            for _ in range(5):
                (await client.get(path, headers=headers)).raise_for_status()
            for _ in range(calls):
                started = time.perf_counter()
                response = await client.get(path, headers=headers)
                http_ms.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()

        print(f"recipients               {metrics.total.recipients + metrics.holdout:,}")
        print(f"sends marked sent        {sent:,}; purchases {bought:,}")
        print(f"lift                     {metrics.lift.verdict}")
        for name, values in (("SQL alone", sql_ms), ("gRPC", grpc_ms), ("gateway HTTP", http_ms)):
            print(
                f"metrics {name:<13} p50 {percentile(values, 0.5):6.1f} ms  "
                f"p95 {percentile(values, 0.95):6.1f} ms  p99 {percentile(values, 0.99):6.1f} ms"
                f"  ({len(values)} calls)"
            )
        p95 = percentile(grpc_ms, 0.95)
        print("goal met (p95 < 100 ms)" if p95 < 100 else "GOAL MISSED (p95 >= 100 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fans", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=200)
    arguments = parser.parse_args()
    uvloop.run(run(arguments.fans, arguments.calls))


if __name__ == "__main__":
    main()
