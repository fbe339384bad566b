"""The CrmService over gRPC on loopback: persistence, lists and search, bad input, identity."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import grpc
import pytest

from huntaze.auth.v1 import auth_pb2
from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze_kit.rich_status import from_rpc_error

ONLYFANS = crm_pb2.PLATFORM_ONLYFANS


async def make_fan(stack: Any, creator: Any, platform_fan_id: str, **fields: object) -> crm_pb2.Fan:
    request = crm_pb2.CreateFanRequest(
        platform=ONLYFANS,
        platform_fan_id=platform_fan_id,
        **fields,  # type: ignore[arg-type]
    )
    return await stack.stub.CreateFan(request, metadata=creator.auth)


async def test_everything_survives_a_restart(stack: Any, creators: Any, helpers: Any) -> None:
    ada, _ = creators
    fan = await make_fan(stack, ada, "of-1", display_name="Lily", tags=["vip"])
    sent = await stack.stub.SendMessage(
        crm_pb2.SendMessageRequest(
            fan_id=fan.id, text="Hello Lily", price_cents=500, idempotency_key="k-1"
        ),
        metadata=ada.auth,
    )
    reply = await stack.stub.CreateQuickReply(
        crm_pb2.CreateQuickReplyRequest(shortcut="/thanks", text="Thank you!"), metadata=ada.auth
    )
    await stack.platform.fan_writes(ada, platform_message_id="pm-1", platform_fan_id="of-1")
    await helpers.eventually(
        lambda: stack.stub.GetConversation(
            crm_pb2.GetConversationRequest(conversation_id=sent.message.conversation_id),
            metadata=ada.auth,
        ),
        lambda c: c.unread_count == 1,
    )

    await stack.restart_crm()

    assert (
        await stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=fan.id), metadata=ada.auth)
    ).tags == ["vip"]
    messages = await stack.stub.ListMessages(
        crm_pb2.ListMessagesRequest(conversation_id=sent.message.conversation_id),
        metadata=ada.auth,
    )
    assert [m.text for m in messages.messages] == ["hi there", "Hello Lily"]  # newest first
    assert messages.messages[1].delivery_status == crm_pb2.DELIVERY_STATUS_QUEUED
    got = await stack.stub.GetQuickReply(
        crm_pb2.GetQuickReplyRequest(quick_reply_id=reply.id), metadata=ada.auth
    )
    assert got.text == "Thank you!"
    # The same idempotency key after the restart still answers the same message.
    again = await stack.stub.SendMessage(
        crm_pb2.SendMessageRequest(
            fan_id=fan.id, text="Hello Lily", price_cents=500, idempotency_key="k-1"
        ),
        metadata=ada.auth,
    )
    assert again.message.id == sent.message.id
    assert not again.created


async def test_lists_search_segments_and_pagination(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, _ = creators
    fans = [
        await make_fan(
            stack,
            ada,
            f"of-{i}",
            display_name=f"Fan {i}",
            tags=["vip"] if i % 2 == 0 else ["new"],
            notes="loves cosplay" if i == 3 else "",
        )
        for i in range(7)
    ]

    seen: list[str] = []
    token = ""
    while True:
        page = await stack.stub.ListFans(
            crm_pb2.ListFansRequest(
                page=common_pb2.PageRequest(page_size=3, page_token=token),
                sort=crm_pb2.FAN_SORT_DISPLAY_NAME_ASC,
            ),
            metadata=ada.auth,
        )
        seen += [f.display_name for f in page.fans]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == [f"Fan {i}" for i in range(7)]

    found = await stack.stub.ListFans(crm_pb2.ListFansRequest(query="cosplay"), metadata=ada.auth)
    assert [f.id for f in found.fans] == [fans[3].id]

    vip = crm_pb2.SegmentFilter(tags_any=["vip"])
    preview = await stack.stub.PreviewSegment(
        crm_pb2.PreviewSegmentRequest(segment=vip), metadata=ada.auth
    )
    assert preview.fan_count == 4

    tagged = await stack.stub.UpdateFanTags(
        crm_pb2.UpdateFanTagsRequest(
            fan_ids=[fans[1].id, fans[3].id], add_tags=["vip", "whale"], remove_tags=["new"]
        ),
        metadata=ada.auth,
    )
    assert tagged.updated_count == 2
    fan3 = await stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=fans[3].id), metadata=ada.auth)
    assert list(fan3.tags) == ["vip", "whale"]

    dynamic = await stack.stub.CreateFanList(
        crm_pb2.CreateFanListRequest(name="VIPs", kind=crm_pb2.FAN_LIST_KIND_DYNAMIC, segment=vip),
        metadata=ada.auth,
    )
    assert dynamic.member_count == 6
    static = await stack.stub.CreateFanList(
        crm_pb2.CreateFanListRequest(name="Favourites", kind=crm_pb2.FAN_LIST_KIND_STATIC),
        metadata=ada.auth,
    )
    added = await stack.stub.AddFanListMembers(
        crm_pb2.AddFanListMembersRequest(list_id=static.id, fan_ids=[fans[0].id, fans[5].id]),
        metadata=ada.auth,
    )
    assert added.added_count == 2
    members = await stack.stub.ListFanListMembers(
        crm_pb2.ListFanListMembersRequest(list_id=static.id), metadata=ada.auth
    )
    assert {f.id for f in members.fans} == {fans[0].id, fans[5].id}
    error = await helpers.rpc_error(
        stack.stub.AddFanListMembers(
            crm_pb2.AddFanListMembersRequest(list_id=dynamic.id, fan_ids=[fans[0].id]),
            metadata=ada.auth,
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    sent = await stack.stub.SendMessage(
        crm_pb2.SendMessageRequest(
            fan_id=fans[2].id, text="New bikini set this weekend", idempotency_key="s-1"
        ),
        metadata=ada.auth,
    )
    hits = await stack.stub.SearchMessages(
        crm_pb2.SearchMessagesRequest(query="bikini -sold"), metadata=ada.auth
    )
    assert [m.id for m in hits.messages] == [sent.message.id]
    conversations = await stack.stub.ListConversations(
        crm_pb2.ListConversationsRequest(query="bikini"), metadata=ada.auth
    )
    assert [c.fan.id for c in conversations.conversations] == [fans[2].id]


async def test_the_recent_messages_of_several_conversations_in_one_call(
    stack: Any, creators: Any
) -> None:
    ada, _ = creators
    conversations = []
    for name in ("one", "two"):
        fan = await make_fan(stack, ada, f"of-{name}")
        for n in range(3):
            sent = await stack.stub.SendMessage(
                crm_pb2.SendMessageRequest(
                    fan_id=fan.id, text=f"{name} {n}", idempotency_key=f"{name}-{n}"
                ),
                metadata=ada.auth,
            )
        conversations.append(sent.message.conversation_id)

    answer = await stack.stub.BatchListRecentMessages(
        crm_pb2.BatchListRecentMessagesRequest(conversation_ids=conversations, limit=2),
        metadata=ada.auth,
    )

    recent = {c.conversation_id: [m.text for m in c.messages] for c in answer.conversations}
    assert recent == {conversations[0]: ["one 2", "one 1"], conversations[1]: ["two 2", "two 1"]}
    with_unknown = crm_pb2.BatchListRecentMessagesRequest(
        conversation_ids=[conversations[0], str(uuid.uuid4())], limit=2
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.stub.BatchListRecentMessages(with_unknown, metadata=ada.auth)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_input_is_invalid_argument_or_not_found(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, _ = creators
    fan = await make_fan(stack, ada, "of-1")
    stub = stack.stub
    unknown = str(uuid.uuid4())
    forged = base64.urlsafe_b64encode(b'{"s":"fans.created_at","k":[["s","x"],["i",1]]}').decode()

    cases = [
        (stub.GetFan(crm_pb2.GetFanRequest(fan_id=unknown), metadata=ada.auth), "NOT_FOUND", None),
        (
            stub.GetFan(crm_pb2.GetFanRequest(fan_id="not-an-id"), metadata=ada.auth),
            "INVALID_ARGUMENT",
            "fan_id",
        ),
        (
            stub.GetConversation(
                crm_pb2.GetConversationRequest(conversation_id=unknown), metadata=ada.auth
            ),
            "NOT_FOUND",
            None,
        ),
        (
            stub.MarkMessageRead(
                crm_pb2.MarkMessageReadRequest(message_id=unknown), metadata=ada.auth
            ),
            "NOT_FOUND",
            None,
        ),
        (
            stub.ListFans(
                crm_pb2.ListFansRequest(page=common_pb2.PageRequest(page_token="%%%")),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "page.page_token",
        ),
        (
            stub.ListFans(
                crm_pb2.ListFansRequest(page=common_pb2.PageRequest(page_token=forged)),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "page.page_token",
        ),
        (
            stub.ListConversations(
                crm_pb2.ListConversationsRequest(
                    page=common_pb2.PageRequest(page_token="eyJzIjoiZmFucyJ9")
                ),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "page.page_token",
        ),
        (
            stub.ListFans(
                crm_pb2.ListFansRequest(page=common_pb2.PageRequest(page_size=10_000)),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "page.page_size",
        ),
        (
            stub.ListMessages(
                crm_pb2.ListMessagesRequest(
                    conversation_id=unknown, page=common_pb2.PageRequest(page_size=201)
                ),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "page.page_size",
        ),
        (
            stub.SendMessage(
                crm_pb2.SendMessageRequest(
                    fan_id=fan.id, text="hi", price_cents=-1, idempotency_key="k"
                ),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "price_cents",
        ),
        (
            stub.SendMessage(
                crm_pb2.SendMessageRequest(fan_id=fan.id, text="x" * 5001, idempotency_key="k"),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "text",
        ),
        (
            stub.SendMessage(
                crm_pb2.SendMessageRequest(fan_id=fan.id, text="hi"), metadata=ada.auth
            ),
            "INVALID_ARGUMENT",
            "idempotency_key",
        ),
        (
            stub.SendMessage(
                crm_pb2.SendMessageRequest(fan_id=unknown, text="hi", idempotency_key="k"),
                metadata=ada.auth,
            ),
            "NOT_FOUND",
            None,
        ),
        (
            stub.CreateFan(
                crm_pb2.CreateFanRequest(platform=99, display_name="x"), metadata=ada.auth
            ),
            "INVALID_ARGUMENT",
            "platform",
        ),  # type: ignore[arg-type]
        (
            stub.CreateFan(
                crm_pb2.CreateFanRequest(platform=ONLYFANS, email="nope", tags=[""]),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "email",
        ),
        (
            stub.ListFans(crm_pb2.ListFansRequest(sort=42), metadata=ada.auth),
            "INVALID_ARGUMENT",
            "sort",
        ),  # type: ignore[arg-type]
        (
            stub.PreviewSegment(
                crm_pb2.PreviewSegmentRequest(
                    segment=crm_pb2.SegmentFilter(min_value_cents=-5, subscription_states=[7])
                ),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "segment.min_value_cents",
        ),  # type: ignore[list-item]
        (
            stub.CreateQuickReply(
                crm_pb2.CreateQuickReplyRequest(shortcut="two words", text="x"), metadata=ada.auth
            ),
            "INVALID_ARGUMENT",
            "shortcut",
        ),
        (
            stub.CreateFanList(
                crm_pb2.CreateFanListRequest(name="x", kind=crm_pb2.FAN_LIST_KIND_DYNAMIC),
                metadata=ada.auth,
            ),
            "INVALID_ARGUMENT",
            "segment",
        ),
        (
            stub.WatchInbox(crm_pb2.WatchInboxRequest(after_event_id=-1), metadata=ada.auth).read(),
            "INVALID_ARGUMENT",
            "after_event_id",
        ),
        (stub.GetFan(crm_pb2.GetFanRequest(fan_id=fan.id)), "UNAUTHENTICATED", None),
        (
            stub.GetFan(
                crm_pb2.GetFanRequest(fan_id=fan.id), metadata=(("authorization", "Bearer x.y.z"),)
            ),
            "UNAUTHENTICATED",
            None,
        ),
    ]
    for call, code, field in cases:
        error = await helpers.rpc_error(call)
        details = from_rpc_error(error)
        assert details.code.name == code, (code, field, details)
        assert details.message, details
        if field is not None:
            assert field in [v.field for v in details.violations], details

    await stub.CreateQuickReply(
        crm_pb2.CreateQuickReplyRequest(shortcut="/hi", text="Hi!"), metadata=ada.auth
    )
    duplicate = await helpers.rpc_error(
        stub.CreateQuickReply(
            crm_pb2.CreateQuickReplyRequest(shortcut="/hi", text="Hello"), metadata=ada.auth
        )
    )
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
    reused = await stub.SendMessage(
        crm_pb2.SendMessageRequest(fan_id=fan.id, text="one", idempotency_key="same"),
        metadata=ada.auth,
    )
    assert reused.created
    conflict = await helpers.rpc_error(
        stub.SendMessage(
            crm_pb2.SendMessageRequest(fan_id=fan.id, text="two", idempotency_key="same"),
            metadata=ada.auth,
        )
    )
    assert from_rpc_error(conflict).reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_signed_out_session_is_refused_at_once(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, _ = creators
    await stack.stub.ListFans(crm_pb2.ListFansRequest(), metadata=ada.auth)
    await stack.auth_stub.Logout(auth_pb2.LogoutRequest(), metadata=ada.auth)

    async def status() -> grpc.StatusCode:
        try:
            await stack.stub.ListFans(crm_pb2.ListFansRequest(), metadata=ada.auth)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    await helpers.eventually(status, lambda code: code == grpc.StatusCode.UNAUTHENTICATED)
