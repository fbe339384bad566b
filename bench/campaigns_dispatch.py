"""Dispatching a one-message campaign to many fans, fan by fan and as platform mass messages:
from the first send the scheduler takes to the last one handed on. Fan by fan, each send is a
`SendMessage` to the CRM (16 at a time); as mass messages, each chunk of up to 1,000 fans is one
`RecordMassMessage` (every fan's budget checked and their message stored) and one command in
the chunk's transaction. The same fans, the same CRM, in the same run.

    python bench/campaigns_dispatch.py [--fans 5000]

PostgreSQL and NATS: `HUNTAZE_BENCH_DATABASE_URL` / `HUNTAZE_BENCH_NATS_URL` when set, else
embedded servers started here. No platform worker runs: what is measured ends at the CRM and
the commands on NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import uvloop
from _campaigns import campaigns_bench, fan_list

from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze_kit.db import libpq_url

POLL_SECONDS = 0.05


async def dispatch_seconds(database_url: str, campaign_id: str) -> float:
    """Seconds from the first send leaving the queue to the last one."""
    connection = await asyncpg.connect(libpq_url(database_url))
    query = (
        "SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FROM campaigns.sends"
        " WHERE campaign_id = $1"
    )
    try:
        first: float | None = None
        while True:
            queued, total = await connection.fetchrow(query, uuid.UUID(campaign_id))
            now = time.perf_counter()
            if first is None and queued < total:
                first = now
            if total and queued == 0:
                return now - (first if first is not None else now)
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await connection.close()


async def run(fans: int) -> None:
    async with campaigns_bench() as bench:
        list_id = await fan_list(bench.suite.database_url, bench.creator_id, fans)
        figures: dict[str, float] = {}
        modes: dict[str, bool] = {}
        for label, text in (("fan by fan", "Hey {name}, new set"), ("mass messages", "New set")):
            campaign = await bench.stub.CreateCampaign(
                pb.CreateCampaignRequest(
                    name=label,
                    kind=pb.CAMPAIGN_KIND_ONE_OFF,
                    list_id=list_id,
                    variants=[pb.Variant(key="A", text=text)],
                ),
                metadata=bench.auth,
            )
            scheduled = await bench.stub.ScheduleCampaign(
                pb.ScheduleCampaignRequest(campaign_id=campaign.id), metadata=bench.auth
            )
            modes[label] = scheduled.mass_message
            figures[label] = await dispatch_seconds(bench.suite.database_url, campaign.id)
        per_fan, mass = figures["fan by fan"], figures["mass messages"]
        print(f"fans per campaign               {fans:,}")
        for label, seconds in figures.items():
            print(
                f"{label:<15} dispatch seconds {seconds:.2f}  ({fans / seconds:,.0f} fans/s)"
                f"  mass_message={modes[label]}"
            )
        print(f"mass messages / fan by fan      {mass / per_fan:.2f}x the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fans", type=int, default=5_000)
    arguments = parser.parse_args()
    uvloop.run(run(arguments.fans))


if __name__ == "__main__":
    main()
