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
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import select, update

from huntaze.auth.v1 import auth_pb2
from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import onlyfans_pb2, onlyfans_pb2_grpc
from huntaze_campaigns.models import Campaign, Send
from huntaze_devstack.testing import eventually
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.migrations import upgrade_async
from huntaze_kit.rich_status import from_rpc_error
from huntaze_onlyfans_worker.config import OnlyfansSettings
from huntaze_onlyfans_worker.server import WorkerServer
from huntaze_simulator.demo import DemoShape
from huntaze_simulator.testing import Simulator, serve

from .conftest import SERVICE_SECRET, Creator, Stack, bearer, rpc_error

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
        # Those two commits never happened, so neither did the campaign's completion.
        await session.execute(
            update(Campaign)
            .where(Campaign.id == uuid.UUID(campaign.id), Campaign.status == "completed")
            .values(status="running", completed_at=None)
        )
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


async def test_a_mass_message_campaign_goes_through_the_platforms_queue_once_and_can_be_unsent(
    chain: Chain,
) -> None:
    """One message with no per-fan text: one platform mass message to the fans left after the
    exclusions and the holdout, by id, minus the fan whose automation budget is spent (skipped,
    with the reason). The campaigns service stopped after the CRM recorded the chunk but before
    its commit sends nothing twice. The queue's figures come back (sent, viewed, bought), and
    the creator takes the message back within the platform's day."""
    stack = chain.stack
    creator = await stack.sign_up()
    await _connected(chain, creator)
    await stack.crm_stub.UpdateAutomationBudget(
        crm_pb2.UpdateAutomationBudgetRequest(
            budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=1)
        ),
        metadata=creator.auth,
    )
    active = await stack.crm_stub.CreateFanList(
        crm_pb2.CreateFanListRequest(
            name="Active subscribers",
            kind=crm_pb2.FAN_LIST_KIND_DYNAMIC,
            segment=crm_pb2.SegmentFilter(subscription_states=[crm_pb2.SUBSCRIPTION_STATE_ACTIVE]),
        ),
        metadata=creator.auth,
    )
    media = str(chain.simulator.platform.data.vault[0].id)
    history = await chain.sent_on_platform()
    before = max((copy["id"] for copy in history), default=0)
    campaign = await stack.create(
        creator,
        name="Weekend set",
        list_id=active.id,
        holdout_percent=25,
        variants=[
            pb.Variant(
                key="A",
                text="My weekend set is here",
                price_cents=PRICE_CENTS,
                platform_media_ids=[media],
            )
        ],
    )
    scheduled = await stack.schedule(
        creator, campaign.id, send_at=(stack.clock() + timedelta(hours=1)).isoformat()
    )
    assert scheduled.mass_message
    recipients = await stack.recipients(campaign.id)
    held = {r.platform_fan_id for r in recipients if r.holdout}
    assert len(held) == scheduled.holdout_count >= 1
    spent = next(r for r in recipients if not r.holdout)
    reached = {r.platform_fan_id for r in recipients if not r.holdout} - {spent.platform_fan_id}

    # Meanwhile another campaign spends one recipient's budget (a mass message of its own).
    single = await stack.crm_stub.CreateFanList(
        crm_pb2.CreateFanListRequest(name="One", kind=crm_pb2.FAN_LIST_KIND_STATIC),
        metadata=creator.auth,
    )
    await stack.crm_stub.AddFanListMembers(
        crm_pb2.AddFanListMembersRequest(list_id=single.id, fan_ids=[str(spent.fan_id)]),
        metadata=creator.auth,
    )
    first = await stack.create(
        creator, list_id=single.id, variants=[pb.Variant(key="A", text="Hello you")]
    )
    first = await stack.schedule(creator, first.id)
    assert first.mass_message
    await eventually(
        lambda: stack.sends(first.id), lambda rows: [r.state for r in rows] == ["sent"], 60.0
    )

    # The crash window: the CRM recorded the chunk (what the service asks first), and the
    # service stopped before its own commit. Its next dispatch asks again under the same key.
    chunk = sorted(r.fan_id for r in recipients if not r.holdout)
    key = f"campaign:{campaign.id}:mass:{chunk[0]}"
    issued = await stack.auth_stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            service_name="campaigns", service_secret=SERVICE_SECRET, creator_id=creator.id
        )
    )
    recorded = await stack.crm_stub.RecordMassMessage(
        crm_pb2.RecordMassMessageRequest(
            fan_ids=[str(fan_id) for fan_id in chunk],
            text="My weekend set is here",
            price_cents=PRICE_CENTS,
            attachments=[
                crm_pb2.Attachment(kind=crm_pb2.ATTACHMENT_KIND_FILE, platform_media_id=media)
            ],
            idempotency_key=key,
        ),
        metadata=bearer(issued.access_token),
    )
    refused = {r.platform_fan_id: r.refused_reason for r in recorded.recipients if r.refused_reason}
    assert refused == {spent.platform_fan_id: "AUTOMATION_BUDGET_EXHAUSTED"}
    assert all(r.message_id for r in recorded.recipients if not r.refused_reason)

    stack.clock.advance(hours=1, minutes=1)
    await chain.simulator.advance(3660)  # the platform's hour passes too (purchase times)
    stack.wake()
    sends = await eventually(
        lambda: stack.sends(campaign.id),
        lambda rows: all(row.state in ("sent", "skipped") for row in rows),
        within=90.0,
    )
    by_state = {s.state: s for s in sends}
    assert {s.reason for s in sends if s.state == "skipped"} == {"automation_budget"}
    assert len([s for s in sends if s.state == "sent"]) == len(reached)
    assert {s.mass_key for s in sends if s.state == "sent"} == {key}
    assert by_state["sent"].platform_message_id.startswith("queue:")
    copies = await eventually(
        lambda: chain.sent_on_platform(before),
        lambda found: len(found) == 1 + len(reached),
        within=60.0,
    )
    ours = [c for c in copies if c["price"] == PRICE_CENTS / 100]
    assert sorted(str(c["fan_id"]) for c in ours) == sorted(reached)  # one copy each
    assert len({c["queue_id"] for c in ours}) == 1
    assert {c["price"] for c in ours} == {PRICE_CENTS / 100}
    for fan_id in reached:  # one message each in the CRM, sent once the platform queued it
        messages = await eventually(
            lambda fan_id=fan_id: stack.outgoing_by_platform_id(creator, fan_id),
            lambda found: (
                [m.delivery_status for m in found if m.text == "My weekend set is here"]
                == [crm_pb2.DELIVERY_STATUS_SENT]
            ),
        )
        assert all(m.sender_kind == crm_pb2.SENDER_KIND_AUTOMATION for m in messages)

    # A fan buys their copy; the next sync brings the purchase and the queue's figures.
    buyer = ours[0]
    bought = await chain.simulator.control.post(
        f"/_control/fans/{buyer['fan_id']}/purchases", json={"message_id": buyer["id"]}
    )
    bought.raise_for_status()
    await chain.onlyfans().RequestSync(onlyfans_pb2.RequestSyncRequest(), metadata=creator.auth)
    metrics = await eventually(
        lambda: stack.metrics(creator, campaign.id),
        lambda found: found.total.purchases == 1 and found.total.opened == 1,
        within=60.0,
    )
    assert metrics.total.revenue_cents == PRICE_CENTS
    assert metrics.total.sent == len(reached)
    assert metrics.total.skipped_budget == 1
    assert metrics.variants[0].opened == 1

    # Unsend: the worker deletes the queue once; the copies leave the fans' chats.
    unsent = await stack.stub.UnsendCampaign(
        pb.UnsendCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
    )
    assert unsent.id == campaign.id
    metrics = await eventually(
        lambda: stack.metrics(creator, campaign.id),
        lambda found: found.total.unsent == len(reached),
        within=60.0,
    )
    assert chain.simulator.platform.data.mass_messages[int(buyer["queue_id"])].canceled
    for fan_id in reached:  # each fan's copy in the CRM is unsent too, the other campaign's not
        await eventually(
            lambda fan_id=fan_id: stack.outgoing_by_platform_id(creator, fan_id),
            lambda found: (
                [m.delivery_status for m in found if m.text == "My weekend set is here"]
                == [crm_pb2.DELIVERY_STATUS_UNSENT]
            ),
        )
    kept = await stack.outgoing_by_platform_id(creator, spent.platform_fan_id)
    assert [m.delivery_status for m in kept] == [crm_pb2.DELIVERY_STATUS_SENT]
    for fan_id in reached:
        chat = chain.simulator.platform.data.messages.get(int(fan_id), [])
        assert buyer["queue_id"] not in {m.queue_id for m in chat}
    stored = await stack.stub.GetCampaign(
        pb.GetCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
    )
    assert stored.HasField("unsent_at")
    again = await rpc_error(
        stack.stub.UnsendCampaign(
            pb.UnsendCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
        )
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(again).reason == "NOTHING_TO_UNSEND"
