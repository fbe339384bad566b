"""Signing in: the login page (password, then the optional bot challenge and OTP), the JSON calls
behind it (code 101, then the code), and session import."""

from __future__ import annotations

import base64
import re

import httpx

from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.testing import (
    USER_AGENT,
    PlatformClient,
    Simulator,
    is_platform_error,
    serve,
)

EMAIL = "creator@example.com"
PASSWORD = "creator-password"
BC_TOKEN = "ab" * 20


def hidden_attempt(page: httpx.Response) -> str:
    match = re.search(r'name="attempt" type="hidden" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def submit_password(http: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    return await http.post(
        "/login",
        data={"email": EMAIL, "password": password, "bc": BC_TOKEN},
        headers={"user-agent": USER_AGENT},
    )


async def signed_in_client(running: Simulator, finished: httpx.Response) -> PlatformClient:
    """The browser after the last login step: its cookies, its x-bc and its user-agent."""
    assert finished.status_code == 303, finished.text
    assert finished.headers["location"] == "/"
    cookies = dict(finished.cookies)
    assert {"sess", "auth_id", "fp", "csrf", "st"} <= set(cookies)
    assert cookies["fp"] == BC_TOKEN
    return PlatformClient(
        base_url=running.base_url,
        rules=await running.rules(),
        cookies=cookies,
        x_bc=BC_TOKEN,
        user_agent=USER_AGENT,
    )


async def test_the_login_page_is_a_plain_form(simulator: Simulator) -> None:
    page = await simulator.control.get("/login")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for selector in (
        'id="login-form"',
        'id="email"',
        'id="password"',
        'id="login-submit"',
        'id="bc-token"',
        "bcTokenSha",
    ):
        assert selector in page.text


async def test_a_password_login_opens_a_session_bound_to_that_browser() -> None:
    async with serve() as running:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            finished = await submit_password(http)
            client = await signed_in_client(running, finished)
            home = await http.get("/")
        assert 'class="b-feed"' in home.text
        assert BC_TOKEN in home.text
        # The page's own client signs its calls with the published rules.
        assert "window.platformApi" in home.text
        assert '.join("\\n")' in home.text
        me = await client.get("/users/me")
        assert me.status_code == 200
        assert me.json()["email"] == EMAIL


async def test_a_wrong_password_stays_on_the_login_page(simulator: Simulator) -> None:
    async with httpx.AsyncClient(base_url=simulator.base_url) as http:
        page = await submit_password(http, password="not-it")
    assert page.status_code == 200
    assert 'id="login-error"' in page.text
    assert "Wrong email or password" in page.text
    assert "sess" not in page.cookies


async def test_the_otp_step_needs_the_code_the_creator_received() -> None:
    async with serve(SimulatorConfig(otp_required=True)) as running:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            otp_page = await submit_password(http)
            assert 'id="otp-form"' in otp_page.text
            attempt = hidden_attempt(otp_page)
            wrong = await http.post("/login/otp", data={"attempt": attempt, "code": "000000x"})
            assert 'id="otp-error"' in wrong.text
            code = (await running.control.get("/_control/otp")).json()["code"]
            finished = await http.post("/login/otp", data={"attempt": attempt, "code": code})
        client = await signed_in_client(running, finished)
        assert (await client.get("/users/me")).status_code == 200


async def test_the_bot_challenge_only_lets_a_person_through() -> None:
    async with serve(SimulatorConfig(bot_challenge=True)) as running:
        async with httpx.AsyncClient(base_url=running.base_url) as http:
            challenge = await submit_password(http)
            assert 'id="bot-challenge"' in challenge.text
            attempt = hidden_attempt(challenge)
            # A script pressing the button gets nowhere.
            for _ in range(3):
                refused = await http.post("/login/challenge", data={"attempt": attempt})
                assert 'id="challenge-error"' in refused.text
                assert "sess" not in refused.cookies
            pending = (await running.control.get("/_control/challenges")).json()
            assert pending == [{"id": attempt, "solved": False}]
            solved = await running.control.post(f"/_control/challenges/{attempt}/solve")
            assert solved.status_code == 200
            finished = await http.post("/login/challenge", data={"attempt": attempt})
        client = await signed_in_client(running, finished)
        assert (await client.get("/users/me")).status_code == 200


