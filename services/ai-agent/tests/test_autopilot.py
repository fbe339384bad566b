"""The autopilot with real services and an OpenAI-compatible LLM (the local test server): one
reply and one paid call per message however often it is delivered, a crash retried without
paying twice, a creator's reply cancelling it, guardrails handing off, replies drafted in quiet
hours waiting for their end (on a clock the tests move), and the per-fan budget."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from huntaze.ai.v1 import ai_pb2
from huntaze.ai.v1 import events_pb2 as ai_events
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze_ai_agent.crm_client import CrmClient
from huntaze_ai_agent.prompts import DraftRequest, FanProfile, build_prompt
from huntaze_ai_agent.service import Timing
from huntaze_devstack.embedded import free_port
from huntaze_devstack.testing import eventually
from huntaze_kit.grpc_client import create_channel

from .conftest import Creator, FakeOpenAI, Stack, next_of

AUTOPILOT_WAIT = 3.0


async def crm_message_event(stack: Stack, creator: Creator) -> crm_events.MessageReceived:
    """The CRM's `crm.message.received` for the creator's only inbound message."""
    conversations = await eventually(
        lambda: stack.crm_stub.ListConversations(
            crm_pb2.ListConversationsRequest(), metadata=creator.auth
        ),
        lambda found: len(found.conversations) == 1,
    )
    [conversation] = conversations.conversations
    [message] = [
        m
        for m in await stack.messages(creator, conversation.id)
        if m.direction == crm_pb2.MESSAGE_DIRECTION_IN
    ]
    event = crm_events.MessageReceived(creator_id=creator.id, message=message)
    event.occurred_at.GetCurrentTime()
    return event


@pytest.fixture
def agent_overrides(fake_openai: FakeOpenAI) -> dict[str, Any]:
    """The agent drafts with an OpenAI-compatible LLM (the local test server)."""
    return {
        "ai_llm_provider": "compatible",
        "ai_llm_base_url": f"{fake_openai.url}/v1",
        "ai_llm_model": "house-model",
        "ai_llm_max_retries": 0,
    }


async def test_one_message_delivered_three_times_makes_one_llm_call_and_one_reply(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer = lambda body: "Missed you too 💕"
    creator = await stack.sign_up()
    await stack.configure(creator, mode="autopilot")
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="missed you")
    event = await crm_message_event(stack, creator)

    # The same event redelivered (same event id) and published again (new event ids).
    same_id = "0b4b4c56-68c9-4a4e-9c3a-5f1f2a6d4e01"
    for event_id, msg_id in ((same_id, "copy-1"), (same_id, "copy-2"), (None, None), (None, None)):
        await stack.platform.publish(
            "crm.message.received",
            event,
            creator_id=creator.id,
            aggregate_id=event.message.conversation_id,
            aggregate_type="conversation",
            event_id=event_id,
            msg_id=msg_id,
        )

    [sent] = await eventually(
        lambda: stack.suggestions(creator),
        lambda found: [s.status for s in found] == [ai_pb2.SUGGESTION_STATUS_SENT],
    )
    await asyncio.sleep(1.0)  # room for a second draft or send, if there were to be one
    assert len(fake_openai.requests) == 1
    assert len(await stack.suggestions(creator)) == 1
    [reply] = await stack.outgoing(creator, sent.conversation_id)
    assert reply.text == "Missed you too 💕"
    assert reply.sender_kind == crm_pb2.SENDER_KIND_AI
    assert reply.idempotency_key == f"ai:{event.message.id}"
    audit = await stack.ai_stub.ListAuditEntries(
        ai_pb2.ListAuditEntriesRequest(conversation_id=sent.conversation_id),
        metadata=creator.auth,
    )
    [entry] = audit.entries
    assert (entry.approved_by, entry.provider, entry.model) == (
        "autopilot",
        "compatible",
        "house-model",
    )
    assert (entry.input_tokens, entry.output_tokens) == (120, 30)
    assert entry.cost_micros == 120 * 2.5 + 30 * 10


async def test_the_llm_reads_each_conversation_of_a_batch_from_the_crm(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The conversations of a batch's drafts are read in one CRM call: each prompt carries its
    own conversation before the fan's message, oldest first, and not the message itself."""
    creator = await stack.sign_up()
    assert stack.agent.drafting is not None
    await stack.agent.drafting.stop(0)  # the batch is drafted below, all at once
    for fan in ("ann", "bea"):
        await stack.platform.fan_writes(
            creator, platform_message_id=f"{fan}-1", text=f"hello from {fan}", platform_fan_id=fan
        )
    await eventually(lambda: stack.suggestions(creator), lambda found: len(found) == 2)
    conversations = await stack.crm_stub.ListConversations(
        crm_pb2.ListConversationsRequest(), metadata=creator.auth
    )
    for conversation in conversations.conversations:
        await stack.crm_stub.SendMessage(
            crm_pb2.SendMessageRequest(
                conversation_id=conversation.id,
                text=f"re: {conversation.last_message_preview}",
                idempotency_key=f"reply-{conversation.id}",
            ),
            metadata=creator.auth,
        )
    service = stack.agent.service
    assert service is not None
    await eventually(  # the creator's replies cancel the first two
        lambda: stack.suggestions(creator),
        lambda found: {s.status for s in found} == {ai_pb2.SUGGESTION_STATUS_CANCELLED},
    )
    for fan in ("ann", "bea"):
        await stack.platform.fan_writes(
            creator, platform_message_id=f"{fan}-2", text=f"{fan} again", platform_fan_id=fan
        )
    await eventually(lambda: stack.suggestions(creator), lambda found: len(found) == 4)
    batch = await service.claim_drafts(limit=10)
    assert len(batch) == 2

    for work in await service.draft_batch(batch):
        await work

    sent = {r.fan_data["fan_message"]: r.fan_data["conversation"] for r in fake_openai.requests}
    assert sent == {
        f"{fan} again": [
            {"from": "fan", "text": f"hello from {fan}"},
            {"from": "creator", "text": f"re: hello from {fan}"},
        ]
        for fan in ("ann", "bea")
    }


