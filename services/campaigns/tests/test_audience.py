"""The audience: a CRM list or saved segment resolved into a snapshot when the campaign is
scheduled, the exclusions applied by the service itself, the holdout drawn once from the
recorded seed (and never sent to), and the per-fan automation budget honoured."""

from __future__ import annotations

import uuid

import grpc

from huntaze.auth.v1 import auth_pb2
from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze.crm.v1 import crm_pb2
from huntaze_campaigns.models import Campaign
from huntaze_campaigns.service import draw
from huntaze_kit.rich_status import from_rpc_error

from .conftest import SERVICE_SECRET, Stack, bearer, rpc_error


async def test_a_list_is_resolved_and_the_exclusions_leave_out_whom_they_name(
    stack: Stack,
) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 6)
    list_id = await stack.static_list(creator, fans)
    automated, talking, *others = fans
    # An automation wrote to one fan an hour ago; the creator is talking to another.
    issued = await stack.auth_stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            service_name="campaigns", service_secret=SERVICE_SECRET, creator_id=creator.id
        )
    )
    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(
            fan_id=automated.id,
            text="An earlier offer",
            idempotency_key=f"other:{uuid.uuid4()}",
            sender_kind=crm_pb2.SENDER_KIND_AUTOMATION,
        ),
        metadata=bearer(issued.access_token),
    )
    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(
            fan_id=talking.id, text="how are you?", idempotency_key=f"me:{uuid.uuid4()}"
        ),
        metadata=creator.auth,
    )
    campaign = await stack.create(
        creator,
        list_id=list_id,
        exclusions=pb.Exclusions(automated_within_hours=24, human_within_hours=6),
        variants=[pb.Variant(key="A", text="Hey {name}, new set today", price_cents=900)],
    )
    assert campaign.status == pb.CAMPAIGN_STATUS_DRAFT
    scheduled = await stack.schedule(creator, campaign.id)
    assert scheduled.audience_count == 4
    assert scheduled.excluded_count == 2
    assert {str(r.fan_id) for r in await stack.recipients(campaign.id)} == {f.id for f in others}

    await stack.settled(campaign.id)
    for fan in others:
        [message] = await stack.outgoing(creator, fan)
        assert (
            message.text == "Hey Fan" + fan.name.split()[0].removeprefix("Fan") + ", new set today"
        )
        assert message.price_cents == 900
        assert message.sender_kind == crm_pb2.SENDER_KIND_AUTOMATION
    assert len(await stack.outgoing(creator, automated)) == 1  # the earlier offer only
    assert len(await stack.outgoing(creator, talking)) == 1


async def test_a_saved_segment_is_read_when_the_campaign_is_scheduled(stack: Stack) -> None:
    creator = await stack.sign_up()
    vip = await stack.fans(creator, 3, tags=["vip"])
    await stack.fans(creator, 2, tags=["new"])
    segment = await stack.crm_stub.CreateFanList(
        crm_pb2.CreateFanListRequest(
            name="VIPs",
            kind=crm_pb2.FAN_LIST_KIND_DYNAMIC,
            segment=crm_pb2.SegmentFilter(tags_any=["vip"]),
        ),
        metadata=creator.auth,
    )
    campaign = await stack.create(creator, list_id=segment.id)
    scheduled = await stack.schedule(creator, campaign.id)
    assert scheduled.audience_count == 3
    assert {str(r.fan_id) for r in await stack.recipients(campaign.id)} == {f.id for f in vip}


