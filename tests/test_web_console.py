"""The creator's web console in a real Chromium, over the running suite: the gateway serves the
built app at `/`, its pages call the public API only, and nothing on a page breaks its
Content-Security-Policy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from huntaze_devstack.browser import ensure_chromium
from huntaze_devstack.web import DIST_DIR, REPO_ROOT, build

from .conftest import Suite

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run")
# Screenshots of every page, kept as test artifacts (git-ignored).
ARTIFACTS = REPO_ROOT / "web" / "test-artifacts"


@pytest.fixture(scope="module")
def suite_extra_env() -> dict[str, str]:
    """The suite's gateway serves the console, built first when its sources changed."""
    return {"HUNTAZE_GATEWAY_CONSOLE_DIR": str(build())}


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
