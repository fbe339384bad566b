"""The auth service end to end through the gateway, as real processes: the happy path from
registration to logout, browser cookies, sessions, two-factor, passwords, and the security
properties (enumeration safety, throttling, forged tokens, refresh-token reuse)."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import statistics
import time
import uuid
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from huntaze_kit.db import libpq_url

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def me_status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/api/auth/me", headers=bearer(token))).status_code


async def refused_within(client: httpx.AsyncClient, token: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await me_status(client, token) == 401:
            return True
        await asyncio.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# The happy path.


async def test_register_verify_login_me_refresh_logout(suite: Any) -> None:
    async with suite.client() as client:
        email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
        password = "Violet-Harbour-Lantern-42"
        registered = await client.post(
            "/api/auth/register", json={"email": email, "password": password, "name": "Ada"}
        )
        assert registered.status_code == 201, registered.text
        user = registered.json()["user"]
        assert user["email"] == email
        assert user["emailVerified"] is False

        message = await suite.email_to(email)
        assert "email" in str(message["Subject"]).lower()
        token = suite.link_token(message, "verify-email")
        verified = await client.post("/api/auth/verify-email", json={"token": token})
        assert verified.status_code == 200, verified.text
        assert verified.json()["user"]["emailVerified"] is True

        login = await suite.login(client, email, password)
        assert login["status"] == "signed_in"
        tokens = login["tokens"]
        assert tokens["tokenType"] == "Bearer"
        assert login["user"]["id"] == user["id"]

        me = await client.get("/api/auth/me", headers=bearer(tokens["accessToken"]))
        assert me.status_code == 200, me.text
        assert me.json()["user"]["email"] == email
        assert me.headers["cache-control"] == "no-store"

        refreshed = await client.post(
            "/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        fresh = refreshed.json()
        assert fresh["refreshToken"] != tokens["refreshToken"]
        assert fresh["sessionId"] == tokens["sessionId"]
        assert await me_status(client, fresh["accessToken"]) == 200

        logout = await client.post("/api/auth/logout", headers=bearer(fresh["accessToken"]))
        assert logout.status_code == 204, logout.text
        # Refused at once: the first access token and the refreshed one, and the refresh token.
        for old in (fresh["accessToken"], tokens["accessToken"]):
            refused = await client.get("/api/auth/me", headers=bearer(old))
            assert_problem(refused, 401)
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        again = await client.post("/api/auth/refresh", json={"refreshToken": fresh["refreshToken"]})
        assert_problem(again, 401)


async def test_a_browser_lives_on_cookies(suite: Any) -> None:
    async with suite.client() as browser:
        email, password = await suite.register(browser)
        login = await browser.post("/api/auth/login", json={"email": email, "password": password})
        assert login.status_code == 200
        cookies = {c.split("=", 1)[0]: c for c in login.headers.get_list("set-cookie")}
        access, refresh = cookies["huntaze_access"], cookies["huntaze_refresh"]
        for cookie in (access, refresh):
            assert "HttpOnly" in cookie
            assert "samesite=lax" in cookie.lower()
        assert "Path=/;" in access
        assert "Path=/api/auth;" in refresh
        assert browser.cookies.get("huntaze_access") == login.json()["tokens"]["accessToken"]

        # No Authorization header from here on: the cookies carry the session.
        me = await browser.get("/api/auth/me")
        assert me.status_code == 200, me.text
        origin = {"origin": suite.gateway_url}
        refreshed = await browser.post("/api/auth/refresh", headers=origin)
        assert refreshed.status_code == 200, refreshed.text
        new_access = refreshed.json()["accessToken"]
        assert browser.cookies.get("huntaze_access") == new_access
        assert (await browser.get("/api/auth/me")).status_code == 200

        elsewhere = await browser.post(
            "/api/auth/logout", headers={"origin": "https://evil.example"}
        )
        assert_problem(elsewhere, 403, "CROSS_SITE_REQUEST")
        logout = await browser.post("/api/auth/logout", headers=origin)
        assert logout.status_code == 204
        assert browser.cookies.get("huntaze_access") is None
        assert_problem(await browser.get("/api/auth/me"), 401, "UNAUTHENTICATED")
        assert await me_status(browser, new_access) == 401


async def test_sessions_show_the_client_and_can_be_revoked(suite: Any) -> None:
    async with suite.client(ip="203.0.113.10", headers={"user-agent": "Laptop/1.0"}) as laptop:
        email, password = await suite.register(laptop)
        first = (await suite.login(laptop, email, password))["tokens"]
    async with suite.client(ip="203.0.113.20", headers={"user-agent": "Phone/2.0"}) as phone:
        second = (await suite.login(phone, email, password))["tokens"]
        listed = await phone.get("/api/auth/sessions", headers=bearer(second["accessToken"]))
        assert listed.status_code == 200
        sessions = {s["id"]: s for s in listed.json()["sessions"]}
        assert sessions[second["sessionId"]]["current"] is True
        assert sessions[second["sessionId"]]["ipAddress"] == "203.0.113.20"
        assert sessions[second["sessionId"]]["userAgent"] == "Phone/2.0"
        assert sessions[first["sessionId"]]["ipAddress"] == "203.0.113.10"

        revoked = await phone.delete(
            f"/api/auth/sessions/{first['sessionId']}", headers=bearer(second["accessToken"])
        )
        assert revoked.status_code == 204
        assert await me_status(phone, first["accessToken"]) == 401
        assert await me_status(phone, second["accessToken"]) == 200
        unknown = await phone.delete(
            f"/api/auth/sessions/{uuid.uuid4()}", headers=bearer(second["accessToken"])
        )
        assert_problem(unknown, 404, "SESSION_NOT_FOUND")


async def test_sign_out_everywhere_else(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        keep = (await suite.login(client, email, password))["tokens"]
        others = [(await suite.login(client, email, password))["tokens"] for _ in range(2)]
        answer = await client.delete(
            "/api/auth/sessions/others", headers=bearer(keep["accessToken"])
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"revokedCount": 2}
        for tokens in others:
            assert await refused_within(client, tokens["accessToken"], 2.0)
        assert await me_status(client, keep["accessToken"]) == 200


async def test_onboarding(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        headers = bearer((await suite.login(client, email, password))["tokens"]["accessToken"])
        saved = await client.post(
            "/api/onboarding/save-profile",
            headers=headers,
            json={
                "displayName": "Ada L.",
                "bio": "Numbers.",
                "timezone": "Europe/Paris",
                "niche": "fitness",
                "goals": ["grow", "engage"],
            },
        )
        assert saved.status_code == 200, saved.text
        assert saved.json()["displayName"] == "Ada L."
        assert saved.json()["onboardingCompleted"] is False
        bad_zone = await client.post(
            "/api/onboarding/save-profile", headers=headers, json={"timezone": "Mars/Olympus"}
        )
        body = assert_problem(bad_zone, 422)
        assert any(error["field"] == "timezone" for error in body["errors"])
        done = await client.post("/api/onboarding/complete", headers=headers)
        assert done.status_code == 200, done.text
        assert done.json()["onboardingCompleted"] is True
        profile = await client.get("/api/onboarding/profile", headers=headers)
        assert profile.json()["goals"] == ["grow", "engage"]
        me = (await client.get("/api/auth/me", headers=headers)).json()
        assert me["user"]["onboardingCompleted"] is True
        assert me["profile"]["timezone"] == "Europe/Paris"


async def test_save_profile_changes_only_the_fields_sent(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        headers = bearer((await suite.login(client, email, password))["tokens"]["accessToken"])
        full = {
            "displayName": "Ada L.",
            "bio": "Numbers.",
            "timezone": "Europe/Paris",
            "niche": "fitness",
            "goals": ["grow", "engage"],
        }
        saved = await client.post("/api/onboarding/save-profile", headers=headers, json=full)
        assert saved.status_code == 200, saved.text
        only_bio = await client.post(
            "/api/onboarding/save-profile", headers=headers, json={"bio": "only bio"}
        )
        assert only_bio.status_code == 200, only_bio.text
        profile = only_bio.json()
        assert profile["bio"] == "only bio"
        assert (profile["displayName"], profile["niche"], profile["goals"]) == (
            "Ada L.",
            "fitness",
            ["grow", "engage"],
        )
        # A typo is refused, naming the field, and wipes nothing.
        typo = await client.post(
            "/api/onboarding/save-profile", headers=headers, json={"bio": "x", "nishe": "yoga"}
        )
        body = assert_problem(typo, 422, "VALIDATION_FAILED")
        assert [error["field"] for error in body["errors"]] == ["nishe"]
        kept = (await client.get("/api/onboarding/profile", headers=headers)).json()
        assert (kept["bio"], kept["niche"]) == ("only bio", "fitness")


async def test_profile_limits_are_the_services_with_one_code(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        headers = bearer((await suite.login(client, email, password))["tokens"]["accessToken"])
        at_limit = await client.post(
            "/api/onboarding/save-profile",
            headers=headers,
            json={"displayName": "a" * 80, "goals": ["g" * 120] * 10},
        )
        assert at_limit.status_code == 200, at_limit.text
        over = await client.post(
            "/api/onboarding/save-profile",
            headers=headers,
            json={"displayName": "a" * 81, "bio": "b" * 1001, "goals": ["g" * 121]},
        )
        body = assert_problem(over, 422, "VALIDATION_FAILED")
        assert [error["field"] for error in body["errors"]] == ["displayName", "bio", "goals[0]"]
        assert body["detail"].startswith("displayName: "), body
        blank = await client.post(
            "/api/onboarding/save-profile", headers=headers, json={"displayName": "  "}
        )
        body = assert_problem(blank, 422, "VALIDATION_FAILED")
        assert body["detail"] == "displayName: is required"
        long_name = await client.post(
            "/api/auth/register",
            json={"email": "long.name@example.com", "password": password, "name": "n" * 101},
        )
        body = assert_problem(long_name, 422, "VALIDATION_FAILED")
        assert [error["field"] for error in body["errors"]] == ["name"]


async def test_two_factor_enrollment_and_login(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        headers = bearer((await suite.login(client, email, password))["tokens"]["accessToken"])
        enrollment = await client.post("/api/auth/2fa/enroll", headers=headers)
        assert enrollment.status_code == 200, enrollment.text
        secret = enrollment.json()["secret"]
        assert enrollment.json()["otpauthUri"].startswith("otpauth://totp/")
        assert enrollment.json()["qrSvg"].lstrip().startswith("<")
        wrong = await client.post("/api/auth/2fa/confirm", headers=headers, json={"code": "000000"})
        assert wrong.status_code in (401, 422), wrong.text
        confirmed = await client.post(
            "/api/auth/2fa/confirm", headers=headers, json={"code": pyotp.TOTP(secret).now()}
        )
        assert confirmed.status_code == 200, confirmed.text
        recovery = confirmed.json()["recoveryCodes"]
        assert len(recovery) >= 8

        login = await suite.login(client, email, password)
        assert login["status"] == "two_factor_required"
        assert login["tokens"] is None
        challenge = login["challenge"]["challengeToken"]
        bad = await client.post(
            "/api/auth/login/2fa", json={"challengeToken": challenge, "code": "123456"}
        )
        assert_problem(bad, 401)
        done = await client.post(
            "/api/auth/login/2fa", json={"challengeToken": challenge, "code": recovery[0]}
        )
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "signed_in"
        new_headers = bearer(done.json()["tokens"]["accessToken"])
        me = (await client.get("/api/auth/me", headers=new_headers)).json()
        assert me["user"]["twoFactorEnabled"] is True

        disabled = await client.post(
            "/api/auth/2fa/disable",
            headers=new_headers,
            json={"password": password, "code": recovery[1]},
        )
        assert disabled.status_code == 204, disabled.text
        assert (await suite.login(client, email, password))["status"] == "signed_in"


async def test_password_change_and_reset(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        other = (await suite.login(client, email, password))["tokens"]
        mine = (await suite.login(client, email, password))["tokens"]
        new_password = "Cobalt-Meadow-Tandem-77"
        wrong = await client.post(
            "/api/auth/change-password",
            headers=bearer(mine["accessToken"]),
            json={"currentPassword": "not it", "newPassword": new_password},
        )
        body = assert_problem(wrong, 422)
        assert body["errors"][0]["field"] == "currentPassword"
        changed = await client.post(
            "/api/auth/change-password",
            headers=bearer(mine["accessToken"]),
            json={"currentPassword": password, "newPassword": new_password},
        )
        assert changed.status_code == 200, changed.text
        assert await me_status(client, changed.json()["accessToken"]) == 200
        assert await refused_within(client, other["accessToken"], 2.0)

        asked = await client.post("/api/auth/forgot-password", json={"email": email})
        assert asked.status_code == 202
        message = await suite.email_to(email, link="reset-password")
        token = suite.link_token(message, "reset-password")
        final_password = "Saffron-Quarry-Beacon-19"
        reset = await client.post(
            "/api/auth/reset-password", json={"token": token, "newPassword": final_password}
        )
        assert reset.status_code == 204, reset.text
        assert await refused_within(client, changed.json()["accessToken"], 2.0)
        reused = await client.post(
            "/api/auth/reset-password", json={"token": token, "newPassword": "Another-One-88-Z"}
        )
        assert_problem(reused, 422, "INVALID_TOKEN")
        assert (await suite.login(client, email, final_password))["status"] == "signed_in"


async def test_a_verification_token_works_exactly_once_under_concurrency(suite: Any) -> None:
    async with suite.client() as client:
        email, _ = await suite.register(client, verify=False)
        token = suite.link_token(await suite.email_to(email), "verify-email")
        answers = await asyncio.gather(
            *(client.post("/api/auth/verify-email", json={"token": token}) for _ in range(50))
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) == 1, statuses
        assert all(400 <= s < 500 for s in statuses if s != 200), statuses
        assert all(a.headers["content-type"] == PROBLEM for a in answers if a.status_code != 200)


async def test_the_request_id_travels_from_the_gateway_to_auth(suite: Any) -> None:
    request_id = f"trace-{uuid.uuid4().hex}"
    async with suite.client(headers={"x-request-id": request_id}) as client:
        answer = await client.post(
            "/api/auth/login",
            json={"email": f"nobody-{uuid.uuid4().hex[:6]}@example.com", "password": "x" * 12},
        )
    assert answer.status_code == 401
    assert answer.headers["x-request-id"] == request_id
    auth = suite.process("auth")
    deadline = time.monotonic() + 5
    while request_id not in auth.log_text():
        assert time.monotonic() < deadline, auth.log_tail()
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Security.


async def test_login_does_not_tell_unknown_emails_from_wrong_passwords(suite: Any) -> None:
    async with suite.client() as client:
        email, _ = await suite.register(client)
        unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
        timings: dict[str, list[float]] = {email: [], unknown: []}
        answers: dict[str, httpx.Response] = {}
        for _ in range(3):
            for address in (email, unknown):
                started = time.perf_counter()
                answers[address] = await client.post(
                    "/api/auth/login", json={"email": address, "password": "Wrong-Guess-123!"}
                )
                timings[address].append(time.perf_counter() - started)
        known_body = assert_problem(answers[email], 401, "INVALID_CREDENTIALS")
        unknown_body = assert_problem(answers[unknown], 401, "INVALID_CREDENTIALS")
        assert known_body == unknown_body
        assert (
            answers[email].headers["www-authenticate"]
            == answers[unknown].headers["www-authenticate"]
        )
        # Both check a password hash: similar timing (a skipped hash would be ~20x faster).
        ratio = statistics.median(timings[unknown]) / statistics.median(timings[email])
        assert 0.33 < ratio < 3.0, timings

        for route in ("/api/auth/forgot-password", "/api/auth/resend-verification"):
            known = await client.post(route, json={"email": email})
            nobody = await client.post(route, json={"email": unknown})
            assert known.status_code == nobody.status_code == 202
            assert known.json() == nobody.json()


async def test_repeated_failures_are_throttled_with_retry_after(suite: Any) -> None:
    async with suite.client() as victim:
        email, password = await suite.register(victim)
    async with suite.client() as attacker:
        statuses = []
        for _ in range(10):
            answer = await attacker.post(
                "/api/auth/login", json={"email": email, "password": "guess-Guess-1"}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
        assert statuses[-1] == 429, statuses
        assert set(statuses[:-1]) == {401}
        body = assert_problem(answer, 429, "TOO_MANY_ATTEMPTS")
        assert int(answer.headers["retry-after"]) >= 1
        assert body["detail"]
    # The real user elsewhere is not locked out.
    async with suite.client() as user:
        assert (await suite.login(user, email, password))["status"] == "signed_in"


async def _signing_key(database_url: str) -> tuple[str, Ed25519PrivateKey]:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT kid, private_key_pem FROM auth.signing_keys "
            "WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1"
        )
    finally:
        await conn.close()
    key = serialization.load_pem_private_key(row["private_key_pem"].encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return row["kid"], key


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forge(case: str, token: str, kid: str, key: Ed25519PrivateKey) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
    now = int(time.time())
    if case == "alg_none":
        return f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{_b64(claims)}."
    if case == "hs256_with_public_key":
        public = key.public_key().public_bytes_raw()
        return jwt.encode(claims, public, algorithm="HS256", headers={"kid": kid, "typ": "at+jwt"})
    if case == "wrong_key":
        return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=header)
    if case == "unknown_kid":
        return jwt.encode(
            claims,
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={**header, "kid": "not-a-published-key"},
        )
    if case == "tampered_subject":
        head, _, signature = token.split(".")
        return f"{head}.{_b64({**claims, 'sub': str(uuid.uuid4())})}.{signature}"
    if case == "wrong_audience":
        claims["aud"] = "some-other-api"
    elif case == "wrong_issuer":
        claims["iss"] = "someone-else"
    elif case == "expired":
        claims.update(iat=now - 3600, nbf=now - 3600, exp=now - 600)
    elif case == "wrong_typ":
        header["typ"] = "JWT"
    elif case == "service_typ":
        header["typ"] = "svc+jwt"
    elif case == "no_session":
        claims.pop("sid", None)
    else:
        raise AssertionError(case)
    return jwt.encode(claims, key, algorithm="EdDSA", headers=header)


FORGERIES = [
    "alg_none",
    "hs256_with_public_key",
    "wrong_key",
    "unknown_kid",
    "tampered_subject",
    "wrong_audience",
    "wrong_issuer",
    "expired",
    "wrong_typ",
    "service_typ",
    "no_session",
]


async def test_forged_and_expired_tokens_are_refused(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        token = (await suite.login(client, email, password))["tokens"]["accessToken"]
        kid, key = await _signing_key(suite.database_url)
        # The control: the real key with untouched claims is accepted.
        assert await me_status(client, _forge_control(token, kid, key)) == 200
        for case in FORGERIES:
            forged = _forge(case, token, kid, key)
            answer = await client.get("/api/auth/me", headers=bearer(forged))
            body = assert_problem(answer, 401)
            assert body["code"] in {"INVALID_TOKEN", "TOKEN_EXPIRED"}, (case, body)
            assert answer.headers["www-authenticate"].startswith("Bearer"), case
            async with suite.client() as browser:
                cookie = await browser.get(
                    "/api/auth/me", headers={"cookie": f"huntaze_access={forged}"}
                )
            assert_problem(cookie, 401)


def _forge_control(token: str, kid: str, key: Ed25519PrivateKey) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})


async def test_refresh_token_reuse_revokes_the_whole_family(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        first = (await suite.login(client, email, password))["tokens"]
        second = (
            await client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]})
        ).json()
        third = (
            await client.post("/api/auth/refresh", json={"refreshToken": second["refreshToken"]})
        ).json()
        assert await me_status(client, third["accessToken"]) == 200

        replay = await client.post(
            "/api/auth/refresh", json={"refreshToken": first["refreshToken"]}
        )
        assert_problem(replay, 401, "INVALID_REFRESH_TOKEN")
        cleared = replay.headers.get_list("set-cookie")
        assert any(c.startswith("huntaze_refresh=") for c in cleared)
        # The thief's and the owner's latest tokens are all dead now.
        latest = await client.post(
            "/api/auth/refresh", json={"refreshToken": third["refreshToken"]}
        )
        assert_problem(latest, 401)
        assert await refused_within(client, third["accessToken"], 2.0)
        assert await refused_within(client, first["accessToken"], 2.0)


# ---------------------------------------------------------------------------------------------
# What a new creator meets first: the links in the emails, the docs, and what an unverified
# account may do.

EXTERNAL_URL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", re.IGNORECASE)


def email_link(message: EmailMessage, path: str) -> str:
    """The full URL of the email's link to `path`."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(
        rf"https?://[^\s\"'<>]+{re.escape(path)}(?:\?[^\s\"'<>]*)?", body.get_content()
    )
    assert found, f"no {path} link in:\n{message}"
    return found.group(0)


