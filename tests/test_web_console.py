"""The creator's web console in a real Chromium, over the running suite: the gateway serves the
built app at `/`, its pages call the public API only, and nothing on a page breaks its
Content-Security-Policy."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pyotp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from huntaze.onlyfans.v1 import events_pb2 as of_events
from huntaze_devstack.browser import ensure_chromium
from huntaze_devstack.embedded import free_port, port_accepts
from huntaze_devstack.roles import new_passwords, provision_roles, service_roles
from huntaze_devstack.testing import PlatformEvents, token_from_email
from huntaze_devstack.web import DIST_DIR, REPO_ROOT, build
from huntaze_kit.migrations import upgrade_async
from huntaze_simulator.demo import DemoShape
from huntaze_simulator.testing import Simulator, serve

from .conftest import Suite, start_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run")
# Screenshots of every page, kept as test artifacts (git-ignored).
ARTIFACTS = REPO_ROOT / "web" / "test-artifacts"


PLATFORM_EMAIL = "creator@example.com"
PLATFORM_PASSWORD = "creator-password"
WORKER_READY_TIMEOUT = 60.0


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[Simulator]:
    """The OnlyFans platform simulator, with a small demo creator's history."""
    async with serve(demo=DemoShape(fans=12, days=30)) as running:
        await running.control.patch(
            "/_control/config", json={"demo_activity_seconds": 0, "send_interval_seconds": 0.2}
        )
        yield running


@pytest.fixture(scope="module")
def onlyfans_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def suite_extra_env(onlyfans_port: int) -> dict[str, str]:
    """The suite's gateway serves the console (built first when its sources changed) and knows
    where the OnlyFans worker listens."""
    return {
        "HUNTAZE_GATEWAY_CONSOLE_DIR": str(build()),
        "HUNTAZE_ONLYFANS_GRPC_TARGET": f"127.0.0.1:{onlyfans_port}",
        # Connecting signs in to the platform with a real browser: seconds on a busy machine.
        "HUNTAZE_GATEWAY_UPSTREAM_DEADLINE_SECONDS": "45",
    }


@pytest.fixture(scope="module")
async def onlyfans_worker(suite: Suite, simulator: Simulator, onlyfans_port: int) -> Suite:
    """The OnlyFans worker as one more process of the suite (stopped with it), on its own
    database role, signing in to the simulator with the real Chromium."""
    roles = [role for role in service_roles() if role.service == "onlyfans"]
    urls = await provision_roles(suite.database_url, roles, passwords=new_passwords(roles))
    await upgrade_async(
        urls["onlyfans"], package="huntaze_onlyfans_worker.migrations", schema="onlyfans"
    )
    gateway = suite.process("gateway")
    env = {
        **gateway.env,
        "HUNTAZE_DATABASE_URL": urls["onlyfans"],
        "HUNTAZE_ONLYFANS_GRPC_HOST": "127.0.0.1",
        "HUNTAZE_ONLYFANS_GRPC_PORT": str(onlyfans_port),
        "HUNTAZE_ONLYFANS_METRICS_PORT": str(free_port()),
        "HUNTAZE_ONLYFANS_BASE_URL": simulator.base_url,
        "HUNTAZE_ONLYFANS_RULES_URL": f"{simulator.base_url}/rules.json",
        "HUNTAZE_ONLYFANS_BROWSER_PATH": ensure_chromium(),
        "HUNTAZE_ONLYFANS_VAULT_MASTER_KEYS": base64.b64encode(b"w" * 32).decode(),
        "HUNTAZE_ONLYFANS_SYNC_INTERVAL_SECONDS": "2",
        "HUNTAZE_ONLYFANS_SEND_INTERVAL_SECONDS": "0",
        "HUNTAZE_ONLYFANS_SEND_JITTER_SECONDS": "0",
        "HUNTAZE_ONLYFANS_THROTTLE_SECONDS": "0.1",
    }
    process = start_process(
        "onlyfans", "huntaze_onlyfans_worker.server", env, gateway.log_path.parent
    )
    suite.processes.append(process)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while not port_accepts("127.0.0.1", onlyfans_port):
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the OnlyFans worker did not start:\n{process.log_tail()}")
        await asyncio.sleep(0.2)
    return suite


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=ensure_chromium(), args=list(CHROMIUM_ARGS)
        )
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page whose console errors (a CSP violation is one) fail the test."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        # A refused API call shows in the console as a failed resource load: that is the
        # page's business (it shows the problem); anything else is a defect.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)


