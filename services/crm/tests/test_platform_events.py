"""Platform events published to real NATS and applied by the CRM's consumers: idempotency,
delivery status, purchases, the events the CRM publishes, and the real-time inbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_crm.inbox import InboxPruner
from huntaze_kit.db import async_url, create_engine, session_factory


async def count_rows(database_url: str, sql: str, **params: Any) -> int:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text(sql), params)).scalar_one())
    finally:
        await engine.dispose()


async def subject_counts(stack: Any) -> dict[str, int]:
    """How many events the CRM published, by subject (read back from the CRM stream)."""
    info = await stack.nc.jetstream().stream_info("CRM", subjects_filter="crm.>")
    return dict(info.state.subjects or {})


async def test_the_same_platform_facts_twice_are_stored_once(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, _ = creators
    platform = stack.platform
    first = await platform.fan_writes(ada, platform_message_id="pm-1", text="hey you")
    # The same event again (redelivered past the stream's duplicate window), and the same
    # platform message under a new event id (the worker synced it twice).
    await platform.fan_writes(ada, platform_message_id="pm-1", event_id=first, msg_id="again")
    await platform.fan_writes(ada, platform_message_id="pm-1", text="hey you")
    await platform.fan_writes(ada, platform_message_id="pm-2", text="are you there?")

    purchase = of_events.PurchaseRecorded(
        creator_id=ada.id,
        platform_transaction_id="tx-1",
        fan=of_events.FanProfile(platform_fan_id="of-fan-1"),
        kind=of_events.PURCHASE_KIND_TIP,
        amount_cents=1500,
        currency="usd",
    )
    for _ in range(2):
        await platform.publish(
            "onlyfans.purchase.recorded", purchase, creator_id=ada.id, aggregate_id="of-fan-1"
        )

    conversations = await helpers.eventually(
        lambda: stack.stub.ListConversations(crm_pb2.ListConversationsRequest(), metadata=ada.auth),
        lambda page: len(page.conversations) == 1 and page.conversations[0].unread_count == 2,
    )
    conversation = conversations.conversations[0]
    assert conversation.last_message_preview == "are you there?"
    fan = await helpers.eventually(
        lambda: stack.stub.GetFan(
            crm_pb2.GetFanRequest(fan_id=conversation.fan_id), metadata=ada.auth
        ),
        lambda found: found.value_cents == 1500,
    )
    assert fan.display_name == "Lily"

    # Send the same reply twice with one idempotency key.
    request = crm_pb2.SendMessageRequest(
        conversation_id=conversation.id, text="Here I am", price_cents=999, idempotency_key="r-1"
    )
    one, two = await asyncio.gather(
        stack.stub.SendMessage(request, metadata=ada.auth),
        stack.stub.SendMessage(request, metadata=ada.auth),
    )
    assert one.message.id == two.message.id
    assert sorted([one.created, two.created]) == [False, True]

    url = stack.database_url
    await asyncio.sleep(0.3)  # let any late duplicate reach the consumers
    assert await count_rows(url, "SELECT count(*) FROM crm.messages") == 3
    assert await count_rows(url, "SELECT count(*) FROM crm.purchases") == 1
    assert await count_rows(url, "SELECT count(*) FROM crm.fans") == 1
    counts = await helpers.eventually(
        lambda: subject_counts(stack), lambda c: c.get("crm.message.send_requested") == 1
    )
    assert counts["crm.message.received"] == 2
    assert counts["crm.purchase.recorded"] == 1
    assert counts["crm.fan.created"] == 1


async def test_delivery_status_and_purchases_of_a_pay_per_view(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, _ = creators
    fan = await stack.stub.CreateFan(
        crm_pb2.CreateFanRequest(platform=crm_pb2.PLATFORM_ONLYFANS, platform_fan_id="of-9"),
        metadata=ada.auth,
    )
    ppv = (
        await stack.stub.SendMessage(
            crm_pb2.SendMessageRequest(
                fan_id=fan.id, text="Exclusive set", price_cents=1200, idempotency_key="ppv"
            ),
            metadata=ada.auth,
        )
    ).message
    doomed = (
        await stack.stub.SendMessage(
            crm_pb2.SendMessageRequest(fan_id=fan.id, text="bye", idempotency_key="doomed"),
            metadata=ada.auth,
        )
    ).message
    publish = stack.platform.publish
    # The unlock is seen before the worker reports the send: linked once the id is known.
    await publish(
        "onlyfans.purchase.recorded",
        of_events.PurchaseRecorded(
            creator_id=ada.id,
            platform_transaction_id="tx-ppv",
            fan=of_events.FanProfile(platform_fan_id="of-9"),
            kind=of_events.PURCHASE_KIND_PPV_UNLOCK,
            amount_cents=1200,
            currency="USD",
            platform_message_id="of-msg-77",
        ),
        creator_id=ada.id,
        aggregate_id="of-9",
    )
    await publish(
        "onlyfans.message.sending",
        of_events.MessageSending(creator_id=ada.id, message_id=ppv.id),
        creator_id=ada.id,
        aggregate_id="of-9",
    )
    await publish(
        "onlyfans.message.sent",
        of_events.MessageSent(
            creator_id=ada.id, idempotency_key="ppv", platform_message_id="of-msg-77"
        ),
        creator_id=ada.id,
        aggregate_id="of-9",
    )
    await publish(
        "onlyfans.message.failed",
        of_events.MessageFailed(
            creator_id=ada.id, message_id=doomed.id, reason="Subscription expired"
        ),
        creator_id=ada.id,
        aggregate_id="of-9",
    )

    def get(message_id: str) -> Any:
        return stack.stub.GetMessage(
            crm_pb2.GetMessageRequest(message_id=message_id), metadata=ada.auth
        )

    sent = await helpers.eventually(
        lambda: get(ppv.id), lambda m: m.delivery_status == crm_pb2.DELIVERY_STATUS_SENT
    )
    assert sent.platform_message_id == "of-msg-77"
    failed = await helpers.eventually(
        lambda: get(doomed.id), lambda m: m.delivery_status == crm_pb2.DELIVERY_STATUS_FAILED
    )
    assert failed.failure_reason == "Subscription expired"
    purchases = await helpers.eventually(
        lambda: stack.stub.ListFanPurchases(
            crm_pb2.ListFanPurchasesRequest(fan_id=fan.id), metadata=ada.auth
        ),
        lambda page: len(page.purchases) == 1 and page.purchases[0].message_id == ppv.id,
    )
    assert purchases.purchases[0].kind == crm_pb2.PURCHASE_KIND_PPV_UNLOCK
    assert (await get(ppv.id)).HasField("unlocked_at")
    spent = await stack.stub.GetFan(crm_pb2.GetFanRequest(fan_id=fan.id), metadata=ada.auth)
    assert spent.value_cents == 1200
    counts = await helpers.eventually(
        lambda: subject_counts(stack), lambda c: "crm.message.failed" in c
    )
    assert counts["crm.message.sent"] == 1


async def test_watch_inbox_follows_live_and_replays_what_was_missed(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, bea = creators
    stream = stack.stub.WatchInbox(crm_pb2.WatchInboxRequest(), metadata=ada.auth)
    intruder = stack.stub.WatchInbox(crm_pb2.WatchInboxRequest(), metadata=bea.auth)
    await helpers.eventually(
        lambda: asyncio.sleep(0, stack.crm.inbox.watcher_count), lambda n: n == 2
    )
    await stack.platform.fan_writes(ada, platform_message_id="live-1", text="first")

    async def next_event(call: Any) -> crm_pb2.InboxEvent:
        return await asyncio.wait_for(call.read(), 10)

    fan, received, updated = [await next_event(stream) for _ in range(3)]
    assert (fan.type, fan.fan.display_name) == ("fan.updated", "Lily")  # a new fan
    assert received.type == "message.received"
    assert received.message.text == "first"
    assert updated.type == "conversation.updated"
    assert updated.conversation.unread_count == 1
    stream.cancel()

    # Offline: two more messages and a read.
    await stack.platform.fan_writes(ada, platform_message_id="live-2", text="second")
    await stack.platform.fan_writes(ada, platform_message_id="live-3", text="third")
    conversation = await helpers.eventually(
        lambda: stack.stub.GetConversation(
            crm_pb2.GetConversationRequest(conversation_id=received.message.conversation_id),
            metadata=ada.auth,
        ),
        lambda c: c.unread_count == 3,
    )
    await stack.stub.MarkConversationRead(
        crm_pb2.MarkConversationReadRequest(conversation_id=conversation.id), metadata=ada.auth
    )

    resumed = stack.stub.WatchInbox(
        crm_pb2.WatchInboxRequest(after_event_id=updated.id), metadata=ada.auth
    )
    replayed = [await next_event(resumed) for _ in range(6)]
    assert [e.type for e in replayed] == [
        "message.received",
        "conversation.updated",
        "message.received",
        "conversation.updated",
        "message.read",
        "conversation.updated",
    ]
    assert [e.message.text for e in replayed if e.type == "message.received"] == [
        "second",
        "third",
    ]
    assert len(replayed[4].messages_read.message_ids) == 3
    assert replayed[5].conversation.unread_count == 0
    ids = [e.id for e in replayed]
    assert ids == sorted(ids)
    assert ids[0] > updated.id
    # ... then it follows live again.
    await stack.platform.fan_writes(ada, platform_message_id="live-4", text="fourth")
    live = await next_event(resumed)
    assert (live.type, live.message.text) == ("message.received", "fourth")
    resumed.cancel()

    # Past the retention, a resuming watcher is told to reload, then gets what is kept.
    engine = create_engine(stack.database_url, application_name="crm-tests")
    try:
        pruner = InboxPruner(session_factory(engine), retention=timedelta(hours=1), keep_events=2)
        assert await pruner.prune() > 0
    finally:
        await engine.dispose()
    stale = stack.stub.WatchInbox(
        crm_pb2.WatchInboxRequest(after_event_id=updated.id), metadata=ada.auth
    )
    reset, *kept = [await next_event(stale) for _ in range(3)]
    assert reset.type == "inbox.reset"
    assert [e.type for e in kept] == ["message.received", "conversation.updated"]
    stale.cancel()

    # The other creator saw nothing of it.
    try:
        leaked = await asyncio.wait_for(intruder.read(), 0.5)
    except TimeoutError:
        leaked = None
    assert leaked is None
    intruder.cancel()