def assert_page(response: httpx.Response, status: int = 200) -> str:
    """An HTML page that runs no script and loads nothing from elsewhere."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "form-action 'self'" in csp
    assert "script-src" not in csp
    page = response.text
    assert "<script" not in page
    assert not EXTERNAL_URL.search(page), page
    return page


def hidden_token(page: str) -> str:
    found = re.search(r'name="token" value="([^"]*)"', page)
    assert found, page
    return html.unescape(found.group(1))


async def test_the_verification_link_opens_a_page_that_verifies_on_a_click(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client, verify=False)
        link = email_link(await suite.email_to(email, link="verify-email"), "/verify-email")
        opened = await client.get(link)
        page = assert_page(opened)
        assert '<form method="post" action="/verify-email">' in page
        # Opening the link (as a mail scanner would) verifies nothing yet.
        headers = bearer((await suite.login(client, email, password))["tokens"]["accessToken"])
        me = (await client.get("/api/auth/me", headers=headers)).json()
        assert me["user"]["emailVerified"] is False

        form = {"token": hidden_token(page)}
        verified = await client.post("/verify-email", data=form)
        assert "Email address verified" in assert_page(verified)
        me = (await client.get("/api/auth/me", headers=headers)).json()
        assert me["user"]["emailVerified"] is True
        # The welcome email that follows links to a page that answers.
        welcome = await suite.mail.wait_for_async(
            lambda message: email in str(message["To"]) and "/onboarding" in str(message),
            timeout=20.0,
        )
        onboarding = await client.get(email_link(welcome, "/onboarding"))
        assert "/api/onboarding/save-profile" in assert_page(onboarding)

        spent = assert_page(await client.post("/verify-email", data=form), 422)
        assert "invalid or has expired" in spent
        assert 'name="token"' not in spent
        assert_page(await client.get("/verify-email"), 400)
        not_a_form = await client.post("/verify-email", json=form)
        assert_problem(not_a_form, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_the_reset_link_opens_a_form_that_sets_the_password(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        signed_in = (await suite.login(client, email, password))["tokens"]["accessToken"]
        asked = await client.post("/api/auth/forgot-password", json={"email": email})
        assert asked.status_code == 202
        link = email_link(await suite.email_to(email, link="reset-password"), "/reset-password")
        page = assert_page(await client.get(link))
        assert 'autocomplete="new-password"' in page
        assert '<label for="confirm-password">' in page
        token = hidden_token(page)

        new_password = "Juniper-Anvil-Crescent-42"
        mismatch = await client.post(
            "/reset-password",
            data={"token": token, "new_password": new_password, "confirm_password": "other"},
        )
        assert "not the same" in assert_page(mismatch, 422)
        weak = await client.post(
            "/reset-password",
            data={"token": token, "new_password": "short", "confirm_password": "short"},
        )
        weak_page = assert_page(weak, 422)
        assert "New password: must be at least 8 characters" in weak_page
        assert hidden_token(weak_page) == token  # the link still works: try again

        done = await client.post(
            "/reset-password",
            data={"token": token, "new_password": new_password, "confirm_password": new_password},
        )
        assert "Password changed" in assert_page(done)
        assert await refused_within(client, signed_in, 2.0)
        assert (await suite.login(client, email, new_password))["status"] == "signed_in"
        again = await client.post(
            "/reset-password",
            data={"token": token, "new_password": new_password, "confirm_password": new_password},
        )
        assert "invalid or has expired" in assert_page(again, 422)


async def test_the_docs_load_everything_from_the_suite(suite: Any) -> None:
    async with suite.client() as client:
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", docs.text), docs.text
        assert "http" not in docs.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', docs.text)
        assert len(assets) == 3, assets
        for asset in assets:
            loaded = await client.get(asset)
            assert loaded.status_code == 200, asset
            assert len(loaded.content) > 1000
        assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")


async def test_an_unverified_creator_may_sign_in_and_set_up_but_not_touch_fans(
    suite: Any,
) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client, verify=False)
        tokens = (await suite.login(client, email, password))["tokens"]
        headers = bearer(tokens["accessToken"])
        saved = await client.post(
            "/api/onboarding/save-profile",
            headers=headers,
            json={"displayName": "New", "timezone": "Europe/Paris"},
        )
        assert saved.status_code == 200, saved.text
        assert (await client.get("/api/crm/fans", headers=headers)).status_code == 200
        fan = {"platform": "onlyfans", "displayName": "Zoe"}
        refused = await client.post("/api/crm/fans", headers=headers, json=fan)
        body = assert_problem(refused, 403, "EMAIL_NOT_VERIFIED")
        assert body["type"].endswith("/email-not-verified")
        assert "Verify your email" in body["detail"]

        token = suite.link_token(await suite.email_to(email, link="verify-email"))
        assert (await client.post("/api/auth/verify-email", json={"token": token})).is_success
        # The refreshed access token says the address is verified.
        refreshed = await client.post(
            "/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]}
        )
        headers = bearer(refreshed.json()["accessToken"])
        created = await client.post("/api/crm/fans", headers=headers, json=fan)
        assert created.status_code == 201, created.text


async def test_a_replayed_two_factor_code_says_it_was_used(suite: Any) -> None:
    async with suite.client() as client:
        email, password = await suite.register(client)
        headers = bearer((await suite.login(client, email, password))["tokens"]["accessToken"])
        secret = (await client.post("/api/auth/2fa/enroll", headers=headers)).json()["secret"]
        code = pyotp.TOTP(secret).now()
        confirmed = await client.post("/api/auth/2fa/confirm", headers=headers, json={"code": code})
        assert confirmed.status_code == 200, confirmed.text

        challenge = (await suite.login(client, email, password))["challenge"]["challengeToken"]
        replayed = await client.post(
            "/api/auth/login/2fa", json={"challengeToken": challenge, "code": code}
        )
        body = assert_problem(replayed, 401, "CODE_ALREADY_USED")
        assert body["detail"] == "This code was already used; wait for the next one."


async def test_the_sign_in_alert_links_to_a_page_that_secures_the_account(suite: Any) -> None:
    async with suite.client() as client, suite.client() as elsewhere:
        email, password = await suite.register(client)
        await suite.login(client, email, password)
        await suite.login(elsewhere, email, password)  # a device not seen before
        alert = await suite.mail.wait_for_async(
            lambda message: email in str(message["To"]) and "/settings/security" in str(message),
            timeout=20.0,
        )
        page = assert_page(await client.get(email_link(alert, "/settings/security")))
        assert '<label for="email">' in page
        sent = await client.post("/settings/security", data={"email": email})
        assert "an email is on its way" in assert_page(sent)
        await suite.email_to(email, link="reset-password")
        bad = await client.post("/settings/security", data={"email": "not-an-address"})
        assert "Email address:" in assert_page(bad, 422)