async def test_a_batch_the_crm_cannot_give_the_context_of_is_retried_soon(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The CRM does not answer: nothing is paid for, and the batch is claimed again after a
    short retry rather than once its lease runs out."""
    creator = await stack.sign_up()
    service = stack.agent.service
    assert service is not None
    assert stack.agent.drafting is not None
    await stack.agent.drafting.stop(0)  # no worker: this test plays the workers itself
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hi")
    await eventually(lambda: stack.suggestions(creator), lambda found: len(found) == 1)
    batch = await service.claim_drafts(limit=5)
    assert len(batch) == 1
    crm = service._crm
    # The CRM's address with nobody listening (the real client, refused at connect).
    service._crm = CrmClient(create_channel(f"127.0.0.1:{free_port()}"), tokens=crm._tokens)
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await service.draft_batch(batch)
    finally:
        service._crm = crm

    assert await service.claim_drafts(limit=5) == []  # held for the retry, briefly
    retried = datetime.now(UTC) + service.timing.draft_retry + timedelta(seconds=1)
    service.clock = lambda: retried
    [again] = await service.claim_drafts(limit=5)
    service.clock = lambda: datetime.now(UTC)
    for work in await service.draft_batch([again]):
        await work
    [suggestion] = await stack.suggestions(creator)
    assert suggestion.status == ai_pb2.SUGGESTION_STATUS_SUGGESTED
    assert len(fake_openai.requests) == 1


async def test_a_retry_after_a_crash_reuses_the_paid_answer(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The LLM answered, then the worker died before the suggestion was stored: the next
    worker finds the answer in the ledger and pays nothing more."""
    creator = await stack.sign_up()
    service = stack.agent.service
    assert service is not None
    assert stack.agent.drafting is not None
    await stack.agent.drafting.stop(0)  # no worker: this test plays the workers itself
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hi")
    [claimed] = await eventually(
        lambda: service.claim_pending(limit=5), lambda rows: len(rows) == 1
    )

    fake_openai.answer = lambda body: "Hey you, first answer"

    configuration = await service.get_configuration(creator_id=claimed.creator_id)
    request = DraftRequest(
        configuration=configuration, fan=FanProfile(fan_id=str(claimed.fan_id)), incoming="hi"
    )
    paid = await service._attempt_once(claimed, request, build_prompt(request))
    assert paid.completion is not None
    # The crash: the suggestion was never settled; its lease runs out.
    fake_openai.answer = lambda body: "a second, paid-for answer"
    later = datetime.now(UTC) + service.timing.lease + timedelta(seconds=1)
    service.clock = lambda: later
    [again] = await service.claim_pending(limit=5)
    await service.draft(again)

    [suggestion] = await stack.suggestions(creator)
    assert suggestion.text == "Hey you, first answer"
    assert len(fake_openai.requests) == 1


async def test_a_creator_reply_before_the_delay_cancels_the_autopilot(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    creator = await stack.sign_up()
    await stack.configure(creator, mode="autopilot")
    service = stack.agent.service
    assert service is not None
    service.timing = Timing(
        autopilot_min_delay=timedelta(seconds=AUTOPILOT_WAIT),
        autopilot_max_delay=timedelta(seconds=AUTOPILOT_WAIT),
    )
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="you up?")
    [scheduled] = await stack.settled(creator)
    assert scheduled.status == ai_pb2.SUGGESTION_STATUS_SCHEDULED

    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(
            conversation_id=scheduled.conversation_id, text="yes! 🙈", idempotency_key="mine-1"
        ),
        metadata=creator.auth,
    )

    await eventually(
        lambda: stack.ai_stub.GetSuggestion(
            ai_pb2.GetSuggestionRequest(suggestion_id=scheduled.id), metadata=creator.auth
        ),
        lambda s: s.status == ai_pb2.SUGGESTION_STATUS_CANCELLED,
    )
    await asyncio.sleep(AUTOPILOT_WAIT + 0.5)
    assert [m.text for m in await stack.outgoing(creator, scheduled.conversation_id)] == ["yes! 🙈"]