async def test_holdout_fans_never_receive_the_message(stack: Stack) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 20)
    list_id = await stack.static_list(creator, fans)
    campaign = await stack.create(creator, list_id=list_id, holdout_percent=25)
    scheduled = await stack.schedule(creator, campaign.id)
    assert scheduled.holdout_count == 5
    recipients = await stack.recipients(campaign.id)
    held = {str(r.fan_id) for r in recipients if r.holdout}
    assert len(held) == 5
    assert all(r.variant == "" for r in recipients if r.holdout)

    sends = await stack.settled(campaign.id)
    assert {str(s.fan_id) for s in sends} == {f.id for f in fans} - held
    for fan in fans:
        assert len(await stack.outgoing(creator, fan)) == (0 if fan.id in held else 1)

    # The draw is the recorded seed's: told again, it is the same.
    async with stack.sessions() as session:
        stored = await session.get(Campaign, uuid.UUID(campaign.id))
    assert stored is not None
    again = draw([(uuid.UUID(f.id), f.platform_fan_id, f.name) for f in fans], campaign=stored)
    assert {str(f.fan_id) for f in again if f.holdout} == held


async def test_variants_split_the_audience_by_weight(stack: Stack) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 12)
    list_id = await stack.static_list(creator, fans)
    campaign = await stack.create(
        creator,
        list_id=list_id,
        variants=[
            pb.Variant(key="A", text="Offer A", price_cents=500),
            pb.Variant(key="B", text="Offer B", price_cents=1500, weight=2),
        ],
    )
    await stack.schedule(creator, campaign.id)
    sends = await stack.settled(campaign.id)
    by_variant = {s.fan_id: s.variant for s in sends}
    assert set(by_variant.values()) <= {"A", "B"}
    for fan in fans:
        [message] = await stack.outgoing(creator, fan)
        variant = by_variant[uuid.UUID(fan.id)]
        assert (message.text, message.price_cents) == (
            ("Offer A", 500) if variant == "A" else ("Offer B", 1500)
        )


async def test_a_send_past_the_automation_budget_is_skipped_with_the_reason(
    stack: Stack,
) -> None:
    creator = await stack.sign_up()
    await stack.crm_stub.UpdateAutomationBudget(
        crm_pb2.UpdateAutomationBudgetRequest(
            budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=1)
        ),
        metadata=creator.auth,
    )
    fans = await stack.fans(creator, 3)
    list_id = await stack.static_list(creator, fans)
    first = await stack.create(creator, list_id=list_id)
    await stack.schedule(creator, first.id)
    await stack.settled(first.id)
    second = await stack.create(
        creator, list_id=list_id, variants=[pb.Variant(key="A", text="Again")]
    )
    await stack.schedule(creator, second.id)
    sends = await stack.settled(second.id)
    assert {(s.state, s.reason) for s in sends} == {("skipped", "automation_budget")}
    metrics = await stack.metrics(creator, second.id)
    assert metrics.total.skipped_budget == 3
    assert metrics.total.recipients == 3
    for fan in fans:
        assert [m.text for m in await stack.outgoing(creator, fan)] == [
            "Hey Fan" + fan.name[3:4] + "!"
        ]