@pytest.fixture
async def watched(browser: Browser, suite: Suite) -> AsyncIterator[Watched]:
    context = await browser.new_context(base_url=suite.gateway_url)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    watch = Watched(page)
    try:
        yield watch
    finally:
        await context.close()
    assert not watch.errors, watch.errors


async def test_the_console_opens_at_the_root_and_asks_to_sign_in(watched: Watched) -> None:
    page = watched.page
    response = await page.goto("/")
    assert response is not None
    assert response.status == 200
    await expect(page).to_have_url("/sign-in?next=%2F")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Email address").fill("nobody@example.com")
    await page.get_by_label("Password").fill("not-the-password-at-all")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("password")


def test_the_api_types_are_generated_from_the_current_routes() -> None:
    """`web/src/api/types.ts` is what the gateway's OpenAPI document generates now."""
    done = subprocess.run(
        [sys.executable, "-m", "huntaze_devstack.web", "types", "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_the_build_is_hashed_and_leaves_no_source_behind() -> None:
    built = build()
    assert built == DIST_DIR
    bundles = sorted(Path(built, "static").glob("*.js"))
    assert bundles
    assert all("-" in bundle.stem for bundle in bundles)
    assert not list(Path(built).rglob("*.tsx"))
    assert not list(Path(built).rglob("*.map"))


def email_url(suite: Suite, message: EmailMessage, kind: str) -> str:
    """The link of an email as the person would open it (the suite's public URL)."""
    return f"{suite.gateway_url}/{kind}?token={quote(token_from_email(message, kind))}"


async def test_a_new_creator_signs_up_onboards_connects_and_answers_a_fan(
    watched: Watched, onlyfans_worker: Suite, simulator: Simulator
) -> None:
    suite = onlyfans_worker
    page = watched.page
    email = f"web-{uuid.uuid4().hex[:10]}@example.com"
    password = f"Violet-Harbour-{uuid.uuid4().hex[:6]}-Lantern"

    # Sign up, then the verification email's link opens the console's page.
    await page.goto("/sign-up")
    await page.get_by_label("Your name").fill("Ada Web")
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    message = await suite.email_to(email, link="verify-email")
    await page.goto(email_url(suite, message, "verify-email"))
    await page.get_by_role("button", name="Verify my email address").click()
    await expect(page.get_by_role("heading", name="Email address verified")).to_be_visible()
    await page.get_by_role("link", name="Continue").click()

    # Not signed in yet: sign-in, then back to the onboarding.
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/onboarding$"))

    # Profile.
    await page.get_by_label("Display name").fill("Ada")
    await page.get_by_label("About you").fill("Travel and coffee.")
    await page.get_by_role("button", name="Save and continue").click()

    # AI replies: suggestions, with a saved answer.
    await expect(page.get_by_role("heading", name="AI replies")).to_be_visible()
    await page.get_by_label("Suggest").check()
    await page.get_by_role("button", name="Add a saved answer").click()
    await page.get_by_label("When a fan writes (1)").fill("good morning")
    await page.get_by_label("Answer (1)").fill("Morning {name}, coffee is on me")
    await page.get_by_role("button", name="Save and continue").click()

    # OnlyFans, through the worker's real browser sign-in to the simulator.
    await expect(page.get_by_role("heading", name="OnlyFans")).to_be_visible()
    await page.get_by_label("OnlyFans email").fill(PLATFORM_EMAIL)
    await page.get_by_label("OnlyFans password").fill(PLATFORM_PASSWORD)
    await page.get_by_role("button", name="Connect OnlyFans").click()
    await expect(page.get_by_text("Connected", exact=False).first).to_be_visible(timeout=120_000)
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_role("button", name="Go to my inbox").click()
    await expect(page).to_have_url(re.compile(r"/inbox$"))
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()

    # A fan writes on the platform: the conversation comes in live, with its suggestion.
    fan = await simulator.new_fan(name="Robin Web")
    await simulator.fan_writes(fan["id"], "good morning!")
    conversation = page.get_by_role("link", name=re.compile("Robin Web"))
    await expect(conversation).to_be_visible(timeout=60_000)
    await conversation.click()
    suggestion = page.get_by_label("AI suggestion")
    await expect(suggestion).to_have_value(re.compile("coffee is on me"), timeout=60_000)
    await page.get_by_role("button", name="Accept and send").click()
    messages = page.get_by_label("Messages with Robin Web")
    await expect(messages.get_by_text(re.compile("coffee is on me"))).to_be_visible()

    # The creator answers by hand, as a pay-per-view message, and sees it delivered.
    await page.get_by_label("Reply", exact=True).fill("Here is something special")
    await page.get_by_label("PPV price ($)").fill("7.50")
    # Its media come from the vault the worker lists from the platform, picked by keyboard.
    picker = page.get_by_role("group", name="Media from your vault")
    await picker.get_by_role("button", name="Choose from your vault").click()
    picked = picker.get_by_role("checkbox").first
    await picked.focus()
    await page.keyboard.press("Space")
    await expect(picked).to_be_checked()
    media_id = re.search(r"#(\d+)", await picker.locator("li").first.inner_text())
    assert media_id is not None
    await expect(picker).to_contain_text("1 attached")
    await page.get_by_role("button", name="Send for $7.50").click()
    sent = messages.locator(".msg.out", has_text="Here is something special")
    await expect(sent).to_contain_text("PPV $7.50")
    await expect(sent).to_contain_text("Sent", timeout=60_000)

    delivered = (await simulator.control.get("/_control/sent", params={"fan_id": fan["id"]})).json()
    paid = [m for m in delivered if "Here is something special" in m["text"]]
    assert len(paid) == 1, delivered
    assert paid[0]["price"] == 7.5
    assert paid[0]["media_files"] == [int(media_id.group(1))]
    assert media_id.group(1) in {str(m.id) for m in simulator.platform.data.vault}

    # The campaign form picks from the same vault.
    await page.goto("/campaigns/new")
    variant = page.get_by_role("group", name="Media from your vault (A)")
    await variant.get_by_role("button", name="Choose from your vault").click()
    await variant.get_by_role("checkbox").nth(1).check()
    await expect(variant).to_contain_text(re.compile(r"1 attached: (Photo|Video)"))
    assert any("coffee is on me" in m["text"] for m in delivered), delivered

    # The fan buys it on the platform: the dashboard, the console's home, shows the revenue.
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    before = await revenue_today(page)
    bought = await simulator.control.post(
        f"/_control/fans/{fan['id']}/purchases", json={"message_id": paid[0]["id"]}
    )
    assert bought.status_code == 200, bought.text
    deadline = time.monotonic() + 90
    while await revenue_today(page) < before + 750:
        assert time.monotonic() < deadline, "the purchase never showed on the dashboard"
        await asyncio.sleep(1)
        await page.reload()
    await expect(page.get_by_role("img", name=re.compile("Revenue per day"))).to_be_visible()


async def revenue_today(page: Page) -> int:
    """The dashboard's revenue today, in cents, once it has loaded."""
    value = page.locator(".stat", has_text="Revenue today").locator(".value")
    await expect(value).to_be_visible()
    return round(float(re.sub(r"[^0-9.]", "", await value.inner_text())) * 100)


@dataclass
class Creator:
    """A creator made over the API, onboarded, with fans, a purchase and a quick reply."""

    id: str
    email: str
    password: str
    conversation_id: str
    big_spender_id: str


@pytest.fixture(scope="module")
async def creator(suite: Suite, worker: PlatformEvents) -> Creator:
    async with suite.client() as client:
        email, password = await suite.register(client)
        login = await suite.login(client, email, password)
        client.headers["authorization"] = f"Bearer {login['tokens']['accessToken']}"
        creator_id = login["user"]["id"]
        saved = await client.post(
            "/api/onboarding/save-profile",
            json={"displayName": "Bea", "bio": "", "niche": "fitness", "timezone": "UTC"},
        )
        assert saved.status_code == 200, saved.text
        done = await client.post("/api/onboarding/complete")
        assert done.status_code == 200, done.text
        for index, name in enumerate(("Lily Stone", "Marco Rossi", "Noor Haddad")):
            await worker.fan_writes(
                Creator(creator_id, "", "", "", ""),
                platform_message_id=f"m-{index}",
                platform_fan_id=f"of-{index}",
                display_name=name,
                handle=f"fan{index}",
                text=f"hello from {name.split()[0]}",
            )
        await worker.fan_pays(
            Creator(creator_id, "", "", "", ""),
            transaction_id="t-1",
            cents=1200,
            platform_fan_id="of-1",
        )
        conversations: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while len(conversations) < 3 and time.monotonic() < deadline:
            conversations = (await client.get("/api/crm/conversations")).json()["conversations"]
            await asyncio.sleep(0.2)
        assert len(conversations) == 3, conversations
        big = next(c for c in conversations if "Marco" in str(c["fan"]))
        quick = await client.post(
            "/api/crm/quick-replies", json={"shortcut": "/thanks", "text": "Thank you so much!"}
        )
        assert quick.status_code == 201, quick.text
        fan_id = str(big["fanId"])
        spent = 0
        while spent < 1200 and time.monotonic() < deadline + 10:
            spent = (await client.get(f"/api/crm/fans/{fan_id}")).json()["valueCents"]
            await asyncio.sleep(0.2)
        return Creator(creator_id, email, password, str(big["id"]), fan_id)


async def sign_in(page: Page, creator: Creator, *, next_path: str = "/inbox") -> None:
    await page.goto(f"/sign-in?next={quote(next_path)}")
    await page.get_by_label("Email address").fill(creator.email)
    await page.get_by_label("Password").fill(creator.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(next_path)


async def test_fans_filters_segments_and_a_profile_with_purchases_notes_and_tags(
    watched: Watched, creator: Creator
) -> None:
    page = watched.page
    await sign_in(page, creator, next_path="/fans")
    table = page.get_by_role("table")
    for name in ("Lily Stone", "Marco Rossi", "Noor Haddad"):
        await expect(table.get_by_role("link", name=name)).to_be_visible()

    # The segment's live count follows the filters; saved, it shows its members.
    await page.get_by_label("Spent at least ($)").fill("10")
    await expect(page.get_by_text("1 fan match these filters")).to_be_visible()
    await page.get_by_role("button", name="Show fans").click()
    await expect(table.get_by_role("link")).to_have_count(1)
    await page.get_by_role("button", name="Save as segment").click()
    await page.get_by_label("Segment name").fill("Big spenders")
    await page.get_by_role("button", name="Save segment").click()
    segments = page.get_by_role("navigation", name="Segments")
    saved = segments.get_by_role("button", name=re.compile("Big spenders"))
    await expect(saved).to_contain_text("1")

    # A fan's profile: the purchase, then tags and notes that stay.
    await table.get_by_role("link", name="Marco Rossi").click()
    await expect(page.get_by_role("heading", name="Marco Rossi")).to_be_visible()
    await expect(page.get_by_role("cell", name="$12.00")).to_be_visible()
    await page.get_by_label("New tag").fill("vip")
    await page.get_by_role("button", name="Add tag").click()
    await expect(page.get_by_role("button", name="Remove tag vip")).to_be_visible()
    await page.get_by_label("Notes").fill("Likes gym content")
    await page.get_by_role("button", name="Save notes").click()
    await expect(page.get_by_text("Saved.")).to_be_visible()
    await page.reload()
    await expect(page.get_by_label("Notes")).to_have_value("Likes gym content")
    await expect(page.get_by_role("button", name="Remove tag vip")).to_be_visible()


async def test_quick_replies_by_shortcut_and_reading_marks_the_conversation_read(
    watched: Watched, creator: Creator
) -> None:
    page = watched.page
    await sign_in(page, creator)
    row = page.get_by_role("link", name=re.compile("Marco Rossi"))
    await expect(row).to_contain_text("unread")
    await row.focus()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(f"/inbox/{creator.conversation_id}$"))
    await expect(page.get_by_label("Messages with Marco Rossi")).to_contain_text("hello from Marco")
    await expect(row).not_to_contain_text("unread")
    reply = page.get_by_label("Reply", exact=True)
    await reply.fill("/th")
    await expect(page.get_by_role("option", name=re.compile("thanks"))).to_be_visible()
    await reply.press("Enter")
    await expect(reply).to_have_value("Thank you so much!")
    await reply.press("Enter")
    await expect(
        page.get_by_label("Messages with Marco Rossi").get_by_text("Thank you so much!")
    ).to_be_visible()


async def test_a_mass_message_taken_back_shows_as_unsent_in_the_thread(
    watched: Watched, suite: Suite, creator: Creator, worker: PlatformEvents
) -> None:
    """The worker reports a mass message deleted from the fans' chats: the copy in the open
    thread turns from sent to unsent as the event arrives, and stays so on reload."""
    page = watched.page
    await sign_in(page, creator)
    await page.get_by_role("link", name=re.compile("Noor Haddad")).click()
    thread = page.get_by_label("Messages with Noor Haddad")
    await expect(thread).to_contain_text("hello from Noor")
    async with suite.client() as client:
        login = await suite.login(client, creator.email, creator.password)
        client.headers["authorization"] = f"Bearer {login['tokens']['accessToken']}"
        conversations = (await client.get("/api/crm/conversations")).json()["conversations"]
        noor = next(c for c in conversations if "Noor" in str(c["fan"]))
        reply = page.get_by_label("Reply", exact=True)
        await reply.fill("My weekend set is here")
        await reply.press("Enter")
        copy = thread.locator(".msg.out", has_text="My weekend set is here")
        await expect(copy).to_be_visible()
        listed = (await client.get(f"/api/crm/conversations/{noor['id']}/messages")).json()
        message_id = next(
            m["id"] for m in listed["messages"] if m["text"] == "My weekend set is here"
        )
    delivered = of_events.MessageSent(
        creator_id=creator.id, message_id=message_id, platform_message_id="of-weekend"
    )
    await worker.publish(
        "onlyfans.message.sent", delivered, creator_id=creator.id, aggregate_id="of-2"
    )
    await expect(copy).to_contain_text("Sent")
    unsent = of_events.MassMessageUnsent(
        creator_id=creator.id, idempotency_key="weekend", platform_queue_id="42"
    )
    unsent.message_ids.append(message_id)
    await worker.publish(
        "onlyfans.mass_message.unsent",
        unsent,
        creator_id=creator.id,
        aggregate_type="mass_message",
        aggregate_id="mass:weekend",
    )
    await expect(copy).to_contain_text("Unsent", timeout=20_000)
    await page.reload()
    await expect(
        page.get_by_label("Messages with Noor Haddad").locator(".msg.out.unsent")
    ).to_contain_text("Unsent")


async def test_two_factor_from_settings_then_sign_in_with_a_code(
    watched: Watched, suite: Suite
) -> None:
    page = watched.page
    async with suite.client() as client:
        email, password = await suite.register(client)
    await sign_in(page, Creator("", email, password, "", ""), next_path="/settings/security")
    await page.get_by_role("button", name="Turn on two-factor authentication").click()
    await expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    secret = (await page.locator("p", has_text="Key:").locator("code").inner_text()).strip()
    await page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_text("Two-factor authentication is on.")).to_be_visible()
    recovery_codes = (await page.locator("code.codes").inner_text()).split()
    assert len(recovery_codes) >= 5

    await page.get_by_role("link", name="Sessions").click()
    await expect(page.get_by_role("cell", name=re.compile("this device"))).to_be_visible()

    await page.get_by_role("button", name="Sign out").first.click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Two-factor code")).to_be_visible()
    await page.get_by_label("Code").fill("000000")
    await page.get_by_role("button", name="Verify and sign in").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    # A recovery code stands in for the app's code (the enrollment's code is spent already).
    await page.get_by_label("Code").fill(recovery_codes[0])
    await page.get_by_role("button", name="Verify and sign in").click()
    await expect(page).to_have_url(re.compile("/onboarding$"))


async def audience_of_everyone(suite: Suite, creator: Creator) -> str:
    """A saved segment of every fan of the creator (made over the API: the fans page's own
    test covers making one in the console)."""
    async with suite.client() as client:
        login = await suite.login(client, creator.email, creator.password)
        client.headers["authorization"] = f"Bearer {login['tokens']['accessToken']}"
        made = await client.post(
            "/api/crm/lists",
            json={"name": f"Everyone {uuid.uuid4().hex[:6]}", "kind": "dynamic", "segment": {}},
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])