async def test_big_spenders_and_custom_requests_go_to_a_person(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    creator = await stack.sign_up()
    await stack.configure(creator, mode="autopilot", guardrails={"handoff_spend_cents": 10_000})
    inbox = await stack.watch(creator)
    await stack.platform.fan_pays(
        creator, transaction_id="t-1", cents=25_000, platform_fan_id="whale"
    )
    # Purchases and messages are separate consumers of the CRM: the spend is recorded first.
    await eventually(
        lambda: stack.crm_stub.ListFans(crm_pb2.ListFansRequest(), metadata=creator.auth),
        lambda page: [fan.value_cents for fan in page.fans] == [25_000],
    )
    await stack.platform.fan_writes(
        creator, platform_message_id="m-1", text="hey", platform_fan_id="whale"
    )
    first = await next_of(inbox, "ai.handoff_requested")
    await stack.platform.fan_writes(
        creator,
        platform_message_id="m-2",
        text="can you make me a custom video?",
        platform_fan_id="regular",
    )
    second = await next_of(inbox, "ai.handoff_requested")

    assert (first.ai.reason, second.ai.reason) == ("spend_threshold", "custom_request")
    suggestions = await stack.suggestions(creator)
    assert {s.status for s in suggestions} == {ai_pb2.SUGGESTION_STATUS_HANDED_OFF}
    await asyncio.sleep(0.8)
    for suggestion in suggestions:
        assert await stack.outgoing(creator, suggestion.conversation_id) == []
    assert fake_openai.requests == []
    inbox.cancel()


class Clock:
    """The agent's clock, moved by the test."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def quiet_now(stack: Stack, creator: Creator, **fields: Any) -> tuple[Clock, datetime]:
    """The creator on autopilot with quiet hours from an hour ago to an hour from now; the
    agent on a clock the test moves, and when the quiet hours end."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    await stack.configure(
        creator,
        mode="autopilot",
        guardrails={
            "quiet_hours": {
                "start": start.strftime("%H:%M"),
                "end": end.strftime("%H:%M"),
                "timezone": "UTC",
            }
        },
        **fields,
    )
    clock = Clock()
    service = stack.agent.service
    assert service is not None
    service.clock = clock
    return clock, end.replace(second=0, microsecond=0)