async def test_bad_campaigns_are_refused_with_every_reason(stack: Stack) -> None:
    creator = await stack.sign_up()
    error = await rpc_error(
        stack.stub.CreateCampaign(
            pb.CreateCampaignRequest(
                name="x",
                kind=pb.CAMPAIGN_KIND_ONE_OFF,
                variants=[pb.Variant(key="A", text="Hi {nickname}")],
                timezone="Mars/Olympus",
            ),
            metadata=creator.auth,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing = await rpc_error(
        stack.stub.GetCampaign(
            pb.GetCampaignRequest(campaign_id=str(uuid.uuid4())), metadata=creator.auth
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    other = await stack.sign_up()
    fans = await stack.fans(other, 1)
    foreign_list = await stack.static_list(other, fans)
    before = await stack.stub.ListCampaigns(pb.ListCampaignsRequest(), metadata=creator.auth)
    refused = await rpc_error(stack.create(creator, list_id=foreign_list))
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    assert from_rpc_error(refused).reason == "LIST_NOT_FOUND"
    after = await stack.stub.ListCampaigns(pb.ListCampaignsRequest(), metadata=creator.auth)
    assert len(after.campaigns) == len(before.campaigns)
    # Nor may an update point a draft at it: refused, and the draft keeps its own list.
    own_list = await stack.static_list(creator, await stack.fans(creator, 1))
    campaign = await stack.create(creator, list_id=own_list)
    refused = await rpc_error(
        stack.stub.UpdateCampaign(
            pb.UpdateCampaignRequest(campaign_id=campaign.id, list_id=foreign_list, name="Renamed"),
            metadata=creator.auth,
        )
    )
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    stored = await stack.stub.GetCampaign(
        pb.GetCampaignRequest(campaign_id=campaign.id), metadata=creator.auth
    )
    assert (stored.list_id, stored.name) == (own_list, campaign.name)
    assert stored.status == pb.CAMPAIGN_STATUS_DRAFT


async def test_the_crm_resolves_an_audience_page_by_page_for_the_campaigns_service(
    stack: Stack,
) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 7)
    list_id = await stack.static_list(creator, fans[:5])
    issued = await stack.auth_stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            service_name="campaigns", service_secret=SERVICE_SECRET, creator_id=creator.id
        )
    )
    service = bearer(issued.access_token)
    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(
            fan_id=fans[0].id,
            text="automated",
            idempotency_key=f"auto:{uuid.uuid4()}",
            sender_kind=crm_pb2.SENDER_KIND_AUTOMATION,
        ),
        metadata=service,
    )
    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(fan_id=fans[1].id, text="by hand", idempotency_key="hand"),
        metadata=creator.auth,
    )
    seen: list[crm_pb2.AudienceFan] = []
    start_after = ""
    while True:
        page = await stack.crm_stub.ResolveAudience(
            crm_pb2.ResolveAudienceRequest(
                list_id=list_id, start_after=start_after, limit=2, recent_sends_within_hours=1
            ),
            metadata=service,
        )
        assert len(page.fans) <= 2
        seen += page.fans
        if not page.next_start_after:
            break
        start_after = page.next_start_after
    assert [f.fan_id for f in seen] == sorted(f.id for f in fans[:5])
    by_id = {f.fan_id: f for f in seen}
    assert by_id[fans[0].id].HasField("last_automated_at")
    assert not by_id[fans[0].id].HasField("last_human_at")
    assert by_id[fans[1].id].HasField("last_human_at")
    assert not by_id[fans[1].id].HasField("last_automated_at")
    assert by_id[fans[2].id].platform_fan_id == fans[2].platform_fan_id
    assert by_id[fans[2].id].display_name == fans[2].name
    # Another creator's list is not found, as if it did not exist.
    other = await stack.sign_up()
    foreign = await stack.static_list(other, await stack.fans(other, 1))
    error = await rpc_error(
        stack.crm_stub.ResolveAudience(
            crm_pb2.ResolveAudienceRequest(list_id=foreign), metadata=service
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_another_creators_campaign_and_template_are_not_found_and_unchanged(
    stack: Stack,
) -> None:
    owner = await stack.sign_up()
    fans = await stack.fans(owner, 2)
    campaign = await stack.create(owner, list_id=await stack.static_list(owner, fans))
    templates = await stack.stub.ListTemplates(pb.ListTemplatesRequest(), metadata=owner.auth)
    template = templates.templates[0]
    intruder = await stack.sign_up()
    by_campaign = (
        stack.stub.GetCampaign(
            pb.GetCampaignRequest(campaign_id=campaign.id), metadata=intruder.auth
        ),
        stack.stub.UpdateCampaign(
            pb.UpdateCampaignRequest(campaign_id=campaign.id, name="mine"), metadata=intruder.auth
        ),
        stack.stub.ScheduleCampaign(
            pb.ScheduleCampaignRequest(campaign_id=campaign.id), metadata=intruder.auth
        ),
        stack.stub.PauseCampaign(
            pb.PauseCampaignRequest(campaign_id=campaign.id), metadata=intruder.auth
        ),
        stack.stub.ResumeCampaign(
            pb.ResumeCampaignRequest(campaign_id=campaign.id), metadata=intruder.auth
        ),
        stack.stub.CancelCampaign(
            pb.CancelCampaignRequest(campaign_id=campaign.id), metadata=intruder.auth
        ),
        stack.stub.GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=campaign.id), metadata=intruder.auth
        ),
        stack.stub.DeleteCampaign(
            pb.DeleteCampaignRequest(campaign_id=campaign.id), metadata=intruder.auth
        ),
        stack.stub.UpdateTemplate(
            pb.UpdateTemplateRequest(template_id=template.id, name="mine"), metadata=intruder.auth
        ),
    )
    for call in by_campaign:
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
    unchanged = await stack.stub.GetCampaign(
        pb.GetCampaignRequest(campaign_id=campaign.id), metadata=owner.auth
    )
    assert unchanged == campaign
    listed = await stack.stub.ListCampaigns(pb.ListCampaignsRequest(), metadata=intruder.auth)
    assert list(listed.campaigns) == []
    again = await stack.stub.ListTemplates(pb.ListTemplatesRequest(), metadata=owner.auth)
    assert next(t for t in again.templates if t.id == template.id).name == template.name


