"""Planning a 50,000-fan campaign until every send is durably queued: `ScheduleCampaign` on the
campaigns service resolves the audience from the CRM over gRPC (pages of 5,000, with the facts
the exclusions need), applies the exclusions, draws the holdout and the variants, and commits
the snapshot and one send per fan (COPY) in one transaction. Goal: under 10 s.

The machine's own baseline in the same run: COPY of the same number of rows (recipients and
sends) into a scratch table, with nothing else around it.

    python bench/campaigns_plan.py [--fans 50000] [--runs 3]

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import uvloop
from _campaigns import SERVICE_SECRET, campaigns_bench, fan_list

from huntaze.auth.v1 import auth_pb2, auth_pb2_grpc
from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze.crm.v1 import crm_pb2, crm_pb2_grpc
from huntaze_kit.db import libpq_url
from huntaze_kit.grpc_client import bearer_metadata, create_channel


async def copy_baseline(database_url: str, rows: int) -> float:
    """Seconds to COPY `rows` rows of the sends' shape into a scratch table and commit."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        await connection.execute(
            "CREATE TEMP TABLE baseline (a uuid, b uuid, step int, c uuid, v text, due timestamptz)"
        )
        now = datetime.now(UTC)
        records = [(uuid.uuid4(), uuid.uuid4(), 0, uuid.uuid4(), "A", now) for _ in range(rows)]
        started = time.perf_counter()
        async with connection.transaction():
            await connection.copy_records_to_table("baseline", records=records)
        return time.perf_counter() - started
    finally:
        await connection.close()


async def resolve_alone(bench: Any, list_id: str) -> float:
    """Seconds to read the audience from the CRM alone, page after page, as the service does."""
    auth_channel = create_channel(bench.suite.env["HUNTAZE_AUTH_GRPC_TARGET"])
    crm_channel = create_channel(bench.suite.env["HUNTAZE_CRM_GRPC_TARGET"], deadline=120.0)
    try:
        issued = await auth_pb2_grpc.AuthServiceStub(auth_channel).IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(
                service_name="campaigns", service_secret=SERVICE_SECRET, creator_id=bench.creator_id
            )
        )
        crm = crm_pb2_grpc.CrmServiceStub(crm_channel)
        started = time.perf_counter()
        after = ""
        while True:
            page = await crm.ResolveAudience(
                crm_pb2.ResolveAudienceRequest(
                    list_id=list_id, start_after=after, limit=5000, recent_sends_within_hours=24
                ),
                metadata=bearer_metadata(issued.access_token),
            )
            after = page.next_start_after
            if not after:
                return time.perf_counter() - started
    finally:
        await auth_channel.close()
        await crm_channel.close()


async def run(fans: int, runs: int) -> None:
    async with campaigns_bench() as bench:
        list_id = await fan_list(bench.suite.database_url, bench.creator_id, fans)
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        timings: list[float] = []
        for index in range(runs):
            campaign = await bench.stub.CreateCampaign(
                pb.CreateCampaignRequest(
                    name=f"Plan {index}",
                    kind=pb.CAMPAIGN_KIND_ONE_OFF,
                    list_id=list_id,
                    holdout_percent=10,
                    exclusions=pb.Exclusions(automated_within_hours=24, human_within_hours=6),
                    variants=[
                        pb.Variant(key="A", text="Hey {name}, new set", price_cents=900),
                        pb.Variant(key="B", text="{name}, just for you", price_cents=1500),
                    ],
                ),
                metadata=bench.auth,
            )
            started = time.perf_counter()
            scheduled = await bench.stub.ScheduleCampaign(
                pb.ScheduleCampaignRequest(campaign_id=campaign.id, send_at=later),
                metadata=bench.auth,
            )
            timings.append(time.perf_counter() - started)
            assert scheduled.audience_count == fans, scheduled
        connection = await asyncpg.connect(libpq_url(bench.suite.database_url))
        try:
            queued = await connection.fetchval(
                "SELECT count(*) FROM campaigns.sends WHERE state = 'queued'"
            )
        finally:
            await connection.close()
        resolving = await resolve_alone(bench, list_id)
        rows = fans + fans  # recipients and sends (the holdout has no send: a little less)
        baseline = await copy_baseline(bench.suite.database_url, rows)
        best = min(timings)
        print(f"fans per campaign        {fans:,}")
        print(f"sends durably queued     {queued:,} over {runs} campaigns")
        print(
            "plan (schedule) seconds  "
            + ", ".join(f"{t:.2f}" for t in timings)
            + f"  (best {best:.2f}, goal < 10)"
        )
        print(f"fans planned per second  {fans / best:,.0f}")
        print(f"of which the CRM's pages {resolving:.2f} s (read alone)")
        print(
            f"bare COPY of {rows:,} rows  {baseline:.2f} s  -> plan/COPY = {best / baseline:.1f}x"
        )
        print("goal met" if best < 10 else "GOAL MISSED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fans", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    uvloop.run(run(arguments.fans, arguments.runs))


if __name__ == "__main__":
    main()