async def test_a_reply_drafted_in_quiet_hours_is_sent_when_they_end(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.answer = lambda body: "Morning! Just woke up 😴"
    creator = await stack.sign_up()
    clock, quiet_end = await quiet_now(stack, creator)
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="night night")

    [waiting] = await stack.settled(creator)

    assert waiting.status == ai_pb2.SUGGESTION_STATUS_SCHEDULED
    send_after = waiting.send_after.ToDatetime(tzinfo=UTC)
    assert quiet_end <= send_after <= quiet_end + timedelta(seconds=1)
    await asyncio.sleep(0.8)  # the autopilot polls every 0.1 s: nothing is due yet
    assert await stack.outgoing(creator, waiting.conversation_id) == []

    clock.ahead = send_after - datetime.now(UTC) + timedelta(seconds=1)

    [sent] = await eventually(
        lambda: stack.suggestions(creator),
        lambda found: [s.status for s in found] == [ai_pb2.SUGGESTION_STATUS_SENT],
    )
    [reply] = await stack.outgoing(creator, sent.conversation_id)
    assert reply.text == "Morning! Just woke up 😴"
    assert reply.sender_kind == crm_pb2.SENDER_KIND_AI
    assert len(fake_openai.requests) == 1


async def test_a_creator_reply_in_quiet_hours_cancels_the_waiting_reply(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    creator = await stack.sign_up()
    clock, _ = await quiet_now(stack, creator)
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="you up?")
    [waiting] = await stack.settled(creator)
    assert waiting.status == ai_pb2.SUGGESTION_STATUS_SCHEDULED

    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(
            conversation_id=waiting.conversation_id, text="I am now 🙈", idempotency_key="mine-1"
        ),
        metadata=creator.auth,
    )
    await eventually(
        lambda: stack.suggestions(creator),
        lambda found: [s.status for s in found] == [ai_pb2.SUGGESTION_STATUS_CANCELLED],
    )
    clock.ahead = timedelta(hours=2)
    await asyncio.sleep(0.8)

    assert [m.text for m in await stack.outgoing(creator, waiting.conversation_id)] == [
        "I am now 🙈"
    ]


async def test_a_reply_waiting_out_quiet_hours_stays_within_the_per_fan_budget(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    creator = await stack.sign_up()
    await stack.crm_stub.UpdateAutomationBudget(
        crm_pb2.UpdateAutomationBudgetRequest(
            budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=1)
        ),
        metadata=creator.auth,
    )
    clock, _ = await quiet_now(stack, creator)
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hey")
    [waiting] = await stack.settled(creator)
    assert waiting.status == ai_pb2.SUGGESTION_STATUS_SCHEDULED
    # Meanwhile another automation (a campaign, say) spends the fan's budget.
    await stack.crm_stub.SendMessage(
        crm_pb2.SendMessageRequest(
            conversation_id=waiting.conversation_id,
            text="New set tonight 💕",
            idempotency_key="campaign-1",
            sender_kind=crm_pb2.SENDER_KIND_AI,
        ),
        metadata=await stack.service_auth(creator),
    )

    clock.ahead = timedelta(hours=2)

    [refused] = await eventually(
        lambda: stack.suggestions(creator),
        lambda found: [s.status for s in found] == [ai_pb2.SUGGESTION_STATUS_HANDED_OFF],
    )
    assert refused.handoff_reason == "automation_budget"
    assert [m.text for m in await stack.outgoing(creator, waiting.conversation_id)] == [
        "New set tonight 💕"
    ]


