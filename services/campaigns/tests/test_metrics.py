"""Measurement: delivery outcomes and purchases (as the worker reports them, through the CRM)
counted per campaign and variant, the lift over the holdout and the variants' difference with
their confidence intervals, and "not significant" said when it is not; templates with their
past results."""

from __future__ import annotations

import uuid

import pytest

from huntaze.campaigns.v1 import campaigns_pb2 as pb
from huntaze_campaigns.measurement import compare
from huntaze_devstack.testing import eventually

from .conftest import Stack


def test_a_clear_difference_is_significant_and_a_small_one_is_not() -> None:
    clear = compare("B - A", converted_a=300, total_a=1000, converted_b=100, total_b=1000)
    assert clear is not None
    assert clear.significant
    assert clear.low > 0.15
    assert clear.verdict.startswith("Significant")
    small = compare("B - A", converted_a=3, total_a=10, converted_b=2, total_b=10)
    assert small is not None
    assert not small.significant
    assert small.low < 0 < small.high
    assert small.verdict.startswith("Not significant")
    assert compare("x", converted_a=1, total_a=0, converted_b=0, total_b=5) is None


async def test_metrics_and_lift_from_delivered_messages_and_purchases(stack: Stack) -> None:
    creator = await stack.sign_up()
    fans = await stack.fans(creator, 20)
    list_id = await stack.static_list(creator, fans)
    campaign = await stack.create(
        creator,
        list_id=list_id,
        holdout_percent=20,
        variants=[
            pb.Variant(key="A", text="Unlock A", price_cents=1000),
            pb.Variant(key="B", text="Unlock B", price_cents=2000),
        ],
    )
    await stack.schedule(creator, campaign.id)
    sends = await stack.settled(campaign.id)
    assert len(sends) == 16
    # The platform accepts every copy; two fans of each variant buy theirs.
    for send in sends:
        await stack.delivered(creator, send, platform_message_id=f"of-{uuid.uuid4().int % 10**12}")
    sends = await stack.settled(campaign.id, states=("queued", "requested"))
    assert {s.state for s in sends} == {"sent"}
    by_fan = {f.id: f for f in fans}
    buyers = [s for s in sends if s.variant == "A"][:2] + [s for s in sends if s.variant == "B"][:2]
    for send in buyers:
        price = 1000 if send.variant == "A" else 2000
        await stack.unlocks(
            creator,
            by_fan[str(send.fan_id)],
            cents=price,
            platform_message_id=send.platform_message_id,
        )
    # One fan of the holdout tips anyway (counted for the lift, not as the campaign's revenue).
    held = [r for r in await stack.recipients(campaign.id) if r.holdout]
    await stack.unlocks(creator, by_fan[str(held[0].fan_id)], cents=300)

    metrics = await eventually(
        lambda: stack.metrics(creator, campaign.id),
        lambda found: found.total.purchases == 4 and found.holdout_converted == 1,
    )
    assert metrics.audience == 20
    assert metrics.holdout == 4
    assert metrics.total.recipients == 16
    assert metrics.total.sent == 16
    assert metrics.total.revenue_cents == 6000
    assert metrics.total.converted == 4
    assert metrics.total.conversion == pytest.approx(0.25)
    assert metrics.total.revenue_per_recipient_cents == pytest.approx(6000 / 16)
    assert metrics.holdout_conversion == pytest.approx(0.25)
    variants = {v.key: v for v in metrics.variants}
    assert variants["A"].revenue_cents == 2000
    assert variants["B"].revenue_cents == 4000
    assert variants["A"].recipients + variants["B"].recipients == 16
    assert metrics.lift.label == "sent - holdout"
    assert metrics.lift.difference == pytest.approx(0.0)
    assert not metrics.lift.significant
    assert metrics.lift.interval.low < 0 < metrics.lift.interval.high
    assert "Not significant" in metrics.lift.verdict
    [versus] = metrics.variant_comparisons
    assert versus.label == "B - A"
    assert not versus.significant

    # The buyers are left out of a campaign that excludes who bought this one.
    follow_up = await stack.create(
        creator,
        list_id=list_id,
        exclusions=pb.Exclusions(bought_in_campaign_ids=[campaign.id]),
    )
    scheduled = await stack.schedule(creator, follow_up.id)
    assert scheduled.excluded_count == 4
    assert {str(r.fan_id) for r in await stack.recipients(follow_up.id)}.isdisjoint(
        {str(s.fan_id) for s in buyers}
    )


async def test_templates_are_seeded_editable_and_show_their_results(stack: Stack) -> None:
    creator = await stack.sign_up()
    listed = await stack.stub.ListTemplates(pb.ListTemplatesRequest(), metadata=creator.auth)
    niches = {t.niche for t in listed.templates}
    assert niches == {
        pb.NICHE_GENERAL,
        pb.NICHE_FITNESS,
        pb.NICHE_GAMING,
        pb.NICHE_ADULT,
        pb.NICHE_FASHION,
    }
    assert all("name" in t.variables for t in listed.templates)
    again = await stack.stub.ListTemplates(pb.ListTemplatesRequest(), metadata=creator.auth)
    assert len(again.templates) == len(listed.templates)  # seeded once
    fitness = await stack.stub.ListTemplates(
        pb.ListTemplatesRequest(niche=pb.NICHE_FITNESS), metadata=creator.auth
    )
    plan = next(t for t in fitness.templates if t.price_cents > 0)
    edited = await stack.stub.UpdateTemplate(
        pb.UpdateTemplateRequest(template_id=plan.id, text="{name}, the plan is yours 💪"),
        metadata=creator.auth,
    )
    assert edited.text == "{name}, the plan is yours 💪"
    assert edited.price_cents == plan.price_cents

    fans = await stack.fans(creator, 2)
    list_id = await stack.static_list(creator, fans)
    campaign = await stack.create(creator, list_id=list_id, template_id=plan.id, variants=[])
    assert campaign.variants[0].text == edited.text
    await stack.schedule(creator, campaign.id)
    sends = await stack.settled(campaign.id)
    for send in sends:
        await stack.delivered(creator, send, platform_message_id=f"of-{uuid.uuid4().int % 10**12}")
    sends = await stack.settled(campaign.id, states=("queued", "requested"))
    buyer = next(f for f in fans if f.id == str(sends[0].fan_id))
    await stack.unlocks(
        creator, buyer, cents=plan.price_cents, platform_message_id=sends[0].platform_message_id
    )

    async def results() -> pb.TemplateResults:
        found = await stack.stub.ListTemplates(
            pb.ListTemplatesRequest(niche=pb.NICHE_FITNESS), metadata=creator.auth
        )
        return next(t.results for t in found.templates if t.id == plan.id)

    shown = await eventually(results, lambda r: r.purchases == 1)
    assert shown.campaigns == 1
    assert shown.recipients == 2
    assert shown.revenue_cents == plan.price_cents
    assert shown.conversion == pytest.approx(0.5)
