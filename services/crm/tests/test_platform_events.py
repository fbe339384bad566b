"""Platform events published to real NATS and applied by the CRM's consumers: idempotency,
delivery status, purchases, the events the CRM publishes, and the real-time inbox."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_crm.consumers import PlatformEvents
from huntaze_crm.inbox import InboxPruner
from huntaze_crm.service import Sender
from huntaze_kit.consumers import ReceivedEvent
from huntaze_kit.db import async_url, create_engine, session_factory
from huntaze_kit.dlq import list_dead_letters


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
    # The gateway's form of the stream: what was missed comes as one message.
    batches = stack.stub.WatchInboxBatches(
        crm_pb2.WatchInboxRequest(after_event_id=updated.id), metadata=ada.auth
    )
    assert list((await next_event(batches)).events) == replayed
    # ... then it follows live again.
    await stack.platform.fan_writes(ada, platform_message_id="live-4", text="fourth")
    live = await next_event(resumed)
    assert (live.type, live.message.text) == ("message.received", "fourth")
    resumed.cancel()
    live_batch = await next_event(batches)
    assert [e.type for e in live_batch.events] == ["message.received", "conversation.updated"]
    assert live_batch.events[0] == live
    batches.cancel()

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
    stale_batches = stack.stub.WatchInboxBatches(
        crm_pb2.WatchInboxRequest(after_event_id=updated.id), metadata=ada.auth
    )
    assert list((await next_event(stale_batches)).events) == [reset]
    assert list((await next_event(stale_batches)).events) == kept
    stale_batches.cancel()

    # The other creator saw nothing of it.
    try:
        leaked = await asyncio.wait_for(intruder.read(), 0.5)
    except TimeoutError:
        leaked = None
    assert leaked is None
    intruder.cancel()


def received_event(
    creator: Any,
    platform_message_id: str,
    platform_fan_id: str,
    text: str,
    *,
    display_name: str = "",
    sent_at: datetime | None = None,
    creator_header: str | None = None,
) -> ReceivedEvent:
    """A platform message event as the consumer hands it to its batch handler."""
    event = of_events.MessageReceived(
        creator_id=creator.id,
        platform_message_id=platform_message_id,
        fan=of_events.FanProfile(platform_fan_id=platform_fan_id, display_name=display_name),
        text=text,
    )
    if sent_at is not None:
        event.sent_at.FromDatetime(sent_at)
    return ReceivedEvent(
        event_id=uuid.uuid4(),
        subject="onlyfans.message.received",
        message_type=event.DESCRIPTOR.full_name,
        creator_id=creator_header if creator_header is not None else creator.id,
        request_id=None,
        payload=event.SerializeToString(),
        delivery_count=1,
        headers={},
        stream_sequence=0,
        occurred_at=None,
    )


async def test_a_batch_of_messages_is_stored_as_one_message_at_a_time_would_be(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, _ = creators
    await stack.platform.fan_writes(ada, platform_message_id="m0", platform_fan_id="of-a")
    before = await helpers.eventually(
        lambda: stack.stub.ListConversations(crm_pb2.ListConversationsRequest(), metadata=ada.auth),
        lambda page: len(page.conversations) == 1,
    )
    first = before.conversations[0]
    watch = stack.stub.WatchInbox(crm_pb2.WatchInboxRequest(), metadata=ada.auth)
    batches = stack.stub.WatchInboxBatches(crm_pb2.WatchInboxRequest(), metadata=ada.auth)
    await helpers.eventually(
        lambda: asyncio.sleep(0, stack.crm.inbox.watcher_count), lambda n: n == 2
    )

    now = datetime.now(UTC)
    batch = [
        received_event(ada, "m1", "of-a", "renamed", display_name="Lily Rose"),
        received_event(ada, "m2", "of-b", "hello from b", display_name="Bea"),
        received_event(ada, "m3", "of-a", "again"),
        received_event(ada, "m1", "of-a", "renamed"),  # the same platform message again
        received_event(ada, "m4", "of-b", "older", sent_at=now - timedelta(hours=1)),
        received_event(ada, "m0", "of-a", "stored before"),
    ]
    engine = create_engine(stack.database_url, application_name="crm-tests")
    try:
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            await PlatformEvents(stack.crm.service).messages(session, batch)
    finally:
        await engine.dispose()

    async def next_event() -> crm_pb2.InboxEvent:
        return await asyncio.wait_for(watch.read(), 10)  # type: ignore[no-any-return]

    seen = [await next_event() for _ in range(10)]
    watch.cancel()
    # The batch's events were committed together: they come in one message.
    batch = await asyncio.wait_for(batches.read(), 10)
    batches.cancel()
    assert list(batch.events) == seen
    assert [(e.type, e.message.text or e.fan.display_name) for e in seen] == [
        ("fan.updated", "Lily Rose"),
        ("message.received", "renamed"),
        ("conversation.updated", ""),
        ("fan.updated", "Bea"),
        ("message.received", "hello from b"),
        ("conversation.updated", ""),
        ("message.received", "again"),
        ("conversation.updated", ""),
        ("message.received", "older"),
        ("conversation.updated", ""),
    ]
    updates = [e.conversation for e in seen if e.type == "conversation.updated"]
    assert [(c.unread_count, c.last_message_preview) for c in updates] == [
        (2, "renamed"),
        (1, "hello from b"),
        (3, "again"),
        (2, "hello from b"),  # an older message leaves the preview as it is
    ]
    assert updates[0].id == first.id
    assert updates[0].fan.display_name == "Lily Rose"
    assert [e.id for e in seen] == sorted(e.id for e in seen)

    page = await stack.stub.ListConversations(crm_pb2.ListConversationsRequest(), metadata=ada.auth)
    assert [(c.fan.display_name, c.unread_count) for c in page.conversations] == [
        ("Lily Rose", 3),
        ("Bea", 2),
    ]
    lily, bea = page.conversations
    lily_messages = await stack.stub.ListMessages(
        crm_pb2.ListMessagesRequest(conversation_id=lily.id), metadata=ada.auth
    )
    assert [m.text for m in lily_messages.messages] == ["again", "renamed", "hi there"]
    messages = await stack.stub.ListMessages(
        crm_pb2.ListMessagesRequest(conversation_id=bea.id), metadata=ada.auth
    )
    assert [m.text for m in messages.messages] == ["hello from b", "older"]
    assert bea.fan.last_message_at == messages.messages[0].created_at
    url = stack.database_url
    assert await count_rows(url, "SELECT count(*) FROM crm.messages") == 5
    assert await count_rows(url, "SELECT count(*) FROM crm.fans") == 2
    counts = await helpers.eventually(
        lambda: subject_counts(stack), lambda c: c.get("crm.message.received") == 5
    )
    assert (counts["crm.fan.created"], counts["crm.fan.updated"]) == (2, 1)


async def test_a_bad_event_among_good_ones_is_dead_lettered_alone(
    stack: Any, creators: Any, helpers: Any
) -> None:
    ada, bea = creators
    platform = stack.platform
    good = [f"ok-{n}" for n in range(5)]
    for platform_message_id in good[:2]:
        await platform.fan_writes(ada, platform_message_id=platform_message_id)
    # The creator header names another creator than the payload: never applicable.
    await platform.publish(
        "onlyfans.message.received",
        of_events.MessageReceived(
            creator_id=ada.id,
            platform_message_id="bad",
            fan=of_events.FanProfile(platform_fan_id="of-fan-1"),
            text="bad",
        ),
        creator_id=bea.id,
        aggregate_id="of-fan-1",
    )
    for platform_message_id in good[2:]:
        await platform.fan_writes(ada, platform_message_id=platform_message_id)

    js = stack.nc.jetstream()
    letters = await helpers.eventually(
        lambda: list_dead_letters(js, consumer="crm-platform-messages"),
        lambda found: len(found) == 1,
    )
    assert "disagree" in (letters[0].error or "")
    await helpers.eventually(
        lambda: count_rows(stack.database_url, "SELECT count(*) FROM crm.messages"),
        lambda n: n == len(good),
    )
    stored = await stack.stub.ListMessages(
        crm_pb2.ListMessagesRequest(
            conversation_id=(
                await stack.stub.ListConversations(
                    crm_pb2.ListConversationsRequest(), metadata=ada.auth
                )
            )
            .conversations[0]
            .id
        ),
        metadata=ada.auth,
    )
    assert sorted(m.platform_message_id for m in stored.messages) == good


def platform_event(subject: str, payload: Any, creator: Any) -> ReceivedEvent:
    return ReceivedEvent(
        event_id=uuid.uuid4(),
        subject=subject,
        message_type=payload.DESCRIPTOR.full_name,
        creator_id=creator.id,
        request_id=None,
        payload=payload.SerializeToString(),
        delivery_count=1,
        headers={},
        stream_sequence=0,
        occurred_at=None,
    )


async def test_a_fan_sync_and_a_purchase_batch_over_the_same_fans_wait_instead_of_deadlocking(
    stack: Any, creators: Any, helpers: Any
) -> None:
    """A sync publishes fan and purchase events of the same fans, which two consumers apply at
    once in their own orders. One batch holds fan A and goes on to fan B while the other's
    batch names B before A: the second batch locks its fans in key order, so it waits for A
    without holding B, and both commit (before, each held the fan the other needed)."""
    ada, _ = creators
    for fan in ("of-a", "of-b"):
        await stack.platform.fan_writes(ada, platform_message_id=f"m-{fan}", platform_fan_id=fan)
    await helpers.eventually(
        lambda: stack.stub.ListFans(crm_pb2.ListFansRequest(), metadata=ada.auth),
        lambda page: len(page.fans) == 2,
    )

    def synced(fan: str) -> ReceivedEvent:
        return platform_event(
            "onlyfans.fan.synced",
            of_events.FanSynced(
                creator_id=ada.id,
                fan=of_events.FanProfile(platform_fan_id=fan, display_name=f"Synced {fan}"),
                subscription_state=of_events.SUBSCRIPTION_STATE_ACTIVE,
            ),
            ada,
        )

    def bought(fan: str) -> ReceivedEvent:
        return platform_event(
            "onlyfans.purchase.recorded",
            of_events.PurchaseRecorded(
                creator_id=ada.id,
                platform_transaction_id=f"t-{fan}",
                fan=of_events.FanProfile(platform_fan_id=fan),
                kind=of_events.PURCHASE_KIND_TIP,
                amount_cents=500,
                currency="USD",
            ),
            ada,
        )

    handlers = PlatformEvents(stack.crm.service)
    engine = create_engine(stack.database_url, application_name="crm-tests-sync")
    other_engine = create_engine(stack.database_url, application_name="crm-tests-purchases")
    try:
        sessions, other_sessions = session_factory(engine), session_factory(other_engine)
        async with sessions() as session, session.begin():
            await handlers.fans(session, [synced("of-a")])  # holds fan A

            async def purchases() -> None:
                async with other_sessions() as other, other.begin():
                    await handlers.purchases(other, [bought("of-b"), bought("of-a")])

            concurrent = asyncio.create_task(purchases())
            await helpers.eventually(
                lambda: count_rows(
                    stack.database_url,
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'crm-tests-purchases' AND wait_event_type = 'Lock'",
                ),
                lambda waiting: waiting == 1,
            )
            await handlers.fans(session, [synced("of-b")])  # then fan B, in the same batch
        await asyncio.wait_for(concurrent, 30)
    finally:
        await engine.dispose()
        await other_engine.dispose()

    fans = await stack.stub.ListFans(crm_pb2.ListFansRequest(), metadata=ada.auth)
    assert sorted((f.display_name, f.value_cents) for f in fans.fans) == [
        ("Synced of-a", 500),
        ("Synced of-b", 500),
    ]


async def test_an_unsent_mass_message_is_unsent_in_the_crm_once(
    stack: Any, creators: Any, helpers: Any
) -> None:
    """A campaign's mass message the worker deleted from the fans' chats: each copy it names
    moves from sent to unsent, once (the same outcome again, under another event id, changes
    nothing), with a `message.status_changed` on the creator's inbox stream; copies of another
    mass message stay sent."""
    ada, _ = creators
    fans = [
        await stack.stub.CreateFan(
            crm_pb2.CreateFanRequest(
                platform=crm_pb2.PLATFORM_ONLYFANS, platform_fan_id=f"of-mass-{index}"
            ),
            metadata=ada.auth,
        )
        for index in range(3)
    ]
    creator_id = uuid.UUID(ada.id)

    async def mass(key: str, fan_ids: list[str]) -> list[str]:
        recorded = await stack.crm.service.record_mass_message(
            creator_id=creator_id,
            sender=Sender("automation", "campaigns"),
            fan_ids=fan_ids,
            text=f"Weekend set {key}",
            price_cents=900,
            attachments=[],
            idempotency_key=key,
        )
        ids = [str(recipient.message.id) for recipient in recorded if recipient.message]
        await stack.platform.publish(
            "onlyfans.mass_message.queued",
            of_events.MassMessageQueued(
                creator_id=ada.id, idempotency_key=key, platform_queue_id="7", message_ids=ids
            ),
            creator_id=ada.id,
            aggregate_type="mass_message",
            aggregate_id=f"mass:{key}",
        )
        return ids

    taken_back = await mass("campaign:a", [fans[0].id, fans[1].id])
    kept = await mass("campaign:b", [fans[2].id])

    def get(message_id: str) -> Any:
        return stack.stub.GetMessage(
            crm_pb2.GetMessageRequest(message_id=message_id), metadata=ada.auth
        )

    for message_id in taken_back + kept:
        await helpers.eventually(
            lambda message_id=message_id: get(message_id),
            lambda m: m.delivery_status == crm_pb2.DELIVERY_STATUS_SENT,
        )
    watch = stack.stub.WatchInbox(crm_pb2.WatchInboxRequest(), metadata=ada.auth)
    await helpers.eventually(
        lambda: asyncio.sleep(0, stack.crm.inbox.watcher_count), lambda n: n == 1
    )
    unsent = of_events.MassMessageUnsent(
        creator_id=ada.id, idempotency_key="campaign:a", platform_queue_id="7"
    )
    unsent.message_ids.extend(taken_back)
    outcomes = [  # the worker's outcome, and the same fact published again
        await stack.platform.publish(
            "onlyfans.mass_message.unsent",
            unsent,
            creator_id=ada.id,
            aggregate_type="mass_message",
            aggregate_id="mass:campaign:a",
        )
        for _ in range(2)
    ]

    changed = [await asyncio.wait_for(watch.read(), 10) for _ in range(2)]
    assert {(e.type, e.message.id) for e in changed} == {
        ("message.status_changed", message_id) for message_id in taken_back
    }
    assert {e.message.delivery_status for e in changed} == {crm_pb2.DELIVERY_STATUS_UNSENT}
    for message_id in taken_back:
        assert (await get(message_id)).delivery_status == crm_pb2.DELIVERY_STATUS_UNSENT
    assert (await get(kept[0])).delivery_status == crm_pb2.DELIVERY_STATUS_SENT

    # The repeated outcome is applied (its event id recorded) without a second change: the
    # next inbox event is a fan's new message, not another status change.
    await helpers.eventually(
        lambda: count_rows(
            stack.database_url,
            "SELECT count(*) FROM crm.processed_events WHERE event_id = ANY(CAST(:ids AS uuid[]))",
            ids=outcomes,
        ),
        lambda n: n == 2,
    )
    await stack.platform.fan_writes(ada, platform_message_id="after-unsend", text="where is it?")
    following = await asyncio.wait_for(watch.read(), 10)
    assert following.type != "message.status_changed"
    watch.cancel()
