"""The whole chain with the platform simulator: auth, the CRM, the OnlyFans worker (real
Chromium) and the campaigns service on one database and NATS. A pay-per-view campaign reaches
the platform through the worker, the worker and the campaigns service are stopped mid-dispatch
and started again (each fan still gets exactly one copy), and the purchases the platform
records come back through the worker's sync and the CRM as the campaign's revenue and lift."""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy import select, update

from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import onlyfans_pb2, onlyfans_pb2_grpc
from huntaze_campaigns.models import Send
from huntaze_devstack.testing import eventually
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import upgrade_async
from huntaze_onlyfans_worker.config import OnlyfansSettings
from huntaze_onlyfans_worker.server import WorkerServer
from huntaze_simulator.demo import DemoShape
from huntaze_simulator.testing import Simulator, serve

from .conftest import Creator, Stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (make browser)"),
]

PLATFORM_EMAIL = "creator@example.com"
PLATFORM_PASSWORD = "creator-password"
VAULT_KEY = base64.b64encode(b"c" * 32).decode()
FANS = 12
PRICE_CENTS = 900


@dataclass
class Chain:
    stack: Stack
    simulator: Simulator
    worker: WorkerServer
    channels: list[grpc.aio.Channel]

    def worker_settings(self) -> OnlyfansSettings:
        return OnlyfansSettings.model_validate(
            {
                "database_url": self.stack.database_url,
                "nats_url": self.stack.nats_url,
                "auth_grpc_target": f"127.0.0.1:{self.stack.auth.port}",
                "onlyfans_grpc_host": "127.0.0.1",
                "onlyfans_grpc_port": 0,
                "onlyfans_metrics_port": 0,
                "grace_seconds": 0.5,
                "onlyfans_base_url": self.simulator.base_url,
                "onlyfans_rules_url": f"{self.simulator.base_url}/rules.json",
                "onlyfans_browser_path": shutil.which("chromium"),
                "onlyfans_vault_master_keys": VAULT_KEY,
                "onlyfans_sync_interval_seconds": 3600.0,
                "onlyfans_send_interval_seconds": 0.0,
                "onlyfans_send_jitter_seconds": 0.0,
                "onlyfans_throttle_seconds": 0.2,
                "onlyfans_lease_seconds": 3.0,
                "onlyfans_rate_limit_pause_seconds": 1.0,
                "db_pool_size": 4,
            }
        )

    def onlyfans(self) -> Any:
        channel = create_channel(f"127.0.0.1:{self.worker.port}")
        self.channels.append(channel)
        return onlyfans_pb2_grpc.OnlyFansServiceStub(channel)

    async def sent_on_platform(self, after_id: int = 0) -> list[dict[str, Any]]:
        """What the creator sent on the platform, oldest first (after `after_id`)."""
        response = await self.simulator.control.get("/_control/sent", params={"after_id": after_id})
        response.raise_for_status()
        copies: list[dict[str, Any]] = response.json()
        return copies


@pytest.fixture
async def chain(stack: Stack) -> AsyncIterator[Chain]:
    await upgrade_async(
        stack.database_url, package="huntaze_onlyfans_worker.migrations", schema="onlyfans"
    )
    async with serve(demo=DemoShape(fans=FANS)) as simulator:
        await simulator.control.patch(
            "/_control/config", json={"demo_activity_seconds": 0, "send_interval_seconds": 0.2}
        )
        built = Chain(stack=stack, simulator=simulator, worker=None, channels=[])  # type: ignore[arg-type]
        built.worker = WorkerServer(built.worker_settings())
        await built.worker.start()
        try:
            yield built
        finally:
            for channel in built.channels:
                await channel.close()
            await built.worker.stop()


async def _connected(chain: Chain, creator: Creator) -> None:
    onlyfans = chain.onlyfans()
    answer = await onlyfans.Connect(
        onlyfans_pb2.ConnectRequest(
            credentials=onlyfans_pb2.Credentials(email=PLATFORM_EMAIL, password=PLATFORM_PASSWORD)
        ),
        metadata=creator.auth,
        timeout=120.0,  # a browser starts and signs in; this machine may be busy
    )
    assert answer.status.state == onlyfans_pb2.CONNECTION_STATE_CONNECTED
    await eventually(
        lambda: chain.stack.crm_stub.ListFans(crm_pb2.ListFansRequest(), metadata=creator.auth),
        lambda page: len(page.fans) == FANS,
        within=60.0,
    )


