"""The worker service end to end: gRPC connect, sync, push, sends and account care, with real
Chromium, the platform simulator over loopback, real NATS, PostgreSQL and auth."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from sqlalchemy import text

from huntaze.campaigns.v1 import events_pb2 as campaign_events
from huntaze.common.v1 import common_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.crm.v1 import events_pb2 as crm_events
from huntaze.onlyfans.v1 import events_pb2, onlyfans_pb2
from huntaze_devstack.testing import PlatformEvents, eventually
from huntaze_onlyfans_worker.accounts import CREDENTIALS, Accounts, StoredLogin
from huntaze_onlyfans_worker.models import SendAttempt
from huntaze_simulator.testing import Simulator

from .conftest import PLATFORM_EMAIL, PLATFORM_PASSWORD, Creator, WorkerStack

CONNECTED = onlyfans_pb2.CONNECTION_STATE_CONNECTED


async def connected_and_synced(worker_stack: WorkerStack) -> Creator:
    """A creator whose account is connected (password login) and synced once."""
    creator = await worker_stack.sign_up()
    status = await worker_stack.connect(creator)
    assert status.state == CONNECTED
    await eventually(
        lambda: worker_stack.stub.GetStatus(onlyfans_pb2.GetStatusRequest(), metadata=creator.auth),
        lambda status: status.HasField("last_synced_at"),
    )
    return creator


async def request_send(
    worker_stack: WorkerStack,
    creator: Creator,
    fan_id: int,
    text: str,
    *,
    key: str,
    event_id: str | None = None,
) -> str:
    event = crm_events.MessageSendRequested(
        creator_id=creator.id,
        message_id=str(uuid.uuid4()),
        platform=crm_pb2.PLATFORM_ONLYFANS,
        platform_fan_id=str(fan_id),
        text=text,
        idempotency_key=key,
    )
    return await PlatformEvents(worker_stack.nc.jetstream()).publish(
        "crm.message.send_requested",
        event,
        creator_id=creator.id,
        aggregate_type="message",
        aggregate_id=event.message_id,
        event_id=event_id,
        msg_id=str(uuid.uuid4()),
    )


async def interrupted_attempt(accounts: Accounts, creator: Creator, fan_id: int, key: str) -> None:
    """What a worker stopped mid-send leaves: the attempt committed as `sending`."""
    async with accounts.sessions() as session, session.begin():
        session.add(
            SendAttempt(
                idempotency_key=key,
                creator_id=uuid.UUID(creator.id),
                message_id=str(uuid.uuid4()),
                platform_fan_id=str(fan_id),
                state="sending",
                attempts=1,
                started_at=accounts.clock(),
            )
        )


async def sent_to(simulator: Simulator, fan_id: int) -> list[dict[str, object]]:
    answer = await simulator.control.get("/_control/sent", params={"fan_id": fan_id})
    answer.raise_for_status()
    sent: list[dict[str, object]] = answer.json()
    return sent


async def settled(worker_stack: WorkerStack, handled: int) -> None:
    """Waits until the send consumer has handled `handled` commands (applied or duplicate)."""
    consumer = worker_stack.worker.consumers[0]
    await eventually(
        lambda: asyncio.sleep(0, consumer.processed + consumer.duplicates),
        lambda count: count >= handled,
    )


async def fans_on_platform(simulator: Simulator) -> int:
    state = (await simulator.control.get("/_control/state")).json()
    return int(state["fans"])


async def test_connect_with_otp_then_sync_emits_fans_messages_and_purchases(
    worker_stack: WorkerStack,
) -> None:
    simulator = worker_stack.simulator
    await simulator.control.patch("/_control/config", json={"otp_required": True})
    creator = await worker_stack.sign_up()
    first = await worker_stack.connect(creator)
    assert first.state == onlyfans_pb2.CONNECTION_STATE_NEEDS_OTP
    with pytest.raises(grpc.aio.AioRpcError) as no_code:
        await worker_stack.stub.SubmitOtp(
            onlyfans_pb2.SubmitOtpRequest(code=""), metadata=creator.auth
        )
    assert no_code.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    code = (await simulator.control.get("/_control/otp")).json()["code"]
    done = await worker_stack.stub.SubmitOtp(
        onlyfans_pb2.SubmitOtpRequest(code=code), metadata=creator.auth
    )
    assert done.status.state == CONNECTED
    assert done.status.username
    assert PLATFORM_PASSWORD not in str(done)

    events = worker_stack.events
    connected = await events.wait_for("onlyfans.account.connected", events_pb2.AccountConnected)
    assert connected[0].creator_id == creator.id
    fans = await events.wait_for(
        "onlyfans.fan.synced", events_pb2.FanSynced, count=await fans_on_platform(simulator)
    )
    assert {fan.creator_id for fan in fans} == {creator.id}
    messages = await events.wait_for("onlyfans.message.received", events_pb2.MessageReceived)
    assert all(m.fan.platform_fan_id and m.platform_message_id for m in messages)
    purchases = await events.wait_for("onlyfans.purchase.recorded", events_pb2.PurchaseRecorded)
    assert {p.kind for p in purchases} >= {events_pb2.PURCHASE_KIND_SUBSCRIPTION}

    status = await eventually(
        lambda: worker_stack.stub.GetStatus(onlyfans_pb2.GetStatusRequest(), metadata=creator.auth),
        lambda status: status.HasField("last_synced_at"),
    )
    assert status.state == CONNECTED


async def test_a_fans_message_arrives_through_the_push_socket(worker_stack: WorkerStack) -> None:
    await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    fan = await simulator.new_fan(name="Kai")
    text = f"hello {uuid.uuid4().hex[:8]}"
    await simulator.fan_writes(fan["id"], text)
    # The periodic sync is an hour away: only the push socket can bring it this fast.
    received = await worker_stack.events.wait_for(
        "onlyfans.message.received",
        events_pb2.MessageReceived,
        lambda message: message.text == text,
        timeout=5.0,
    )
    assert received[0].fan.platform_fan_id == str(fan["id"])
    assert received[0].fan.display_name == "Kai"


async def test_a_reply_is_sent_once_and_repeated_commands_change_nothing(
    worker_stack: WorkerStack,
) -> None:
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    fan = await simulator.new_fan(name="Robin")
    key = str(uuid.uuid4())
    event_id = await request_send(worker_stack, creator, fan["id"], "Thanks, Robin!", key=key)
    sent = await worker_stack.events.wait_for(
        "onlyfans.message.sent", events_pb2.MessageSent, lambda m: m.idempotency_key == key
    )
    await worker_stack.events.wait_for(
        "onlyfans.message.sending", events_pb2.MessageSending, lambda m: m.idempotency_key == key
    )
    copies = await sent_to(simulator, fan["id"])
    assert [copy["text"] for copy in copies] == ["Thanks, Robin!"]
    assert sent[0].platform_message_id == str(copies[0]["id"])

    # The same event again, and a new event with the same idempotency key.
    await request_send(
        worker_stack, creator, fan["id"], "Thanks, Robin!", key=key, event_id=event_id
    )
    await request_send(worker_stack, creator, fan["id"], "Thanks, Robin!", key=key)
    await settled(worker_stack, 3)
    assert len(await sent_to(simulator, fan["id"])) == 1
    assert len(await worker_stack.events.of("onlyfans.message.sent", events_pb2.MessageSent)) == 1


async def test_a_send_the_platform_refuses_fails_with_a_reason(worker_stack: WorkerStack) -> None:
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    fan = await simulator.new_fan(name="Gone")
    (await simulator.control.post(f"/_control/fans/{fan['id']}/unsubscribe")).raise_for_status()
    key = str(uuid.uuid4())
    await request_send(worker_stack, creator, fan["id"], "Miss you", key=key)
    failed = await worker_stack.events.wait_for(
        "onlyfans.message.failed", events_pb2.MessageFailed, lambda m: m.idempotency_key == key
    )
    assert "Cannot send message to this user" in failed[0].reason
    assert await sent_to(simulator, fan["id"]) == []


async def test_an_ended_session_is_replaced_by_a_new_login(worker_stack: WorkerStack) -> None:
    await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    (await simulator.control.delete("/_control/sessions")).raise_for_status()
    await worker_stack.events.wait_for(
        "onlyfans.account.connected", events_pb2.AccountConnected, count=2, timeout=20.0
    )
    fan = await simulator.new_fan(name="Mia")
    text = f"still there? {uuid.uuid4().hex[:6]}"
    await simulator.fan_writes(fan["id"], text)
    await worker_stack.events.wait_for(
        "onlyfans.message.received", events_pb2.MessageReceived, lambda m: m.text == text
    )
    assert (
        await worker_stack.events.of(
            "onlyfans.account.needs_attention", events_pb2.AccountNeedsAttention
        )
        == []
    )


async def test_a_wrong_password_fails_and_a_refused_stored_one_needs_attention(
    worker_stack: WorkerStack,
) -> None:
    creator = await worker_stack.sign_up()
    wrong = await worker_stack.stub.Connect(
        onlyfans_pb2.ConnectRequest(
            credentials=onlyfans_pb2.Credentials(email=PLATFORM_EMAIL, password="not-it")
        ),
        metadata=creator.auth,
    )
    assert wrong.status.state == onlyfans_pb2.CONNECTION_STATE_FAILED
    assert "Wrong email or password" in wrong.status.reason
    assert "not-it" not in str(wrong)

    assert (await worker_stack.connect(creator)).state == CONNECTED
    accounts = worker_stack.worker.accounts
    assert accounts is not None
    async with accounts.sessions() as session, session.begin():
        await accounts.vault.seal(
            session,
            creator_id=uuid.UUID(creator.id),
            name=CREDENTIALS,
            secret=StoredLogin(email=PLATFORM_EMAIL, password="changed-since").encode(),
        )
    (await worker_stack.simulator.control.delete("/_control/sessions")).raise_for_status()
    attention = await worker_stack.events.wait_for(
        "onlyfans.account.needs_attention", events_pb2.AccountNeedsAttention, timeout=20.0
    )
    assert attention[0].reason == events_pb2.ATTENTION_REASON_WRONG_PASSWORD
    assert "changed-since" not in attention[0].message
    status = await worker_stack.stub.GetStatus(
        onlyfans_pb2.GetStatusRequest(), metadata=creator.auth
    )
    assert status.state == onlyfans_pb2.CONNECTION_STATE_NEEDS_ATTENTION


async def test_a_bot_challenge_pauses_until_a_session_is_imported(
    worker_stack: WorkerStack,
) -> None:
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    await simulator.control.patch("/_control/config", json={"bot_challenge": True})
    (await simulator.control.delete("/_control/sessions")).raise_for_status()
    attention = await worker_stack.events.wait_for(
        "onlyfans.account.needs_attention", events_pb2.AccountNeedsAttention, timeout=20.0
    )
    assert attention[0].reason == events_pb2.ATTENTION_REASON_CHALLENGE
    status = await worker_stack.stub.GetStatus(
        onlyfans_pb2.GetStatusRequest(), metadata=creator.auth
    )
    assert status.state == onlyfans_pb2.CONNECTION_STATE_NEEDS_SESSION_IMPORT
    assert not any(
        c["solved"] for c in (await simulator.control.get("/_control/challenges")).json()
    )

    browser = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"
    copied = (
        await simulator.control.post("/_control/sessions", json={"user_agent": browser})
    ).json()
    imported = await worker_stack.stub.Connect(
        onlyfans_pb2.ConnectRequest(
            session=onlyfans_pb2.ImportedSession(
                cookies=copied["cookies"], x_bc=copied["x_bc"], user_agent=browser
            )
        ),
        metadata=creator.auth,
    )
    assert imported.status.state == CONNECTED
    assert copied["cookies"]["sess"] not in str(imported)
    fan = await simulator.new_fan(name="Ivy")
    await simulator.fan_writes(fan["id"], "back again")
    await worker_stack.events.wait_for(
        "onlyfans.message.received", events_pb2.MessageReceived, lambda m: m.text == "back again"
    )


async def test_a_rate_limit_backs_off_then_the_send_goes_through(
    worker_stack: WorkerStack,
) -> None:
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    fan = await simulator.new_fan(name="Lou")
    await simulator.control.patch(
        "/_control/config",
        json={
            "rate_limit_requests": 1,
            "rate_limit_window_seconds": 60,
            "rate_limit_block_seconds": 30,
        },
    )
    key = str(uuid.uuid4())
    await request_send(worker_stack, creator, fan["id"], "Easy now", key=key)
    consumer = worker_stack.worker.consumers[0]
    await eventually(lambda: asyncio.sleep(0, consumer.retried), lambda retried: retried >= 1)
    assert await sent_to(simulator, fan["id"]) == []
    await simulator.control.patch("/_control/config", json={"rate_limit_requests": 1000})
    await simulator.advance(31)
    await worker_stack.events.wait_for(
        "onlyfans.message.sent", events_pb2.MessageSent, lambda m: m.idempotency_key == key
    )
    assert len(await sent_to(simulator, fan["id"])) == 1


async def test_rotated_rules_are_picked_up_by_a_requested_sync(worker_stack: WorkerStack) -> None:
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    first = await worker_stack.stub.GetStatus(
        onlyfans_pb2.GetStatusRequest(), metadata=creator.auth
    )
    rotated = (await simulator.control.post("/_control/rules/rotate")).json()
    answer = await worker_stack.stub.RequestSync(
        onlyfans_pb2.RequestSyncRequest(), metadata=creator.auth
    )
    assert answer.accepted
    await eventually(
        lambda: worker_stack.stub.GetStatus(onlyfans_pb2.GetStatusRequest(), metadata=creator.auth),
        lambda status: status.last_synced_at.ToDatetime() > first.last_synced_at.ToDatetime(),
    )
    driver = worker_stack.worker.driver
    assert driver is not None
    # A sync already under way may finish first, with every call made before the rotation: the
    # requested one, made after it, is refused once and brings the new rules.
    await eventually(driver.rules.current, lambda rules: rules.revision == rotated["revision"])
    assert (
        await worker_stack.events.of(
            "onlyfans.account.needs_attention", events_pb2.AccountNeedsAttention
        )
        == []
    )


async def test_a_send_interrupted_after_the_platform_took_it_is_not_sent_again(
    worker_stack: WorkerStack,
) -> None:
    """The state a worker killed between the platform's answer and its commit leaves behind: the
    attempt committed as `sending`, the copy on the platform. The redelivered command finds the
    copy in the chat and records it as sent; nothing is sent twice."""
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    fan = await simulator.new_fan(name="Noor")
    accounts = worker_stack.worker.accounts
    assert accounts is not None
    key = str(uuid.uuid4())
    await interrupted_attempt(accounts, creator, fan["id"], key)
    delivered = await accounts.drive(
        uuid.UUID(creator.id),
        lambda account: accounts.driver.send_message(account, str(fan["id"]), text="See you at 8"),
    )
    await request_send(worker_stack, creator, fan["id"], "See you at 8", key=key)
    sent = await worker_stack.events.wait_for(
        "onlyfans.message.sent", events_pb2.MessageSent, lambda m: m.idempotency_key == key
    )
    assert sent[0].platform_message_id == delivered.platform_message_id
    assert len(await sent_to(simulator, fan["id"])) == 1

    # Interrupted before the platform took it: the copy is not there, so it is sent.
    other = str(uuid.uuid4())
    await interrupted_attempt(accounts, creator, fan["id"], other)
    await request_send(worker_stack, creator, fan["id"], "Running late", key=other)
    await worker_stack.events.wait_for(
        "onlyfans.message.sent", events_pb2.MessageSent, lambda m: m.idempotency_key == other
    )
    assert [c["text"] for c in await sent_to(simulator, fan["id"])] == [
        "See you at 8",
        "Running late",
    ]


async def test_a_login_the_platform_slows_down_is_refused_for_now_and_stores_nothing(
    worker_stack: WorkerStack,
) -> None:
    simulator = worker_stack.simulator
    # The home page's own script spends the only request: the worker's profile call gets a 429.
    await simulator.control.patch(
        "/_control/config",
        json={
            "rate_limit_requests": 1,
            "rate_limit_window_seconds": 60,
            "rate_limit_block_seconds": 30,
        },
    )
    creator = await worker_stack.sign_up()
    with pytest.raises(grpc.aio.AioRpcError) as slowed:
        await worker_stack.connect(creator)
    assert slowed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = await worker_stack.stub.GetStatus(
        onlyfans_pb2.GetStatusRequest(), metadata=creator.auth
    )
    assert status.state != CONNECTED
    driver = worker_stack.worker.driver
    assert driver is not None
    assert not driver.holds(creator.id)

    await simulator.control.patch("/_control/config", json={"rate_limit_requests": 1000})
    await simulator.advance(31)
    assert (await worker_stack.connect(creator)).state == CONNECTED


async def test_the_vault_is_listed_from_the_platform_page_by_page(
    worker_stack: WorkerStack,
) -> None:
    stranger = await worker_stack.sign_up()
    with pytest.raises(grpc.aio.AioRpcError) as not_connected:
        await worker_stack.stub.ListVaultMedia(
            onlyfans_pb2.ListVaultMediaRequest(), metadata=stranger.auth
        )
    assert not_connected.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    creator = await connected_and_synced(worker_stack)
    for page, field in (
        (common_pb2.PageRequest(page_size=101), "page.page_size"),
        (common_pb2.PageRequest(page_token="not-a-cursor"), "page.page_token"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await worker_stack.stub.ListVaultMedia(
                onlyfans_pb2.ListVaultMediaRequest(page=page), metadata=creator.auth
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (refused.value.details() or "")

    listed: list[onlyfans_pb2.VaultMedia] = []
    sizes: list[int] = []
    token = ""
    while True:
        answer = await worker_stack.stub.ListVaultMedia(
            onlyfans_pb2.ListVaultMediaRequest(
                page=common_pb2.PageRequest(page_size=5, page_token=token)
            ),
            metadata=creator.auth,
        )
        listed.extend(answer.media)
        sizes.append(len(answer.media))
        token = answer.page.next_page_token
        if not token:
            break
    # The simulated platform starts with 12 files in the vault: a third videos.
    assert sizes == [5, 5, 2]
    assert len({media.platform_media_id for media in listed}) == 12
    videos = [media for media in listed if media.kind == events_pb2.MEDIA_KIND_VIDEO]
    assert len(videos) == 4
    assert all(media.duration_seconds > 0 for media in videos)
    assert all(media.kind == events_pb2.MEDIA_KIND_IMAGE for media in listed if media not in videos)
    assert all(media.HasField("created_at") and media.thumbnail_url for media in listed)

    # A listed id is one the platform takes in a pay-per-view message.
    accounts = worker_stack.worker.accounts
    assert accounts is not None
    fan = await worker_stack.simulator.new_fan(name="Robin")
    await accounts.drive(
        uuid.UUID(creator.id),
        lambda account: accounts.driver.send_message(
            account,
            str(fan["id"]),
            text="Just for you",
            price_cents=999,
            media_ids=(listed[0].platform_media_id,),
        ),
    )
    copies = await sent_to(worker_stack.simulator, fan["id"])
    assert [(copy["price"], copy["media_files"]) for copy in copies] == [
        (9.99, [int(listed[0].platform_media_id)])
    ]


async def test_a_mass_message_is_queued_once_and_each_unsend_command_deletes_it_at_most_once(
    worker_stack: WorkerStack,
) -> None:
    """The campaigns' commands: a mass message queued on the platform, then taken back. A worker
    stopped after the delete but before its commit (the ledger's completed row, the queue
    cancelled) records the command as done without deleting again; one stopped mid-delete with
    the queue still there reports it, without deleting (at most once)."""
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    fans = [await simulator.new_fan(name=f"Mass {i}") for i in range(3)]
    publisher = PlatformEvents(worker_stack.nc.jetstream())
    accounts = worker_stack.worker.accounts
    assert accounts is not None

    async def queue(key: str) -> str:
        await publisher.publish(
            "campaigns.mass_message.send_requested",
            campaign_events.MassMessageSendRequested(
                creator_id=creator.id,
                idempotency_key=key,
                text=f"All of you ({key})",
                platform_fan_ids=[str(fan["id"]) for fan in fans],
            ),
            creator_id=creator.id,
            aggregate_type="mass_message",
            aggregate_id=key,
        )
        queued = await worker_stack.events.wait_for(
            "onlyfans.mass_message.queued",
            events_pb2.MassMessageQueued,
            lambda m: m.idempotency_key == key,
        )
        return queued[0].platform_queue_id

    async def unsend(key: str, queue_id: str, event_id: str) -> tuple[str, str]:
        """The command published; the outcome's subject and reason. An unsent outcome names
        the CRM messages the command named (the CRM marks them unsent), a failed one none."""
        crm_message_ids = [str(uuid.uuid4()) for _ in fans]
        await publisher.publish(
            "campaigns.mass_message.unsend_requested",
            campaign_events.MassMessageUnsendRequested(
                creator_id=creator.id,
                idempotency_key=key,
                platform_queue_id=queue_id,
                crm_message_ids=crm_message_ids,
            ),
            creator_id=creator.id,
            aggregate_type="mass_message",
            aggregate_id=key,
            event_id=event_id,
        )

        async def outcomes() -> list[tuple[str, str, list[str]]]:
            found = []
            for subject in ("onlyfans.mass_message.unsent", "onlyfans.mass_message.unsend_failed"):
                found += [
                    (subject, m.reason, list(m.message_ids))
                    for m in await worker_stack.events.of(subject, events_pb2.MassMessageUnsent)
                    if m.idempotency_key == key and m.platform_queue_id == queue_id
                ]
            return found

        subject, reason, named = (await eventually(outcomes, lambda found: len(found) == 1))[0]
        assert named == (crm_message_ids if subject == "onlyfans.mass_message.unsent" else [])
        return subject, reason

    def copies(queue_id: str) -> int:
        return sum(
            1
            for chat in simulator.platform.data.messages.values()
            for message in chat
            if message.queue_id == int(queue_id)
        )

    first = await queue("campaign-a")
    await eventually(lambda: asyncio.sleep(0, copies(first)), lambda n: n == 3)
    assert await unsend("campaign-a", first, str(uuid.uuid4())) == (
        "onlyfans.mass_message.unsent",
        "",
    )
    assert copies(first) == 0

    # Deleted, then the worker stopped before its commit: the redelivered command (a new event
    # id here, with its ledger row as the stopped worker left it) deletes nothing again.
    second = await queue("campaign-b")
    replayed = str(uuid.uuid4())
    await accounts.drive(
        uuid.UUID(creator.id),
        lambda account: accounts.driver.unsend_mass_message(account, second),
    )
    async with accounts.sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO onlyfans.effect_ledger (consumer, event_id, effect, completed_at)"
                " VALUES ('worker-campaigns', :event_id, 'unsend_mass_message', now())"
            ),
            {"event_id": uuid.UUID(replayed)},
        )
    assert await unsend("campaign-b", second, replayed) == ("onlyfans.mass_message.unsent", "")

    # Stopped mid-delete, the queue still there: reported, not deleted (at most once).
    third = await queue("campaign-c")
    await eventually(lambda: asyncio.sleep(0, copies(third)), lambda n: n == 3)
    interrupted = str(uuid.uuid4())
    async with accounts.sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO onlyfans.effect_ledger (consumer, event_id, effect)"
                " VALUES ('worker-campaigns', :event_id, 'unsend_mass_message')"
            ),
            {"event_id": uuid.UUID(interrupted)},
        )
    subject, reason = await unsend("campaign-c", third, interrupted)
    assert subject == "onlyfans.mass_message.unsend_failed"
    assert "Interrupted" in reason
    assert copies(third) == 3


async def test_a_mass_message_interrupted_mid_send_is_found_on_the_platform_or_queued_once(
    worker_stack: WorkerStack,
) -> None:
    """A worker stopped mid-send leaves the attempt `sending`. If the platform took the mass
    message, the redelivered command finds it among the queue's statistics and records it;
    if not, it is queued now. Either way one queue per key."""
    creator = await connected_and_synced(worker_stack)
    simulator = worker_stack.simulator
    fans = [await simulator.new_fan(name=f"Queue {i}") for i in range(2)]
    ids = [str(fan["id"]) for fan in fans]
    accounts = worker_stack.worker.accounts
    assert accounts is not None
    publisher = PlatformEvents(worker_stack.nc.jetstream())

    async def interrupted(key: str) -> None:
        async with accounts.sessions() as session, session.begin():
            session.add(
                SendAttempt(
                    idempotency_key=f"mass:{key}",
                    creator_id=uuid.UUID(creator.id),
                    message_id="",
                    platform_fan_id="",
                    state="sending",
                    attempts=1,
                    started_at=accounts.clock(),
                )
            )

    async def command(key: str, text: str) -> str:
        await publisher.publish(
            "campaigns.mass_message.send_requested",
            campaign_events.MassMessageSendRequested(
                creator_id=creator.id, idempotency_key=key, text=text, platform_fan_ids=ids
            ),
            creator_id=creator.id,
            aggregate_type="mass_message",
            aggregate_id=key,
        )
        queued = await worker_stack.events.wait_for(
            "onlyfans.mass_message.queued",
            events_pb2.MassMessageQueued,
            lambda m: m.idempotency_key == key,
        )
        return queued[0].platform_queue_id

    def queues_saying(text: str) -> list[int]:
        return [q.id for q in simulator.platform.data.mass_messages.values() if q.text == text]

    # The platform took it before the stop: found, not queued again.
    await interrupted("taken")
    made = await accounts.drive(
        uuid.UUID(creator.id),
        lambda account: accounts.driver.send_mass_message(
            account, text="Taken before the stop", platform_fan_ids=tuple(ids)
        ),
    )
    assert await command("taken", "Taken before the stop") == made
    assert len(queues_saying("Taken before the stop")) == 1

    # Stopped before the platform took it: queued now, once.
    await interrupted("lost")
    found = await command("lost", "Lost in the stop")
    assert queues_saying("Lost in the stop") == [int(found)]
