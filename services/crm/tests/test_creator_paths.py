"""What a new creator trips over, over gRPC: tags that differ only in case, search by the start
of a word, the creator's own name for a fan against the platform's sync, resuming the inbox from
event 0, the unknown fans of a bulk call, and sorting both ways."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_kit.rich_status import from_rpc_error

ONLYFANS = crm_pb2.PLATFORM_ONLYFANS


async def make_fan(stack: Any, creator: Any, platform_fan_id: str, **fields: Any) -> crm_pb2.Fan:
    return await stack.stub.CreateFan(
        crm_pb2.CreateFanRequest(platform=ONLYFANS, platform_fan_id=platform_fan_id, **fields),
        metadata=creator.auth,
    )


async def fan_names(stack: Any, creator: Any, **request: Any) -> list[str]:
    page = await stack.stub.ListFans(crm_pb2.ListFansRequest(**request), metadata=creator.auth)
    return [fan.display_name for fan in page.fans]


async def test_tags_differing_only_in_case_or_spaces_are_one_tag(stack: Any, creators: Any) -> None:
    ada, _ = creators
    first = await make_fan(stack, ada, "of-1", display_name="Ann", tags=[" VIP ", "Vip", "vip"])
    assert list(first.tags) == ["VIP"]
    second = await make_fan(stack, ada, "of-2", display_name="Bob", tags=["vip", "new"])
    await make_fan(stack, ada, "of-3", display_name="Cy", tags=["other"])

    for spelling in ("vip", "VIP", "Vip"):
        any_of = crm_pb2.SegmentFilter(tags_any=[spelling])
        assert sorted(await fan_names(stack, ada, filter=any_of)) == ["Ann", "Bob"]
        all_of = crm_pb2.SegmentFilter(tags_all=[spelling, "NEW"])
        assert await fan_names(stack, ada, filter=all_of) == ["Bob"]

    # Adding a tag a fan has in another case changes nothing; the first spelling stays.
    unchanged = await stack.stub.UpdateFanTags(
        crm_pb2.UpdateFanTagsRequest(fan_ids=[first.id], add_tags=[" vip"]), metadata=ada.auth
    )
    assert unchanged.updated_count == 0
    added = await stack.stub.UpdateFanTags(
        crm_pb2.UpdateFanTagsRequest(fan_ids=[first.id, second.id], add_tags=["Whale", "WHALE"]),
        metadata=ada.auth,
    )
    assert added.updated_count == 2
    got = await stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=second.id), metadata=ada.auth)
    assert list(got.tags) == ["vip", "new", "Whale"]
    removed = await stack.stub.UpdateFanTags(
        crm_pb2.UpdateFanTagsRequest(fan_ids=[second.id], remove_tags=["VIP", "whale"]),
        metadata=ada.auth,
    )
    assert removed.updated_count == 1
    got = await stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=second.id), metadata=ada.auth)
    assert list(got.tags) == ["new"]
    replaced = await stack.stub.UpdateFan(
        crm_pb2.UpdateFanRequest(fan_id=second.id, tags=crm_pb2.TagSet(tags=["Gold", "gold "])),
        metadata=ada.auth,
    )
    assert list(replaced.tags) == ["Gold"]


async def test_search_matches_the_start_of_names_handles_and_messages(
    stack: Any, creators: Any
) -> None:
    ada, bea = creators
    marco = await make_fan(stack, ada, "of-marco", display_name="Marco Rossi", handle="@marcor")
    await make_fan(stack, ada, "of-lily", display_name="Lily", handle="@lily_rose")
    await make_fan(stack, bea, "of-other", display_name="Marco Other")
    sent = await stack.stub.SendMessage(
        crm_pb2.SendMessageRequest(fan_id=marco.id, text="See you tonight", idempotency_key="k"),
        metadata=ada.auth,
    )

    for query in ("Mar", "marco", "ross", "Marco R", "@marc", "mar ros"):
        assert await fan_names(stack, ada, query=query) == ["Marco Rossi"], query
    assert await fan_names(stack, ada, query="lily_r") == ["Lily"]
    assert await fan_names(stack, ada, query="arco") == []
    # Web-search syntax still holds: an excluded word, alternatives.
    assert await fan_names(stack, ada, query="mar -rossi") == []
    assert sorted(await fan_names(stack, ada, query="mar or lil")) == ["Lily", "Marco Rossi"]

    for query in ("Mar", "tonig"):
        page = await stack.stub.ListConversations(
            crm_pb2.ListConversationsRequest(query=query), metadata=ada.auth
        )
        assert [c.id for c in page.conversations] == [sent.message.conversation_id], query
    found = await stack.stub.SearchMessages(
        crm_pb2.SearchMessagesRequest(query="toni"), metadata=ada.auth
    )
    assert [m.id for m in found.messages] == [sent.message.id]
    # LIKE wildcards in a query are plain characters.
    assert await fan_names(stack, ada, query="%") == []
    assert await fan_names(stack, ada, query="_") == []


async def test_a_platform_sync_keeps_the_creators_name_for_a_fan(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, _ = creators
    fan = await make_fan(stack, ada, "of-marco", display_name="Marco Rossi")
    assert (fan.display_name, fan.custom_display_name) == ("Marco Rossi", "Marco Rossi")

    # The platform names him "Marco R.", by a subscriber sync and by a message he writes.
    synced = of_events.FanSynced(
        creator_id=ada.id,
        fan=of_events.FanProfile(platform_fan_id="of-marco", display_name="Marco R."),
        subscription_state=of_events.SUBSCRIPTION_STATE_ACTIVE,
    )
    await stack.platform.publish(
        "onlyfans.fan.synced", synced, creator_id=ada.id, aggregate_id="of-marco"
    )
    got = await helpers.eventually(
        lambda: stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=fan.id), metadata=ada.auth),
        lambda found: found.platform_display_name == "Marco R.",
    )
    assert (got.display_name, got.custom_display_name) == ("Marco Rossi", "Marco Rossi")
    await stack.platform.fan_writes(
        ada, platform_message_id="pm-1", platform_fan_id="of-marco", display_name="Marco Ro."
    )
    got = await helpers.eventually(
        lambda: stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=fan.id), metadata=ada.auth),
        lambda found: found.platform_display_name == "Marco Ro.",
    )
    assert got.display_name == "Marco Rossi"
    conversations = await stack.stub.ListConversations(
        crm_pb2.ListConversationsRequest(), metadata=ada.auth
    )
    assert [c.fan.display_name for c in conversations.conversations] == ["Marco Rossi"]
    # Both names find him.
    assert await fan_names(stack, ada, query="Ro.") == ["Marco Rossi"]

    # Without a name of the creator's, the platform's is shown.
    cleared = await stack.stub.UpdateFan(
        crm_pb2.UpdateFanRequest(fan_id=fan.id, display_name=""), metadata=ada.auth
    )
    assert (cleared.display_name, cleared.custom_display_name) == ("Marco Ro.", "")
    renamed = await stack.stub.UpdateFan(
        crm_pb2.UpdateFanRequest(fan_id=fan.id, display_name=" Marco "), metadata=ada.auth
    )
    assert (renamed.display_name, renamed.platform_display_name) == ("Marco", "Marco Ro.")
    # A fan the platform introduced has the platform's name only.
    await stack.platform.fan_writes(
        ada, platform_message_id="pm-2", platform_fan_id="of-new", display_name="Newcomer"
    )
    page = await helpers.eventually(
        lambda: stack.stub.ListFans(crm_pb2.ListFansRequest(query="newc"), metadata=ada.auth),
        lambda found: len(found.fans) == 1,
    )
    newcomer = page.fans[0]
    assert (newcomer.display_name, newcomer.custom_display_name) == ("Newcomer", "")


async def _first_events(stack: Any, creator: Any, request: crm_pb2.WatchInboxRequest) -> list[Any]:
    """The events a watcher gets within a second."""
    call = stack.stub.WatchInbox(request, metadata=creator.auth)
    events: list[Any] = []
    try:
        async with asyncio.timeout(1.0):
            async for event in call:
                events.append(event)
    except TimeoutError:
        pass
    finally:
        call.cancel()
    return events


async def test_resuming_the_inbox_from_event_0_replays_what_is_kept(
    stack: Any, creators: Any
) -> None:
    ada, _ = creators
    fans = [await make_fan(stack, ada, f"of-{i}", display_name=f"Fan {i}") for i in range(3)]

    resumed = await _first_events(
        stack, ada, crm_pb2.WatchInboxRequest(after_event_id=0, resume=True)
    )
    assert [(e.type, e.fan.id) for e in resumed] == [("fan.updated", f.id) for f in fans]
    # From the first event on: the ones after it.
    after_first = await _first_events(
        stack, ada, crm_pb2.WatchInboxRequest(after_event_id=resumed[0].id, resume=True)
    )
    assert [e.id for e in after_first] == [e.id for e in resumed[1:]]
    # A first connection (not resuming) gets only what happens from now on.
    assert await _first_events(stack, ada, crm_pb2.WatchInboxRequest()) == []


async def test_a_bulk_call_names_the_unknown_fans(stack: Any, creators: Any, helpers: Any) -> None:
    ada, bea = creators
    mine = await make_fan(stack, ada, "of-1", display_name="Ann", tags=["a"])
    theirs = await make_fan(stack, bea, "of-2", display_name="Bob")
    unknown = str(uuid.uuid4())

    error = await helpers.rpc_error(
        stack.stub.UpdateFanTags(
            crm_pb2.UpdateFanTagsRequest(fan_ids=[mine.id, unknown], add_tags=["b"]),
            metadata=ada.auth,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert unknown in (error.details() or "")
    details = from_rpc_error(error)
    assert details.reason == "FAN_NOT_FOUND"
    assert [(v.field, v.description) for v in details.violations] == [
        ("fan_ids[1]", f"no fan {unknown}")
    ]
    # Nothing changed (all or nothing), and another creator's fan is unknown too.
    got = await stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=mine.id), metadata=ada.auth)
    assert list(got.tags) == ["a"]
    fan_list = await stack.stub.CreateFanList(
        crm_pb2.CreateFanListRequest(name="L", kind=crm_pb2.FAN_LIST_KIND_STATIC),
        metadata=ada.auth,
    )
    error = await helpers.rpc_error(
        stack.stub.AddFanListMembers(
            crm_pb2.AddFanListMembersRequest(
                list_id=fan_list.id, fan_ids=[theirs.id, mine.id, unknown]
            ),
            metadata=ada.auth,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert [v.field for v in from_rpc_error(error).violations] == ["fan_ids[0]", "fan_ids[2]"]
    assert theirs.id in (error.details() or "")
    assert unknown in (error.details() or "")


async def _all_pages(list_call: Any, make_request: Any, items: str) -> list[Any]:
    """Every item of a list, two per page."""
    seen: list[Any] = []
    token = ""
    while True:
        page = await list_call(make_request(common_pb2.PageRequest(page_size=2, page_token=token)))
        seen += list(getattr(page, items))
        token = page.page.next_page_token
        if not token:
            return seen


async def test_lists_sort_both_ways(stack: Any, creators: Any, helpers: Any) -> None:
    ada, _ = creators
    names = ["Cleo", "ann", "Bea", "Dan", "Eve"]
    fans = [await make_fan(stack, ada, f"of-{name}", display_name=name) for name in names]

    def list_fans(sort: int) -> Any:
        return _all_pages(
            lambda request: stack.stub.ListFans(request, metadata=ada.auth),
            lambda page: crm_pb2.ListFansRequest(page=page, sort=sort),
            "fans",
        )

    ascending = [f.display_name for f in await list_fans(crm_pb2.FAN_SORT_DISPLAY_NAME_ASC)]
    descending = [f.display_name for f in await list_fans(crm_pb2.FAN_SORT_DISPLAY_NAME_DESC)]
    assert descending == list(reversed(ascending))
    assert sorted(ascending) == sorted(names)
    oldest_first = [f.id for f in await list_fans(crm_pb2.FAN_SORT_CREATED_AT_ASC)]
    assert oldest_first == [f.id for f in fans]
    newest_first = [f.id for f in await list_fans(crm_pb2.FAN_SORT_CREATED_AT_DESC)]
    assert newest_first == [f.id for f in reversed(fans)]

    # Conversations, opened one after another: least recent activity first, and back.
    for index, fan in enumerate(fans):
        await stack.stub.SendMessage(
            crm_pb2.SendMessageRequest(fan_id=fan.id, text="hi", idempotency_key=f"k-{index}"),
            metadata=ada.auth,
        )

    def list_conversations(sort: int) -> Any:
        return _all_pages(
            lambda request: stack.stub.ListConversations(request, metadata=ada.auth),
            lambda page: crm_pb2.ListConversationsRequest(page=page, sort=sort),
            "conversations",
        )

    waited_longest = await list_conversations(crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_ASC)
    assert [c.fan_id for c in waited_longest] == [f.id for f in fans]
    latest = await list_conversations(crm_pb2.CONVERSATION_SORT_LAST_MESSAGE_AT_DESC)
    assert [c.fan_id for c in latest] == [f.id for f in reversed(fans)]
    fewest_unread = await list_conversations(crm_pb2.CONVERSATION_SORT_UNREAD_COUNT_ASC)
    assert [c.fan_id for c in fewest_unread] == [f.id for f in fans]

    # A cursor of one direction is refused by the other.
    first = await stack.stub.ListFans(
        crm_pb2.ListFansRequest(
            page=common_pb2.PageRequest(page_size=2), sort=crm_pb2.FAN_SORT_CREATED_AT_ASC
        ),
        metadata=ada.auth,
    )
    error = await helpers.rpc_error(
        stack.stub.ListFans(
            crm_pb2.ListFansRequest(
                page=common_pb2.PageRequest(page_size=2, page_token=first.page.next_page_token),
                sort=crm_pb2.FAN_SORT_CREATED_AT_DESC,
            ),
            metadata=ada.auth,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