async def test_a_ppv_campaign_through_the_worker_survives_restarts_and_measures_purchases(
    chain: Chain,
) -> None:
    stack = chain.stack
    creator = await stack.sign_up()
    await _connected(chain, creator)
    active = await stack.crm_stub.CreateFanList(
        crm_pb2.CreateFanListRequest(
            name="Active subscribers",
            kind=crm_pb2.FAN_LIST_KIND_DYNAMIC,
            segment=crm_pb2.SegmentFilter(subscription_states=[crm_pb2.SUBSCRIPTION_STATE_ACTIVE]),
        ),
        metadata=creator.auth,
    )
    assert active.member_count >= 6
    media = str(chain.simulator.platform.data.vault[0].id)
    campaign = await stack.create(
        creator,
        name="Weekend set",
        list_id=active.id,
        holdout_percent=25,
        variants=[
            pb.Variant(
                key="A",
                text="{name}, my weekend set is here",
                price_cents=PRICE_CENTS,
                platform_media_ids=[media],
            )
        ],
    )
    history = await chain.sent_on_platform()
    before = max((copy["id"] for copy in history), default=0)
    scheduled = await stack.schedule(creator, campaign.id)
    recipients = await stack.recipients(campaign.id)
    held = {r.platform_fan_id for r in recipients if r.holdout}
    reached = {r.platform_fan_id for r in recipients if not r.holdout}
    assert len(held) == scheduled.holdout_count >= 1

    # Both stopped mid-dispatch: some copies are on the platform, others not yet.
    await eventually(
        lambda: chain.sent_on_platform(before), lambda copies: len(copies) >= 2, within=60.0
    )
    await chain.worker.stop()
    await stack.campaigns.stop()
    # The campaigns service's crash window: two sends the CRM made are still queued here.
    async with stack.sessions() as session:
        ours = Send.campaign_id == uuid.UUID(campaign.id)
        lost = await session.execute(
            update(Send)
            .where(
                ours,
                Send.fan_id.in_(select(Send.fan_id).where(ours, Send.state != "queued").limit(2)),
            )
            .values(state="queued", crm_message_id=None, claimed_until=stack.clock())
            .returning(Send.fan_id)
        )
        assert len(lost.all()) == 2
        await session.commit()
    stack.clock.advance(minutes=1)
    chain.worker = WorkerServer(chain.worker_settings())
    await chain.worker.start()
    await stack.restart_campaigns()

    sends = await eventually(
        lambda: stack.sends(campaign.id),
        lambda rows: all(row.state == "sent" for row in rows),
        within=90.0,
    )
    copies = await chain.sent_on_platform(before)
    assert sorted(str(c["fan_id"]) for c in copies) == sorted(reached)  # one copy each
    assert held.isdisjoint(str(c["fan_id"]) for c in copies)
    assert {c["price"] for c in copies} == {PRICE_CENTS / 100}
    assert {s.platform_message_id for s in sends} == {str(c["id"]) for c in copies}

    # Two fans buy their copy; the worker's next sync brings the purchases.
    buyers = copies[:2]
    for copy in buyers:
        bought = await chain.simulator.control.post(
            f"/_control/fans/{copy['fan_id']}/purchases", json={"message_id": copy["id"]}
        )
        bought.raise_for_status()
    await chain.onlyfans().RequestSync(onlyfans_pb2.RequestSyncRequest(), metadata=creator.auth)
    metrics = await eventually(
        lambda: stack.metrics(creator, campaign.id),
        lambda found: found.total.purchases == 2,
        within=60.0,
    )
    assert metrics.total.revenue_cents == 2 * PRICE_CENTS
    assert metrics.total.sent == len(reached)
    assert metrics.total.converted == 2
    assert metrics.holdout == len(held)
    assert metrics.lift.label == "sent - holdout"
    assert metrics.lift.difference == pytest.approx(2 / len(reached) - 0)
    assert "significant" in metrics.lift.verdict.lower()