async def test_a_campaign_from_a_template_scheduled_paused_resumed_cancelled_and_its_results(
    watched: Watched, suite: Suite, creator: Creator
) -> None:
    everyone = await audience_of_everyone(suite, creator)
    page = watched.page
    await sign_in(page, creator, next_path="/campaigns")
    await expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()

    async def new_campaign(name: str) -> None:
        await page.get_by_role("link", name="New campaign").click()
        await expect(page.get_by_role("heading", name="New campaign")).to_be_visible()
        await page.get_by_label("Niche").select_option("fitness")
        template = page.locator(".templates li").first
        await expect(template).to_be_visible()
        await template.get_by_role("button").click()
        await expect(page.get_by_label("Text (A)")).not_to_have_value("")
        await page.get_by_label("Campaign name").fill(name)
        await page.get_by_label("Audience").select_option(value=everyone)
        await page.get_by_label("PPV price in $ (A)").fill("")
        await page.get_by_role("button", name="Add a variant to test").click()
        await page.get_by_label("Text (B)").fill("Hey {name}, a new workout is up")
        await page.get_by_label("Holdout (%)").fill("50")
        await page.get_by_role("button", name="Create draft").click()
        await expect(page.get_by_role("heading", name=name)).to_be_visible()
        await expect(page.get_by_text("Draft", exact=True)).to_be_visible()

    # Scheduled for later: paused, resumed, then cancelled for good.
    await new_campaign("Later drop")
    await page.get_by_label("Send at").fill("2099-01-01T09:00")
    await page.get_by_role("button", name="Schedule").click()
    await expect(page.get_by_text("Scheduled", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_text("Paused", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_text("Scheduled", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Cancel campaign").click()
    await page.get_by_role("button", name="Yes, cancel it").click()
    await expect(page.get_by_text("Cancelled", exact=True)).to_be_visible()

    # Sent now: the results, with the lift over the holdout and its interval.
    await page.get_by_role("link", name="← Campaigns").click()
    await new_campaign("Workout drop")
    await page.get_by_role("button", name="Send now").click()
    lift = page.get_by_role("group", name="Lift over the holdout")
    await expect(lift).to_be_visible()
    await expect(lift).to_contain_text("95% interval")
    await expect(lift.get_by_role("status")).to_contain_text("Not significant")
    results = page.get_by_role("table", name="Results per variant")
    await expect(results.get_by_role("rowheader", name="A", exact=True)).to_be_visible()
    await expect(results.get_by_role("rowheader", name="B", exact=True)).to_be_visible()
    audience = page.locator(".stat", has_text="Audience").locator(".value")
    await expect(audience).to_have_text("3")

    # Both are listed.
    await page.get_by_role("link", name="← Campaigns").click()
    listed = page.get_by_role("table", name="Campaigns")
    await expect(listed.get_by_role("link", name="Workout drop")).to_be_visible()
    await expect(listed.get_by_role("row", name=re.compile("Later drop"))).to_contain_text(
        "Cancelled"
    )


async def test_a_sequence_with_follow_ups_drafted_then_deleted_after_a_confirmation(
    watched: Watched, suite: Suite, creator: Creator
) -> None:
    everyone = await audience_of_everyone(suite, creator)
    page = watched.page
    await sign_in(page, creator, next_path="/campaigns/new")
    await page.get_by_label("Campaign name").fill("Welcome series")
    await page.get_by_label("Kind").select_option("sequence")
    await page.get_by_label("Audience").select_option(value=everyone)
    await page.get_by_label("Text (A)").fill("Hi {name}, glad you are here")
    await page.get_by_label("Wait (follow-up 1)").fill("2")
    await page.get_by_label("Text (follow-up 1)").fill("Still there, {name}?")
    await page.get_by_role("button", name="Add a follow-up").click()
    await page.get_by_label("Wait (follow-up 2)").fill("6")
    await page.get_by_label("Unit (follow-up 2)").select_option("hours")
    await page.get_by_label("Text (follow-up 2)").fill("Last call for the bundle")
    await page.get_by_label("PPV price in $ (follow-up 2)").fill("12")
    await page.get_by_role("button", name="Add a follow-up").click()
    await page.get_by_role("button", name="Remove follow-up 3").click()
    await expect(page.get_by_label("Text (follow-up 3)")).to_have_count(0)
    # Without an OnlyFans connection the vault cannot be read: the picker says what to do.
    picker = page.get_by_role("group", name="Media from your vault (follow-up 2)")
    await picker.get_by_role("button", name="Choose from your vault").click()
    await expect(picker.get_by_role("link", name="Connections")).to_be_visible()
    await page.get_by_role("button", name="Create draft").click()

    await expect(page.get_by_role("heading", name="Welcome series")).to_be_visible()
    steps = page.locator(".steps-list li")
    await expect(steps).to_have_count(2)
    await expect(steps.nth(0)).to_contain_text("After 2 days: Still there, {name}?")
    await expect(steps.nth(1)).to_contain_text("After 6 hours: Last call for the bundle")
    await expect(steps.nth(1)).to_contain_text("PPV $12.00")

    # Deleting asks once more; keeping it changes nothing.
    await page.get_by_role("button", name="Delete draft").click()
    confirm = page.get_by_role("group", name="Delete the draft")
    await confirm.get_by_role("button", name="Keep it").click()
    await expect(page.get_by_role("heading", name="Welcome series")).to_be_visible()
    await page.get_by_role("button", name="Delete draft").click()
    await confirm.get_by_role("button", name="Yes, delete it").click()
    await expect(page).to_have_url("/campaigns")
    await expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()
    await expect(page.get_by_role("link", name="Welcome series")).to_have_count(0)


async def test_a_template_edited_with_its_variables_and_its_past_results(
    watched: Watched, creator: Creator
) -> None:
    page = watched.page
    await sign_in(page, creator, next_path="/campaigns")
    await page.get_by_role("link", name="Templates").click()
    await expect(page.get_by_role("heading", name="Templates")).to_be_visible()
    await page.get_by_label("Niche").select_option("gaming")
    cards = page.locator(".templates > li")
    # The list of every niche stays up while the filtered one loads: wait for the gaming one.
    await expect(cards.filter(has_not_text="Gaming")).to_have_count(0)
    card = cards.first
    await expect(card).to_be_visible()
    name = await card.get_by_role("heading").inner_text()
    results = card.get_by_role("definition")
    await expect(results).to_have_count(5)
    await expect(card.get_by_role("term")).to_have_text(
        ["Campaigns", "Recipients", "Purchases", "Revenue", "Bought"]
    )

    await card.get_by_role("button", name=f"Edit “{name}”").click()
    text = card.get_by_label("Template text")
    await text.fill("New raid tonight, {nickname}")
    await card.get_by_role("button", name="Save template").click()
    await expect(card.get_by_role("alert")).to_contain_text("nickname")
    await text.fill("New raid tonight, ")
    await card.get_by_role("button", name="Insert {name}").click()
    await expect(text).to_have_value("New raid tonight, {name}")
    await card.get_by_label("Template PPV price in $").fill("4.5")
    await card.get_by_role("button", name="Save template").click()
    await expect(card.get_by_role("button", name=f"Edit “{name}”")).to_be_visible()
    await expect(card).to_contain_text("New raid tonight, {name}")
    await expect(card).to_contain_text("PPV $4.50 · uses {name}")

    # Kept: the new campaign form offers the edited text.
    await page.goto("/campaigns/new")
    await page.get_by_label("Niche").select_option("gaming")
    await expect(page.locator(".templates > li", has_text=name)).to_contain_text(
        "New raid tonight, {name}"
    )


async def test_a_campaign_that_does_not_exist_says_so_and_leads_back(
    watched: Watched, creator: Creator
) -> None:
    page = watched.page
    missing = f"/campaigns/{uuid.uuid4()}"
    await sign_in(page, creator, next_path=missing)
    await expect(page.get_by_role("alert")).to_contain_text(re.compile("campaign", re.IGNORECASE))
    await page.get_by_role("link", name="Back to campaigns").click()
    await expect(page).to_have_url("/campaigns")
    await expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()


async def test_analytics_by_period_with_revenue_insights_and_the_csv_export(
    watched: Watched, creator: Creator
) -> None:
    page = watched.page
    await sign_in(page, creator, next_path="/analytics")
    await expect(page.get_by_role("heading", name="Analytics")).to_be_visible()
    revenue = page.locator(".stat", has_text="Revenue").first.locator(".value")
    await expect(revenue).to_have_text("$12.00")
    by_type = page.get_by_role("table", name="Revenue by type")
    await expect(by_type.get_by_role("row", name=re.compile("Tips"))).to_contain_text("$12.00")
    by_platform = page.get_by_role("table", name="Revenue by platform")
    await expect(by_platform.get_by_role("row", name=re.compile("OnlyFans"))).to_contain_text(
        "$12.00"
    )
    await expect(page.get_by_role("heading", name="AI replies")).to_be_visible()
    await expect(page.get_by_role("region", name="Summary")).to_contain_text("revenue was $12.00")

    await page.get_by_role("link", name="Last 7 days").click()
    await expect(page).to_have_url("/analytics?period=7d")
    await expect(page.get_by_role("link", name="Last 7 days")).to_have_attribute(
        "aria-current", "page"
    )
    async with page.expect_download() as downloading:
        await page.get_by_role("link", name=re.compile("Download CSV")).click()
    download = await downloading.value
    saved = await download.path()
    lines = Path(saved).read_text().splitlines()
    assert lines[0].startswith("day,revenue_cents"), lines[:2]
    # The $12.00 tip of today is in the last 7 days.
    assert sum(int(line.split(",")[1]) for line in lines[1:]) == 1200, lines


AXE_SCRIPT = REPO_ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
SIGNED_OUT_PAGES = {
    "sign-in": "/sign-in",
    "sign-up": "/sign-up",
    "forgot-password": "/forgot-password",
    "reset-password": "/reset-password?token=from-the-email",
    "verify-email": "/verify-email?token=from-the-email",
}


def signed_in_pages(creator: Creator, campaign_id: str) -> dict[str, str]:
    return {
        "onboarding": "/onboarding",
        "dashboard": "/dashboard",
        "campaigns": "/campaigns",
        "campaign-new": "/campaigns/new",
        "campaign-templates": "/campaigns/templates",
        "campaign": f"/campaigns/{campaign_id}",
        "analytics": "/analytics?period=30d",
        "inbox": "/inbox",
        "thread": f"/inbox/{creator.conversation_id}",
        "fans": "/fans",
        "fan": f"/fans/{creator.big_spender_id}",
        "settings-ai": "/settings/ai",
        "settings-connections": "/settings/connections",
        "settings-quick-replies": "/settings/quick-replies",
        "settings-sessions": "/settings/sessions",
        "settings-security": "/settings/security",
    }


async def axe_violations(page: Page) -> list[str]:
    """What axe-core (from the npm registry, injected into the page) finds wrong."""
    await page.add_script_tag(path=str(AXE_SCRIPT))
    violations = await page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => {
                const where = v.nodes.map((n) => n.target.join(" ")).join(", ");
                return `${v.id} (${v.impact}): ${v.help} at ${where}`;
            });
        }"""
    )
    return list(violations)


async def check_and_keep(page: Page, name: str, found: dict[str, list[str]]) -> None:
    """The page's screenshot kept as an artifact, and what axe finds wrong with it."""
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    if violations := await axe_violations(page):
        found[name] = violations


async def settled(page: Page) -> None:
    """The page has its heading and nothing is loading any more."""
    await expect(page.locator("h1").first).to_be_visible()
    await expect(page.locator(".loading")).to_have_count(0)


async def scheduled_campaign(suite: Suite, creator: Creator) -> str:
    """A campaign sent to every fan with a holdout, so its page has results to show."""
    list_id = await audience_of_everyone(suite, creator)
    async with suite.client() as client:
        login = await suite.login(client, creator.email, creator.password)
        client.headers["authorization"] = f"Bearer {login['tokens']['accessToken']}"
        created = await client.post(
            "/api/campaigns",
            json={
                "name": "Checked for accessibility",
                "kind": "one_off",
                "listId": list_id,
                "holdoutPercent": 50,
                "variants": [{"key": "A", "text": "Hi {name}", "priceCents": 0}],
            },
        )
        assert created.status_code == 201, created.text
        campaign_id = str(created.json()["id"])
        scheduled = await client.post(f"/api/campaigns/{campaign_id}/schedule", json={})
        assert scheduled.status_code == 200, scheduled.text
        return campaign_id


async def test_every_page_is_accessible_and_screenshotted_at_phone_and_desktop_widths(
    browser: Browser, suite: Suite, onlyfans_worker: Suite, creator: Creator
) -> None:
    assert AXE_SCRIPT.is_file(), "npm ci installs axe-core"
    campaign_id = await scheduled_campaign(suite, creator)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[str]] = {}
    for viewport_name, viewport in VIEWPORTS.items():
        # axe is injected as a script of the test's own: the console's policy would refuse it.
        context = await browser.new_context(
            base_url=suite.gateway_url, viewport=viewport, bypass_csp=True
        )
        page = await context.new_page()
        page.set_default_timeout(20_000)
        try:
            for name, path in SIGNED_OUT_PAGES.items():
                await page.goto(path)
                await settled(page)
                await check_and_keep(page, f"{name}-{viewport_name}", found)
            await sign_in(page, creator)
            for name, path in signed_in_pages(creator, campaign_id).items():
                await page.goto(path)
                await expect(page).to_have_url(path)
                await settled(page)
                await check_and_keep(page, f"{name}-{viewport_name}", found)
        finally:
            await context.close()
    assert not found, "\n".join(f"{page}: {v}" for page, vs in found.items() for v in vs)
    shots = sorted(ARTIFACTS.glob("*.png"))
    assert len(shots) >= 2 * (len(SIGNED_OUT_PAGES) + len(signed_in_pages(creator, campaign_id)))
