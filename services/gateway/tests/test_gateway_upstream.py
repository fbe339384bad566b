"""The app in front of a real auth gRPC server: real failures come out as the table says,
tokens and cookies are handed out, readiness sees the upstream, and revocation events from auth
reach the gateway's own revocation list."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from huntaze_kit.grpc_client import GrpcKeySource
from huntaze_kit.identity import TokenVerifier

PROBLEM = "application/problem+json"
PASSWORD = "Violet-Harbour-Lantern-42"
_counter = iter(range(1, 10_000))


def ip() -> dict[str, str]:
    """A client address of its own (the app trusts one proxy), so throttles do not mix."""
    n = next(_counter)
    return {"x-forwarded-for": f"192.0.2.{n % 250 + 1}"}


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


async def signed_in(live: Any) -> tuple[str, dict[str, Any], httpx.Response]:
    email = f"gw-{uuid.uuid4().hex[:10]}@example.com"
    registered = await live.client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD}, headers=ip()
    )
    assert registered.status_code == 201, registered.text
    login = await live.client.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD}, headers=ip()
    )
    assert login.status_code == 200, login.text
    return email, login.json()["tokens"], login


async def test_ready_when_upstreams_serve_and_revocations_flow(live: Any) -> None:
    response = await live.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {
            "auth": "SERVING",
            "crm": "SERVING",
            "ai": "SERVING",
            "analytics": "SERVING",
            "campaigns": "SERVING",
            "revocations": "FOLLOWING",
        },
        "unavailable": [],
    }


async def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_upstream_failures_map_through_the_table(live: Any) -> None:
    email, tokens, _ = await signed_in(live)
    auth = {"authorization": f"Bearer {tokens['accessToken']}"}
    client = live.client

    taken = await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD}, headers=ip()
    )
    assert problem(taken, 409, "EMAIL_TAKEN")["type"].endswith("/already-exists")

    weak = await client.post(
        "/api/auth/register", json={"email": "w@example.com", "password": "password1"}
    )
    body = problem(weak, 422, "WEAK_PASSWORD")
    assert [e["field"] for e in body["errors"]] == ["password"]

    wrong = await client.post(
        "/api/auth/login", json={"email": email, "password": "nope-nope-1"}, headers=ip()
    )
    problem(wrong, 401, "INVALID_CREDENTIALS")
    assert wrong.headers["www-authenticate"] == 'Bearer realm="huntaze"'

    bad_link = await client.post("/api/auth/verify-email", json={"token": "forged"})
    assert problem(bad_link, 422, "INVALID_TOKEN")["errors"][0]["field"] == "token"

    missing = await client.delete(f"/api/auth/sessions/{uuid.uuid4()}", headers=auth)
    assert problem(missing, 404, "SESSION_NOT_FOUND")["type"].endswith("/not-found")

    not_pending = await client.post("/api/auth/2fa/confirm", json={"code": "123456"}, headers=auth)
    assert problem(not_pending, 409, "TWO_FACTOR_NOT_PENDING")["type"].endswith(
        "/failed-precondition"
    )

    new_password = await client.post(
        "/api/auth/change-password",
        json={"currentPassword": PASSWORD, "newPassword": "short"},
        headers=auth,
    )
    assert problem(new_password, 422, "WEAK_PASSWORD")["errors"][0]["field"] == "newPassword"


async def test_throttled_logins_get_429_with_retry_after(live: Any) -> None:
    email, _, _ = await signed_in(live)
    attacker = ip()
    for _ in range(10):
        answer = await live.client.post(
            "/api/auth/login", json={"email": email, "password": "guess-guess-1"}, headers=attacker
        )
        if answer.status_code == 429:
            break
        assert answer.status_code == 401
    problem(answer, 429, "TOO_MANY_ATTEMPTS")
    assert int(answer.headers["retry-after"]) >= 1


async def test_tokens_come_as_secure_cookies_and_in_the_body(live: Any) -> None:
    _, tokens, login = await signed_in(live)
    cookies = login.headers.get_list("set-cookie")
    access = next(c for c in cookies if c.startswith("huntaze_access="))
    refresh = next(c for c in cookies if c.startswith("huntaze_refresh="))
    assert f"huntaze_access={tokens['accessToken']};" in access
    for cookie in (access, refresh):
        assert "HttpOnly" in cookie
        assert "Secure" in cookie
        assert "samesite=lax" in cookie.lower()
    assert "Path=/;" in access
    assert "Path=/api/auth;" in refresh
    access_age = int(re.search(r"Max-Age=(\d+)", access).group(1))  # type: ignore[union-attr]
    refresh_age = int(re.search(r"Max-Age=(\d+)", refresh).group(1))  # type: ignore[union-attr]
    assert 14 * 60 <= access_age <= 15 * 60
    assert refresh_age > 29 * 24 * 3600
    assert login.json()["tokens"]["tokenType"] == "Bearer"


async def test_revocation_events_reach_the_edge(live: Any) -> None:
    """Sessions revoked by auth (here: "sign out everywhere else") arrive as events and land
    in the gateway's own revocation list, so the edge refuses their tokens by itself."""
    email, keep, _ = await signed_in(live)
    other = (
        await live.client.post(
            "/api/auth/login", json={"email": email, "password": PASSWORD}, headers=ip()
        )
    ).json()["tokens"]
    other_auth = {"authorization": f"Bearer {other['accessToken']}"}
    # Used once, so the edge remembers it as verified: revocation must still win.
    assert (await live.client.get("/api/auth/me", headers=other_auth)).status_code == 200
    revocations = live.runtime.verifier.revocations
    assert not revocations.is_revoked(other["sessionId"])
    answer = await live.client.delete(
        "/api/auth/sessions/others", headers={"authorization": f"Bearer {keep['accessToken']}"}
    )
    assert answer.json() == {"revokedCount": 1}
    deadline = time.monotonic() + 5
    while not revocations.is_revoked(other["sessionId"]):
        assert time.monotonic() < deadline, "the revocation event never reached the gateway"
        await asyncio.sleep(0.02)
    assert not revocations.is_revoked(keep["sessionId"])
    problem(await live.client.get("/api/auth/me", headers=other_auth), 401, "SESSION_REVOKED")


