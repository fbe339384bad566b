"""The web driver with real Chromium against the platform simulator over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from huntaze_devstack.testing import eventually
from huntaze_onlyfans_worker.driver import (
    ImportedSession,
    LoginStatus,
    NotConnected,
    PlatformMessage,
    PlatformQueueStats,
    PlatformRefused,
    RateLimited,
    SendThrottled,
    SessionDead,
    TransactionKind,
)
from huntaze_onlyfans_worker.onlyfans_web import OnlyFansWebDriver, WebDriverConfig, plain_text
from huntaze_simulator.demo import DemoShape
from huntaze_simulator.testing import Simulator, serve

EMAIL = "creator@example.com"
PASSWORD = "creator-password"
ACCOUNT = "creator-1"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def driver_for(simulator: Simulator, **overrides: object) -> OnlyFansWebDriver:
    config = WebDriverConfig(
        base_url=simulator.base_url,
        rules_url=f"{simulator.base_url}/rules.json",
        executable_path=chromium(),
        **overrides,  # type: ignore[arg-type]
    )
    return OnlyFansWebDriver(config)


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with serve(demo=DemoShape(fans=30)) as running:
        yield running


@pytest.fixture
async def driver(simulator: Simulator) -> AsyncIterator[OnlyFansWebDriver]:
    opened = driver_for(simulator)
    try:
        yield opened
    finally:
        await opened.close()


async def live_sessions(simulator: Simulator) -> int:
    state = (await simulator.control.get("/_control/state")).json()
    return int(state["live_sessions"])


async def configure(simulator: Simulator, **settings: object) -> None:
    (await simulator.control.patch("/_control/config", json=settings)).raise_for_status()


async def test_a_password_login_then_a_restart_reuses_the_saved_session(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    result = await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    assert result.status is LoginStatus.CONNECTED
    assert result.profile is not None
    assert result.profile.username
    saved = await driver.saved_session(ACCOUNT)
    assert PASSWORD.encode() not in saved
    sessions_before = await live_sessions(simulator)

    restarted = driver_for(simulator)
    try:
        with pytest.raises(NotConnected):
            await restarted.profile(ACCOUNT)
        await restarted.resume(ACCOUNT, saved)
        assert await restarted.profile(ACCOUNT) == result.profile
        chats = await restarted.chats(ACCOUNT, cursor=None)
        assert chats.items
    finally:
        await restarted.close()
    # No second login happened, and neither client was taken for another (no "Wrong user.").
    assert await live_sessions(simulator) == sessions_before
    assert await driver.profile(ACCOUNT) == result.profile


async def test_the_otp_step_takes_the_code_the_creator_received(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await configure(simulator, otp_required=True)
    first = await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    assert first.status is LoginStatus.NEEDS_OTP
    wrong = await driver.submit_otp(ACCOUNT, "000000x")
    assert wrong.status is LoginStatus.NEEDS_OTP
    code = (await simulator.control.get("/_control/otp")).json()["code"]
    done = await driver.submit_otp(ACCOUNT, code)
    assert done.status is LoginStatus.CONNECTED
    assert done.profile is not None


async def test_a_wrong_password_is_reported(driver: OnlyFansWebDriver) -> None:
    result = await driver.log_in(ACCOUNT, email=EMAIL, password="not-the-password")
    assert result.status is LoginStatus.WRONG_CREDENTIALS
    assert "Wrong email or password" in result.reason
    assert not driver.holds(ACCOUNT)


async def test_a_bot_challenge_asks_for_a_session_import_which_connects(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await configure(simulator, bot_challenge=True)
    result = await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    assert result.status is LoginStatus.NEEDS_SESSION_IMPORT
    challenges = (await simulator.control.get("/_control/challenges")).json()
    assert challenges
    assert not any(challenge["solved"] for challenge in challenges)

    copied = (
        await simulator.control.post(
            "/_control/sessions", json={"user_agent": "Mozilla/5.0 (Macintosh) Safari/605.1.15"}
        )
    ).json()
    imported = await driver.import_session(
        ACCOUNT,
        ImportedSession(
            cookies=copied["cookies"], x_bc=copied["x_bc"], user_agent=copied["user_agent"]
        ),
    )
    assert imported.status is LoginStatus.CONNECTED
    assert (await driver.subscribers(ACCOUNT, cursor=None)).items


async def test_an_import_of_an_ended_session_fails(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    copied = (
        await simulator.control.post("/_control/sessions", json={"user_agent": "Mozilla/5.0"})
    ).json()
    await simulator.control.delete(f"/_control/sessions/{copied['cookies']['sess']}")
    result = await driver.import_session(
        ACCOUNT,
        ImportedSession(cookies=copied["cookies"], x_bc=copied["x_bc"], user_agent="Mozilla/5.0"),
    )
    assert result.status is LoginStatus.FAILED
    assert not driver.holds(ACCOUNT)


async def test_rotated_rules_are_fetched_again_and_the_call_goes_through(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    before = (await driver.rules.current()).revision
    rotated = (await simulator.control.post("/_control/rules/rotate")).json()
    profile = await driver.profile(ACCOUNT)
    assert profile.platform_user_id
    assert (await driver.rules.current()).revision == rotated["revision"] != before


async def test_a_rate_limit_and_the_send_throttle_are_reported(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    fan = await simulator.new_fan(name="Robin")
    sent = await driver.send_message(ACCOUNT, str(fan["id"]), text="hello <you>\nsecond line")
    assert sent.from_creator
    with pytest.raises(SendThrottled):
        await driver.send_message(ACCOUNT, str(fan["id"]), text="too soon")
    await simulator.advance(3)
    await driver.send_message(ACCOUNT, str(fan["id"]), text="later")
    recent = await driver.recent_messages(ACCOUNT, str(fan["id"]), limit=5)
    assert [m.text for m in recent[:2]] == ["later", "hello <you>\nsecond line"]

    await configure(
        simulator, rate_limit_requests=1, rate_limit_window_seconds=60, rate_limit_block_seconds=30
    )
    with contextlib.suppress(RateLimited):
        await driver.profile(ACCOUNT)
    with pytest.raises(RateLimited) as limited:
        await driver.profile(ACCOUNT)
    assert limited.value.retry_after > 0
    await simulator.advance(31)
    await configure(simulator, rate_limit_requests=1000)
    assert (await driver.profile(ACCOUNT)).platform_user_id


async def test_a_mass_message_reports_its_figures_and_is_deleted_only_within_a_day(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    await configure(simulator, send_interval_seconds=0)
    fans = [await simulator.new_fan(name=f"Fan {i}") for i in range(3)]
    media = str(simulator.platform.data.vault[0].id)
    ids = tuple(str(fan["id"]) for fan in fans)
    kept = await driver.send_mass_message(
        ACCOUNT, text="stays", platform_fan_ids=ids, price_cents=500, media_ids=(media,)
    )
    taken_back = await driver.send_mass_message(ACCOUNT, text="goes", platform_fan_ids=ids)

    async def figures() -> dict[str, PlatformQueueStats]:
        found = await driver.mass_message_stats(ACCOUNT, limit=20)
        return {item.platform_queue_id: item for item in found}

    await eventually(figures, lambda f: f[kept].sent == 3 and f[taken_back].sent == 3)
    copy = next(m for m in simulator.platform.data.messages[fans[0]["id"]] if m.text == "stays")
    (
        await simulator.control.post(
            f"/_control/fans/{fans[0]['id']}/purchases", json={"message_id": copy.id}
        )
    ).raise_for_status()
    stats = (await figures())[kept]
    assert (stats.sent, stats.viewed, stats.purchased, stats.canceled) == (3, 1, 1, False)

    assert not await driver.mass_message_canceled(ACCOUNT, taken_back)
    await driver.unsend_mass_message(ACCOUNT, taken_back)
    assert await driver.mass_message_canceled(ACCOUNT, taken_back)
    assert (await figures())[taken_back].canceled
    with pytest.raises(PlatformRefused):  # gone already
        await driver.unsend_mass_message(ACCOUNT, taken_back)
    await simulator.advance(86400 + 60)
    with pytest.raises(PlatformRefused):  # past the platform's day
        await driver.unsend_mass_message(ACCOUNT, kept)
    assert not await driver.mass_message_canceled(ACCOUNT, kept)


async def test_an_ended_session_is_reported_dead(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    await simulator.control.delete("/_control/sessions")
    with pytest.raises(SessionDead):
        await driver.profile(ACCOUNT)


async def test_sync_reads_follow_the_platforms_paging(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    subscribers, cursor, pages = [], None, 0
    while True:
        page = await driver.subscribers(ACCOUNT, cursor=cursor)
        assert len(page.items) <= 20
        subscribers.extend(page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(subscribers) == 30
    assert pages == 2
    assert len({s.fan.platform_fan_id for s in subscribers}) == 30

    chats = await driver.chats(ACCOUNT, cursor=None)
    busiest = chats.items[0].platform_fan_id
    messages: list[PlatformMessage] = []
    after: str | None = None
    while True:
        page = await driver.messages_after(ACCOUNT, busiest, after_message_id=after)
        messages.extend(page.items)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    ids = [int(m.platform_message_id) for m in messages]
    assert ids == sorted(ids)
    assert str(ids[-1]) == chats.items[0].last_message_id
    assert all("<" not in m.text or ">" not in m.text for m in messages)

    since = datetime.now(UTC) - timedelta(days=400)
    transactions = []
    cursor = None
    while True:
        txn_page = await driver.transactions(ACCOUNT, since=since, cursor=cursor)
        transactions.extend(txn_page.items)
        if txn_page.next_cursor is None:
            break
        cursor = txn_page.next_cursor
    kinds = {t.kind for t in transactions}
    assert TransactionKind.SUBSCRIPTION in kinds
    assert all(t.amount_cents > 0 for t in transactions)
    assert len({t.platform_transaction_id for t in transactions}) == len(transactions)


async def test_a_fans_message_arrives_on_the_push_socket(
    simulator: Simulator, driver: OnlyFansWebDriver
) -> None:
    await driver.log_in(ACCOUNT, email=EMAIL, password=PASSWORD)
    fan = await simulator.new_fan(name="Kai")
    received: asyncio.Queue[PlatformMessage] = asyncio.Queue()

    async def listen() -> None:
        async for message in driver.listen(ACCOUNT):
            await received.put(message)

    listener = asyncio.create_task(listen())
    try:
        text = f"hi {uuid.uuid4().hex[:6]}"
        for _ in range(50):
            await simulator.fan_writes(fan["id"], text)
            try:
                pushed = await asyncio.wait_for(received.get(), timeout=0.2)
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("no push arrived")
        assert pushed.text == text
        assert pushed.platform_fan_id == str(fan["id"])
        assert pushed.fan is not None
        assert pushed.fan.display_name == "Kai"
        await simulator.control.delete("/_control/sessions")
        with pytest.raises(SessionDead):
            await asyncio.wait_for(listener, timeout=10)
    finally:
        listener.cancel()


async def test_contexts_are_bounded_and_idle_ones_closed(simulator: Simulator) -> None:
    bounded = driver_for(simulator, max_contexts=1, idle_seconds=0.0)
    try:
        await bounded.log_in("a", email=EMAIL, password=PASSWORD)
        await bounded.log_in("b", email=EMAIL, password=PASSWORD)
        assert not bounded.holds("a")
        assert bounded.holds("b")
        assert bounded.open_contexts == 1
        assert await bounded.close_idle() == 1
        assert bounded.open_contexts == 0
    finally:
        await bounded.close()


def test_plain_text_reads_message_html() -> None:
    assert plain_text("Hi &amp; welcome<br>line <b>two</b>") == "Hi & welcome\nline two"
