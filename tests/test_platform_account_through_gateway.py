"""The creator's platform account on the inbox stream, every service a real process: when the
OnlyFans worker pauses the account (`onlyfans.account.needs_attention`), the creator's
Server-Sent Events stream carries a banner event saying why and what to do; when the account is
connected again (`onlyfans.account.connected`), an event takes the banner down. Events that are
not well-formed are dead-lettered, not shown."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_devstack.testing import EventStreamReader, PlatformEvents, SseEvent, inbox_stream
from tests.conftest import Suite

NEEDS_ATTENTION = "onlyfans.account.needs_attention"
CONNECTED = "onlyfans.account.connected"


async def _until_joined(
    stream: EventStreamReader, worker: PlatformEvents, creator_id: str
) -> SseEvent:
    """The stream is open before the CRM joins this watcher: pause the account until it shows."""
    for _ in range(20):
        await worker.publish(
            NEEDS_ATTENTION,
            of_events.AccountNeedsAttention(
                creator_id=creator_id,
                reason=of_events.ATTENTION_REASON_CHALLENGE,
                message="The platform shows a check only you can pass: import a session.",
            ),
            creator_id=creator_id,
            aggregate_type="account",
            aggregate_id=creator_id,
        )
        with contextlib.suppress(TimeoutError):
            return await stream.until("account.needs_attention", within=3.0)
    pytest.fail("no account.needs_attention on the stream")


async def test_a_paused_account_shows_a_banner_that_its_reconnection_takes_down(
    suite: Suite, worker: PlatformEvents
) -> None:
    async with suite.signed_in() as (creator_id, token, _client):
        async with inbox_stream(suite.gateway_url, token) as stream:
            banner = await _until_joined(stream, worker, creator_id)
            assert banner.id is not None
            assert banner.data is not None
            assert banner.data["type"] == "account.needs_attention"
            notice = banner.data["account"]
            assert notice["platform"] == "onlyfans"
            assert notice["state"] == "needs_attention"
            assert notice["reason"] == "challenge"
            assert notice["message"].endswith("import a session.")

            await worker.publish(
                CONNECTED,
                of_events.AccountConnected(
                    creator_id=creator_id, platform_user_id="of-42", username="ada.creates"
                ),
                creator_id=creator_id,
                aggregate_type="account",
                aggregate_id=creator_id,
            )
            cleared = await stream.until("account.connected")
            assert cleared.data is not None
            assert cleared.data["account"]["state"] == "connected"
            assert cleared.data["account"]["username"] == "ada.creates"
            assert cleared.id is not None
            assert cleared.id > banner.id

        # A client resuming from the banner gets what came after it: the account connected.
        async with inbox_stream(
            suite.gateway_url, token, headers={"last-event-id": str(banner.id)}
        ) as resumed:
            replayed = await resumed.until("account.connected")
            assert replayed.id == cleared.id


async def test_another_creators_account_and_a_malformed_notice_never_show(
    suite: Suite, worker: PlatformEvents
) -> None:
    async with (
        suite.signed_in() as (creator_id, token, _client),
        inbox_stream(suite.gateway_url, token) as stream,
    ):
        await _until_joined(stream, worker, creator_id)
        other = str(uuid.uuid4())
        await worker.publish(
            NEEDS_ATTENTION,
            of_events.AccountNeedsAttention(
                creator_id=other, reason=of_events.ATTENTION_REASON_WRONG_PASSWORD
            ),
            creator_id=other,
            aggregate_type="account",
            aggregate_id=other,
        )
        # The header names this creator, the payload another: refused, not shown to either.
        await worker.publish(
            NEEDS_ATTENTION,
            of_events.AccountNeedsAttention(
                creator_id=other, reason=of_events.ATTENTION_REASON_STALE_RULES
            ),
            creator_id=creator_id,
            aggregate_type="account",
            aggregate_id=creator_id,
        )
        await worker.publish(
            CONNECTED,
            of_events.AccountConnected(creator_id=creator_id, username="after"),
            creator_id=creator_id,
            aggregate_type="account",
            aggregate_id=creator_id,
        )
        seen = []
        while (event := await stream.next()).type != "account.connected":
            seen.append(event)
        assert event.data is not None
        assert event.data["account"]["username"] == "after"
        # Only this creator's well-formed notices: late copies of the first banner at most.
        reasons = {e.data["account"]["reason"] for e in seen if e.data and "account" in e.data}
        assert reasons <= {"challenge"}