async def test_logout_revokes_at_the_edge_at_once(live: Any) -> None:
    _, tokens, _ = await signed_in(live)
    headers = {"authorization": f"Bearer {tokens['accessToken']}"}
    assert (await live.client.post("/api/auth/logout", headers=headers)).status_code == 204
    assert live.runtime.verifier.revocations.is_revoked(tokens["sessionId"])
    problem(await live.client.get("/api/auth/me", headers=headers), 401, "SESSION_REVOKED")


async def test_the_verified_token_memory_stays_bounded(live: Any) -> None:
    settings = live.runtime.settings
    verifier = TokenVerifier(
        key_source=GrpcKeySource(live.runtime.channels["auth"]),
        audience=settings.token_audience,
        issuer=settings.token_issuer,
        max_verified_tokens=2,
    )
    tokens = verifier.verified
    issued = [(await signed_in(live))[1] for _ in range(3)]
    for pair in issued:
        principal = await verifier.verify(pair["accessToken"])
        assert principal.session_id == pair["sessionId"]
        assert len(tokens) <= 2
    # Forgotten tokens verify again, from scratch.
    assert (await verifier.verify(issued[0]["accessToken"])).session_id == issued[0]["sessionId"]


async def test_a_nats_restart_neither_unreadies_nor_blinds_the_edge(live: Any) -> None:
    """Runs last in this module: it restarts NATS under the running app."""
    if live.nats_server is None:
        pytest.skip("NATS is external (HUNTAZE_TEST_NATS_URL): it cannot be restarted here")
    live.nats_server.stop()
    await wait_for(
        lambda: live.runtime.revocations_status == "RECONNECTING", 10, "never saw NATS leave"
    )
    ready = await live.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["revocations"] == "RECONNECTING"
    live.nats_server.start()
    await wait_for(lambda: live.runtime.revocations_status == "FOLLOWING", 20, "never reconnected")
    # Revocations made after the restart still reach the edge.
    email, keep, _ = await signed_in(live)
    other = (
        await live.client.post(
            "/api/auth/login", json={"email": email, "password": PASSWORD}, headers=ip()
        )
    ).json()["tokens"]
    await live.client.delete(
        "/api/auth/sessions/others", headers={"authorization": f"Bearer {keep['accessToken']}"}
    )
    revocations = live.runtime.verifier.revocations
    await wait_for(
        lambda: revocations.is_revoked(other["sessionId"]),
        30,
        "a revocation made after the NATS restart never reached the gateway",
    )