async def api_login(
    running: Simulator, body: dict[str, object]
) -> tuple[PlatformClient, httpx.Response]:
    """`POST /users/login` from a logged-out browser (signed for user id 0)."""
    client = PlatformClient(
        base_url=running.base_url,
        rules=await running.rules(),
        cookies={},
        x_bc=BC_TOKEN,
        user_agent=USER_AGENT,
    )
    response = await client.call("POST", "/users/login", json=body)
    client.cookies = dict(response.cookies)
    client.user_id = client.cookies.get("auth_id")
    return client, response


async def test_the_json_login_answers_101_then_takes_the_code() -> None:
    async with serve(SimulatorConfig(otp_required=True)) as running:
        encoded = base64.b64encode(PASSWORD.encode()).decode()
        client, response = await api_login(running, {"email": EMAIL, "encodedPassword": encoded})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 101
        # The cookie exists but the account stays locked until the code.
        assert (await client.get("/users/me")).json()["error"]["code"] == 101
        wrong = await client.call(
            "POST", "/users/otp/check", json={"code": "x", "rememberMe": True}
        )
        assert is_platform_error(wrong, status=400, code=0, message="Code wrong")
        code = (await running.control.get("/_control/otp")).json()["code"]
        checked = await client.call(
            "POST", "/users/otp/check", json={"code": code, "rememberMe": True}
        )
        assert checked.status_code == 200, checked.text
        assert checked.json()["isAuth"] is True
        assert (await client.get("/users/me")).json()["isAuth"] is True


async def test_the_json_login_rejects_a_wrong_password(simulator: Simulator) -> None:
    _, response = await api_login(simulator, {"email": EMAIL, "password": "nope"})
    assert is_platform_error(response, status=400, code=0, message="Wrong email or password")


async def test_the_json_login_under_the_challenge_needs_a_person_solved_token() -> None:
    async with serve(SimulatorConfig(bot_challenge=True)) as running:
        body = {"email": EMAIL, "password": PASSWORD, "turnstile-invisible-response": "guess"}
        _, refused = await api_login(running, body)
        assert is_platform_error(refused, status=400, code=102, message="Captcha wrong")
        token = (await running.control.post("/_control/captcha-tokens")).json()["token"]
        client, accepted = await api_login(running, {**body, "turnstile-invisible-response": token})
        assert accepted.status_code == 200, accepted.text
        assert (await client.get("/chats")).status_code == 200
        # A token is good once.
        _, reused = await api_login(running, {**body, "turnstile-invisible-response": token})
        assert reused.json()["error"]["code"] == 102


async def test_an_imported_session_works_only_with_its_own_browser(simulator: Simulator) -> None:
    imported = (
        await simulator.control.post(
            "/_control/sessions", json={"user_agent": USER_AGENT, "x_bc": BC_TOKEN}
        )
    ).json()
    assert set(imported["cookies"]) >= {"sess", "auth_id", "fp", "csrf", "st"}
    client = PlatformClient(
        base_url=simulator.base_url,
        rules=await simulator.rules(),
        cookies=imported["cookies"],
        x_bc=imported["x_bc"],
        user_agent=imported["user_agent"],
    )
    me = await client.get("/users/me")
    assert me.status_code == 200
    assert me.json()["id"] == imported["user_id"]


async def test_a_browser_token_must_look_like_one(simulator: Simulator) -> None:
    refused = await simulator.control.post(
        "/_control/sessions", json={"user_agent": USER_AGENT, "x_bc": '"><script>'}
    )
    assert refused.status_code == 400
    async with httpx.AsyncClient(base_url=simulator.base_url) as http:
        finished = await http.post(
            "/login", data={"email": EMAIL, "password": PASSWORD, "bc": '"><script>'}
        )
    # The platform hands out its own token instead.
    assert finished.status_code == 303
    assert len(finished.cookies["fp"]) == 40
