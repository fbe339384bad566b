"""The database-backed scheduler: a campaign fires at its time in the creator's time zone (on a
clock the test moves), pause, resume and cancel, sequences that stop for a fan who replies or
buys, welcome messages for new subscribers, and a restart mid-dispatch that sends nobody twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import grpc
from sqlalchemy import select, update

from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_campaigns.models import Send
from huntaze_devstack.testing import eventually

from .conftest import Stack, rpc_error


async def test_a_scheduled_campaign_fires_at_its_time_in_the_creators_time_zone(
    stack: Stack,
) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 3)
    list_id = await stack.static_list(creator, fans)
    campaign = await stack.create(creator, list_id=list_id, timezone="Asia/Tokyo")
    due = (stack.clock() + timedelta(hours=3)).astimezone(ZoneInfo("Asia/Tokyo"))
    local = due.replace(tzinfo=None, microsecond=0).isoformat(timespec="minutes")
    scheduled = await stack.schedule(creator, campaign.id, send_at=local)
    assert scheduled.status == pb.CAMPAIGN_STATUS_SCHEDULED
    fires_at = scheduled.send_at.ToDatetime(tzinfo=UTC)
    assert fires_at == due.replace(second=0, microsecond=0).astimezone(UTC)

    await asyncio.sleep(0.5)  # the scheduler polls every 0.1 s: nothing is due yet
    assert {s.state for s in await stack.sends(campaign.id)} == {"queued"}
    for fan in fans:
        assert await stack.outgoing(creator, fan) == []

    stack.clock.advance(hours=3, minutes=1)
    stack.wake()
    sends = await stack.settled(campaign.id)
    assert {s.state for s in sends} == {"requested"}
    for fan in fans:
        assert len(await stack.outgoing(creator, fan)) == 1
    done = await eventually(
        lambda: stack.stub.GetCampaign(
            pb.GetCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
        ),
        lambda found: found.status == pb.CAMPAIGN_STATUS_COMPLETED,
    )
    assert done.completed_at.seconds > 0


async def test_pause_resume_and_cancel(stack: Stack) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 4)
    list_id = await stack.static_list(creator, fans)
    campaign = await stack.create(creator, list_id=list_id)
    start = (stack.clock() + timedelta(hours=1)).isoformat()
    await stack.schedule(creator, campaign.id, send_at=start)
    paused = await stack.stub.PauseCampaign(
        pb.PauseCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
    )
    assert paused.status == pb.CAMPAIGN_STATUS_PAUSED
    stack.clock.advance(hours=2)
    stack.wake()
    await asyncio.sleep(0.5)
    assert {s.state for s in await stack.sends(campaign.id)} == {"queued"}  # paused: waits

    resumed = await stack.stub.ResumeCampaign(
        pb.ResumeCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
    )
    assert resumed.status == pb.CAMPAIGN_STATUS_RUNNING
    stack.wake()
    await stack.settled(campaign.id)

    other = await stack.create(creator, list_id=list_id, variants=[pb.Variant(key="A", text="B")])
    await stack.schedule(creator, other.id, send_at=(stack.clock() + timedelta(days=1)).isoformat())
    cancelled = await stack.stub.CancelCampaign(
        pb.CancelCampaignRequest(campaign_id=other.id), metadata=creator.auth
    )
    assert cancelled.status == pb.CAMPAIGN_STATUS_CANCELLED
    assert {(s.state, s.reason) for s in await stack.sends(other.id)} == {
        ("cancelled", "campaign_cancelled")
    }
    again = await rpc_error(
        stack.stub.ResumeCampaign(
            pb.ResumeCampaignRequest(campaign_id=other.id), metadata=creator.auth
        )
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    stack.clock.advance(days=2)
    stack.wake()
    await asyncio.sleep(0.5)
    for fan in fans:
        assert [m.text for m in await stack.outgoing(creator, fan)] == [
            f"Hey {fan.name.split()[0]}!"
        ]


async def test_a_sequence_stops_for_a_fan_who_replies_or_buys(stack: Stack) -> None:
    creator = await stack.sign_up()
    replies, buys, silent = await stack.fans(creator, 3)
    list_id = await stack.static_list(creator, [replies, buys, silent])
    campaign = await stack.create(
        creator,
        kind=pb.CAMPAIGN_KIND_SEQUENCE,
        list_id=list_id,
        variants=[pb.Variant(key="A", text="Step one")],
        steps=[
            pb.Step(delay_minutes=60, text="Step two"),
            pb.Step(delay_minutes=60, text="Step three", price_cents=1200),
        ],
    )
    await stack.schedule(creator, campaign.id)
    await eventually(
        lambda: stack.sends(campaign.id),
        lambda rows: sum(1 for r in rows if r.step == 0 and r.state == "requested") == 3,
    )
    # One fan writes back, another tips, before the first follow-up is due.
    await stack.platform.fan_writes(
        creator,
        platform_message_id=f"in-{uuid.uuid4().hex}",
        text="hey!",
        platform_fan_id=replies.platform_fan_id,
        display_name=replies.name,
    )
    await stack.unlocks(creator, buys, cents=500)
    await eventually(
        lambda: stack.recipients(campaign.id),
        lambda rows: {r.stop_reason for r in rows if r.stopped_at} == {"replied", "bought"},
    )
    stack.clock.advance(minutes=61)
    stack.wake()
    await eventually(
        lambda: stack.sends(campaign.id),
        lambda rows: any(r.step == 1 and r.state == "requested" for r in rows),
    )
    stack.clock.advance(minutes=61)
    stack.wake()
    sends = await stack.settled(campaign.id)
    states = {(str(s.fan_id), s.step): (s.state, s.reason) for s in sends}
    for fan, reason in ((replies, "replied"), (buys, "bought")):
        assert states[(fan.id, 1)] == ("stopped", reason)
        assert states[(fan.id, 2)] == ("stopped", reason)
        assert [m.text for m in await stack.outgoing(creator, fan)] == ["Step one"]
    assert [m.text for m in reversed(await stack.outgoing(creator, silent))] == [
        "Step one",
        "Step two",
        "Step three",
    ]
    metrics = await stack.metrics(creator, campaign.id)
    assert metrics.total.stopped == 2


async def test_a_welcome_campaign_greets_each_new_subscriber_once(stack: Stack) -> None:
    creator = await stack.sign_up()
    campaign = await stack.create(
        creator,
        kind=pb.CAMPAIGN_KIND_WELCOME,
        variants=[pb.Variant(key="A", text="Welcome {name}! 💕")],
    )
    scheduled = await stack.schedule(creator, campaign.id)
    assert scheduled.status == pb.CAMPAIGN_STATUS_SCHEDULED
    synced = of_events.FanSynced(
        creator_id=creator.id,
        fan=of_events.FanProfile(platform_fan_id="777001", display_name="Nina Moon"),
        subscription_state=of_events.SUBSCRIPTION_STATE_ACTIVE,
    )
    synced.subscribed_at.FromDatetime(stack.clock() + timedelta(seconds=1))
    for _ in range(2):  # seen twice by the sync: greeted once
        await stack.platform.publish(
            "onlyfans.fan.synced", synced, creator_id=creator.id, aggregate_id="777001"
        )
    [recipient] = await eventually(
        lambda: stack.recipients(campaign.id), lambda rows: len(rows) == 1
    )
    stack.wake()
    await stack.settled(campaign.id)
    conversations = await eventually(
        lambda: stack.outgoing_by_platform_id(creator, "777001"), lambda found: len(found) == 1
    )
    assert conversations[0].text == "Welcome Nina! 💕"
    running = await stack.stub.GetCampaign(
        pb.GetCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
    )
    assert running.status == pb.CAMPAIGN_STATUS_RUNNING
    assert running.audience_count == 1
    assert str(recipient.fan_id)


async def test_a_restart_mid_dispatch_sends_each_fan_one_message(stack: Stack) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 30)
    list_id = await stack.static_list(creator, fans)
    campaign = await stack.create(creator, list_id=list_id)
    start = (stack.clock() + timedelta(minutes=5)).isoformat()
    await stack.schedule(creator, campaign.id, send_at=start)
    stack.clock.advance(minutes=6)
    stack.wake()
    # Stopped as soon as some sends were made: the rest were claimed, or not yet.
    await eventually(
        lambda: stack.sends(campaign.id),
        lambda rows: sum(1 for r in rows if r.state == "requested") >= 3,
        within=30,
    )
    await stack.campaigns.stop()
    # A crash between the CRM's answer and its record: some sends the CRM made are still
    # queued here, and claimed. They are taken again when the lease runs out; the CRM answers
    # the repeated key with the message it made the first time.
    async with stack.sessions() as session:
        lost = await session.execute(
            update(Send)
            .where(
                Send.campaign_id == uuid.UUID(campaign.id),
                Send.fan_id.in_(
                    select(Send.fan_id)
                    .where(Send.campaign_id == uuid.UUID(campaign.id), Send.state == "requested")
                    .limit(3)
                ),
            )
            .values(state="queued", crm_message_id=None, claimed_until=stack.clock())
            .returning(Send.fan_id)
        )
        assert len(lost.all()) == 3
        await session.commit()
    stack.clock.advance(minutes=1)
    await stack.restart_campaigns()
    sends = await stack.settled(campaign.id)
    assert {s.state for s in sends} == {"requested"}
    assert len({s.crm_message_id for s in sends}) == 30
    for fan in fans:
        assert len(await stack.outgoing(creator, fan)) == 1
