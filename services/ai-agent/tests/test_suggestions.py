"""The agent with real services (auth, the CRM and the agent over gRPC, NATS and PostgreSQL) and
its local provider: a fan writes on the platform (the worker's event), the CRM stores it, the
agent drafts, the creator sees it on the inbox stream and accepts, edits or rejects it; and the
CRM's per-fan automation budget against direct calls."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from huntaze.ai.v1 import ai_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze_devstack.testing import eventually
from huntaze_kit.rich_status import from_rpc_error

from .conftest import Creator, Stack, next_of, rpc_error


async def test_a_fan_message_becomes_a_suggestion_on_the_stream_then_a_queued_reply(
    stack: Stack,
) -> None:
    creator = await stack.sign_up()
    await stack.configure(
        creator,
        mode="suggest",
        custom_responses=[
            {"trigger": "how are you", "reply": "Better now that you wrote {name} 😘"}
        ],
    )
    inbox = await stack.watch(creator)

    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hey how are you?")

    created = await next_of(inbox, "ai.suggestion_created")
    notice = created.ai
    assert notice.status == "suggested"
    assert notice.text == "Better now that you wrote Lily 😘"
    [suggestion] = await stack.suggestions(creator)
    assert suggestion.id == notice.suggestion_id
    assert (suggestion.provider, suggestion.model) == ("local", "best-match-v1")
    assert suggestion.incoming_text == "hey how are you?"

    accepted = await stack.ai_stub.AcceptSuggestion(
        ai_pb2.AcceptSuggestionRequest(suggestion_id=suggestion.id), metadata=creator.auth
    )

    assert accepted.status == ai_pb2.SUGGESTION_STATUS_ACCEPTED
    [reply] = await stack.outgoing(creator, suggestion.conversation_id)
    assert reply.id == accepted.sent_message_id
    assert reply.text == "Better now that you wrote Lily 😘"
    assert reply.delivery_status == crm_pb2.DELIVERY_STATUS_QUEUED
    assert reply.sender_kind == crm_pb2.SENDER_KIND_CREATOR
    resolved = await next_of(inbox, "ai.suggestion_resolved")
    assert (resolved.ai.suggestion_id, resolved.ai.status) == (suggestion.id, "accepted")
    audit = await stack.ai_stub.ListAuditEntries(
        ai_pb2.ListAuditEntriesRequest(conversation_id=suggestion.conversation_id),
        metadata=creator.auth,
    )
    [entry] = audit.entries
    assert entry.approved_by == creator.id
    assert (entry.provider, entry.model, entry.edited) == ("local", "best-match-v1", False)
    assert len(entry.prompt_fingerprint) == 64
    again = await rpc_error(
        stack.ai_stub.AcceptSuggestion(
            ai_pb2.AcceptSuggestionRequest(suggestion_id=suggestion.id), metadata=creator.auth
        )
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    inbox.cancel()


async def test_edit_then_send_and_reject(stack: Stack) -> None:
    creator = await stack.sign_up()
    await stack.platform.fan_writes(
        creator, platform_message_id="m-1", text="hello", platform_fan_id="f1"
    )
    await stack.platform.fan_writes(
        creator, platform_message_id="m-2", text="yo", platform_fan_id="f2"
    )
    first, second = sorted(await stack.settled(creator, 2), key=lambda s: s.incoming_text)

    edited = await stack.ai_stub.AcceptSuggestion(
        ai_pb2.AcceptSuggestionRequest(suggestion_id=first.id, text="Hi love, my own words"),
        metadata=creator.auth,
    )
    rejected = await stack.ai_stub.RejectSuggestion(
        ai_pb2.RejectSuggestionRequest(suggestion_id=second.id), metadata=creator.auth
    )

    assert edited.status == ai_pb2.SUGGESTION_STATUS_EDITED
    assert edited.text == "Hi love, my own words"
    [sent] = await stack.outgoing(creator, first.conversation_id)
    assert sent.text == "Hi love, my own words"
    assert rejected.status == ai_pb2.SUGGESTION_STATUS_REJECTED
    assert await stack.outgoing(creator, second.conversation_id) == []
    audit = await stack.ai_stub.ListAuditEntries(
        ai_pb2.ListAuditEntriesRequest(conversation_id=first.conversation_id),
        metadata=creator.auth,
    )
    assert [e.edited for e in audit.entries] == [True]


async def test_another_creator_sees_none_of_it(stack: Stack) -> None:
    ada, bea = await asyncio.gather(stack.sign_up(), stack.sign_up())
    await stack.platform.fan_writes(ada, platform_message_id="m-1", text="hello")
    [suggestion] = await stack.settled(ada)

    assert await stack.suggestions(bea) == []
    for call in (
        stack.ai_stub.GetSuggestion(
            ai_pb2.GetSuggestionRequest(suggestion_id=suggestion.id), metadata=bea.auth
        ),
        stack.ai_stub.AcceptSuggestion(
            ai_pb2.AcceptSuggestionRequest(suggestion_id=suggestion.id), metadata=bea.auth
        ),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND


async def test_the_configuration_round_trips_and_is_validated(stack: Stack) -> None:
    creator = await stack.sign_up()
    default = await stack.ai_stub.GetConfig(ai_pb2.GetConfigRequest(), metadata=creator.auth)
    assert default.mode == "suggest"
    assert "paypal" in default.guardrails.banned_words

    await stack.configure(
        creator,
        mode="autopilot",
        personality="Nia, a chef",
        response_style={"use_emoji": False, "max_length": 120},
        fan_modes={"fan-1": "off"},
        guardrails={
            "handoff_spend_cents": 0,
            "banned_words": ["lingerie"],
            "quiet_hours": {"start": "23:00", "end": "07:30", "timezone": "Europe/Paris"},
            "ppv_min_cents": 500,
            "ppv_max_cents": 900,
        },
    )
    saved = await stack.ai_stub.GetConfig(ai_pb2.GetConfigRequest(), metadata=creator.auth)

    assert saved.mode == "autopilot"
    assert saved.response_style.use_emoji is False
    assert saved.guardrails.HasField("handoff_spend_cents")
    assert saved.guardrails.handoff_spend_cents == 0
    assert list(saved.guardrails.banned_words) == ["lingerie"]
    assert saved.guardrails.quiet_hours.start == "23:00"
    assert saved.guardrails.quiet_hours.end == "07:30"
    assert dict(saved.fan_modes) == {"fan-1": "off"}

    bad = ai_pb2.AiConfig(mode="always")
    bad.guardrails.quiet_hours.timezone = "Mars/Olympus"
    error = await rpc_error(
        stack.ai_stub.UpdateConfig(ai_pb2.UpdateConfigRequest(config=bad), metadata=creator.auth)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in from_rpc_error(error).violations}
    assert "config.mode" in fields
    assert any(f.startswith("config.guardrails.quiet_hours") for f in fields)


async def test_the_per_fan_budget_holds_against_direct_calls(stack: Stack) -> None:
    creator = await stack.sign_up()
    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hi")
    [suggestion] = await stack.settled(creator)
    budget = await stack.crm_stub.GetAutomationBudget(
        crm_pb2.GetAutomationBudgetRequest(), metadata=creator.auth
    )
    assert budget.messages_per_fan_per_day == 20
    await stack.crm_stub.UpdateAutomationBudget(
        crm_pb2.UpdateAutomationBudgetRequest(
            budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=2)
        ),
        metadata=creator.auth,
    )
    service = await stack.service_auth(creator)

    def send(key: str, kind: int, metadata: Any) -> Any:
        return stack.crm_stub.SendMessage(
            crm_pb2.SendMessageRequest(
                conversation_id=suggestion.conversation_id,
                text="automated hello",
                idempotency_key=key,
                sender_kind=kind,
            ),
            metadata=metadata,
        )

    await send("auto-1", crm_pb2.SENDER_KIND_AI, service)
    await send("auto-2", crm_pb2.SENDER_KIND_AUTOMATION, service)
    await send("mine-1", crm_pb2.SENDER_KIND_UNSPECIFIED, creator.auth)  # the creator's own
    replay = await send("auto-1", crm_pb2.SENDER_KIND_AI, service)  # a retry, not a new send
    refused = await rpc_error(send("auto-3", crm_pb2.SENDER_KIND_AI, service))

    assert replay.created is False
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = from_rpc_error(refused)
    assert details.reason == "AUTOMATION_BUDGET_EXHAUSTED"
    assert details.retry_after_seconds is not None
    assert 0 < details.retry_after_seconds <= 24 * 3600
    assert "2 automated messages in the last 24 hours" in details.message
    invalid = await rpc_error(
        stack.crm_stub.UpdateAutomationBudget(
            crm_pb2.UpdateAutomationBudgetRequest(
                budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=5000)
            ),
            metadata=creator.auth,
        )
    )
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused_service = await rpc_error(
        stack.crm_stub.UpdateAutomationBudget(
            crm_pb2.UpdateAutomationBudgetRequest(
                budget=crm_pb2.AutomationBudget(messages_per_fan_per_day=500)
            ),
            metadata=service,
        )
    )
    assert refused_service.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_protos_rules_bound_pages_and_edited_text(stack: Stack) -> None:
    creator = await stack.sign_up()
    calls = {
        "limit": stack.ai_stub.ListSuggestions(
            ai_pb2.ListSuggestionsRequest(limit=201), metadata=creator.auth
        ),
        "text": stack.ai_stub.AcceptSuggestion(
            ai_pb2.AcceptSuggestionRequest(suggestion_id=str(uuid.uuid4()), text="x" * 5001),
            metadata=creator.auth,
        ),
    }
    for field, call in calls.items():
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in from_rpc_error(error).violations] == [field]

    page = await stack.ai_stub.ListSuggestions(
        ai_pb2.ListSuggestionsRequest(limit=200), metadata=creator.auth
    )
    assert list(page.suggestions) == []


async def test_the_local_provider_drafts_as_the_message_is_recorded(stack: Stack) -> None:
    """The CRM's event carries the fan: with the local provider the suggestion is drafted in
    the transaction that records the message, with no drafting worker and no call back."""
    assert stack.agent.drafting is not None
    await stack.agent.drafting.stop(0)  # no worker
    creator = await stack.sign_up()
    inbox = await stack.watch(creator)

    await stack.platform.fan_writes(creator, platform_message_id="m-1", text="hey there")

    created = await next_of(inbox, "ai.suggestion_created")
    assert created.ai.status == "suggested"
    [suggestion] = await stack.suggestions(creator)
    assert suggestion.status == ai_pb2.SUGGESTION_STATUS_SUGGESTED
    assert "Lily" in suggestion.text


async def inbound_without_fan(stack: Stack, creator: Creator) -> list[crm_events.MessageReceived]:
    """`crm.message.received` for each of the creator's inbound messages, as a CRM that does
    not send the fan with them would have published it, under a message id of its own."""
    conversations = await stack.crm_stub.ListConversations(
        crm_pb2.ListConversationsRequest(), metadata=creator.auth
    )
    events = []
    for conversation in conversations.conversations:
        for message in await stack.messages(creator, conversation.id):
            if message.direction == crm_pb2.MESSAGE_DIRECTION_IN:
                copy = crm_pb2.Message()
                copy.CopyFrom(message)
                copy.id = str(uuid.uuid4())
                events.append(crm_events.MessageReceived(creator_id=creator.id, message=copy))
    return events


async def test_a_batch_with_a_fan_deleted_meanwhile_drafts_the_others(stack: Stack) -> None:
    """Messages whose event does not carry the fan wait for the drafting workers, which read a
    batch's fans in one CRM call, all or nothing: a fan deleted since their message came makes
    the agent read the others one by one, and the gone fan's message is ignored."""
    service, drafting = stack.agent.service, stack.agent.drafting
    assert service is not None
    assert drafting is not None
    creator = await stack.sign_up()
    for n, fan in enumerate(("stays", "goes")):
        await stack.platform.fan_writes(
            creator, platform_message_id=f"m-{n}", text="hi", platform_fan_id=fan
        )
    await stack.settled(creator, 2)
    await drafting.stop(0)  # no worker from here: this test drafts the batch itself
    for event in await inbound_without_fan(stack, creator):
        await stack.platform.publish(
            "crm.message.received",
            event,
            creator_id=creator.id,
            aggregate_id=event.message.conversation_id,
            aggregate_type="conversation",
        )
    fans = await stack.crm_stub.ListFans(crm_pb2.ListFansRequest(), metadata=creator.auth)
    gone = next(f for f in fans.fans if f.platform_fan_id == "goes")
    await eventually(lambda: stack.suggestions(creator), lambda found: len(found) == 4)
    batch = await service.claim_drafts(limit=10)
    assert len(batch) == 2
    await stack.crm_stub.DeleteFan(crm_pb2.DeleteFanRequest(fan_id=gone.id), metadata=creator.auth)

    assert await service.draft_batch(batch) == []

    waited = {c.suggestion.id for c in batch}
    statuses = {
        s.fan_id: s.status for s in await stack.suggestions(creator) if uuid.UUID(s.id) in waited
    }
    assert statuses.pop(gone.id) == ai_pb2.SUGGESTION_STATUS_IGNORED
    assert list(statuses.values()) == [ai_pb2.SUGGESTION_STATUS_SUGGESTED]