async def test_quiet_hours_set_after_the_draft_hold_the_reply_until_they_end(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    """The send looks at the configuration again: quiet hours that began (or were set) after
    the draft postpone the reply to their end."""
    creator = await stack.sign_up()
    await stack.configure(creator, mode="autopilot")
    service = stack.agent.service
    assert service is not None
    service.timing = Timing(
        autopilot_min_delay=timedelta(seconds=AUTOPILOT_WAIT),
        autopilot_max_delay=timedelta(seconds=AUTOPILOT_WAIT),
    )
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hi")
    [waiting] = await stack.settled(creator)
    assert waiting.status == ai_pb2.SUGGESTION_STATUS_SCHEDULED
    clock, quiet_end = await quiet_now(stack, creator)

    postponed = await eventually(
        lambda: stack.ai_stub.GetSuggestion(
            ai_pb2.GetSuggestionRequest(suggestion_id=waiting.id), metadata=creator.auth
        ),
        lambda s: s.send_after.ToDatetime(tzinfo=UTC) >= quiet_end,
        within=AUTOPILOT_WAIT + 10,
    )
    assert postponed.status == ai_pb2.SUGGESTION_STATUS_SCHEDULED
    assert await stack.outgoing(creator, waiting.conversation_id) == []

    clock.ahead = timedelta(hours=2)
    await eventually(
        lambda: stack.suggestions(creator),
        lambda found: [s.status for s in found] == [ai_pb2.SUGGESTION_STATUS_SENT],
    )


async def test_the_per_fan_budget_holds_for_the_autopilot(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    creator = await stack.sign_up()
    await stack.configure(creator, mode="autopilot")
    await stack.crm_stub.UpdateAutomationBudget(
        crm_pb2.UpdateAutomationBudgetRequest(
            budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=1)
        ),
        metadata=creator.auth,
    )
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hi")
    await eventually(
        lambda: stack.suggestions(creator),
        lambda found: [s.status for s in found] == [ai_pb2.SUGGESTION_STATUS_SENT],
    )
    await stack.platform.fan_writes(creator, platform_message_id="m-2", text="hello again")

    latest = await eventually(
        lambda: stack.suggestions(creator),
        lambda found: len(found) == 2 and found[0].status == ai_pb2.SUGGESTION_STATUS_HANDED_OFF,
    )

    assert latest[0].handoff_reason == "automation_budget"
    assert len(await stack.outgoing(creator, latest[0].conversation_id)) == 1


async def test_a_purchase_after_an_ai_message_is_attributed_to_it(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    creator = await stack.sign_up()
    await stack.configure(creator, mode="autopilot")
    attributed = await stack.nc.jetstream().subscribe("ai.revenue.attributed")
    await stack.platform.fan_writes(
        creator, platform_message_id="m-1", text="hi", platform_fan_id="buyer"
    )
    [sent] = await eventually(
        lambda: stack.suggestions(creator),
        lambda found: [s.status for s in found] == [ai_pb2.SUGGESTION_STATUS_SENT],
    )

    await stack.platform.fan_pays(
        creator, transaction_id="t-1", cents=1500, platform_fan_id="buyer"
    )

    message = await attributed.next_msg(timeout=15)
    event = ai_events.RevenueAttributed.FromString(message.data)
    assert (event.creator_id, event.fan_id) == (creator.id, sent.fan_id)
    assert event.amount_cents == 1500
    assert event.sent_message_id == sent.sent_message_id
    await attributed.unsubscribe()