async def test_the_crm_records_a_mass_message_against_each_fans_budget_once(
    stack: Stack,
) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 3)
    other = await stack.sign_up()
    foreign = (await stack.fans(other, 1))[0]
    await stack.crm_stub.UpdateAutomationBudget(
        crm_pb2.UpdateAutomationBudgetRequest(
            budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=1)
        ),
        metadata=creator.auth,
    )
    issued = await stack.auth_stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            service_name="campaigns", service_secret=SERVICE_SECRET, creator_id=creator.id
        )
    )
    service = bearer(issued.access_token)
    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(
            fan_id=fans[0].id,
            text="automated",
            idempotency_key=f"auto:{uuid.uuid4()}",
            sender_kind=crm_pb2.SENDER_KIND_AUTOMATION,
        ),
        metadata=service,
    )
    request = crm_pb2.RecordMassMessageRequest(
        fan_ids=[fans[2].id, fans[0].id, foreign.id, fans[1].id],
        text="Everyone gets this",
        idempotency_key=f"campaign:{uuid.uuid4()}:mass",
    )
    first = await stack.crm_stub.RecordMassMessage(request, metadata=service)
    answers = [(r.fan_id, bool(r.message_id), r.refused_reason) for r in first.recipients]
    assert answers == [
        (fans[2].id, True, ""),
        (fans[0].id, False, "AUTOMATION_BUDGET_EXHAUSTED"),
        (foreign.id, False, "FAN_NOT_FOUND"),
        (fans[1].id, True, ""),
    ]
    assert first.recipients[0].platform_fan_id == fans[2].platform_fan_id
    # The same key again (a retry after a crash): the same messages, nothing recorded twice.
    again = await stack.crm_stub.RecordMassMessage(request, metadata=service)
    assert list(again.recipients) == list(first.recipients)
    for fan in fans[1:]:
        outgoing = await stack.outgoing(creator, fan)
        assert [(m.text, m.delivery_status, m.sender_kind) for m in outgoing] == [
            (
                "Everyone gets this",
                crm_pb2.DELIVERY_STATUS_SENDING,
                crm_pb2.SENDER_KIND_AUTOMATION,
            )
        ]
    # Now those fans' budgets are spent too; and the creator may not record one themselves.
    later = await stack.crm_stub.RecordMassMessage(
        crm_pb2.RecordMassMessageRequest(
            fan_ids=[fans[1].id], text="More", idempotency_key=f"campaign:{uuid.uuid4()}:mass"
        ),
        metadata=service,
    )
    assert later.recipients[0].refused_reason == "AUTOMATION_BUDGET_EXHAUSTED"
    refused = await rpc_error(stack.crm_stub.RecordMassMessage(request, metadata=creator.auth))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
