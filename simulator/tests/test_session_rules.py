"""What a request must carry: the app token, a current signature, and the session's own cookies,
x-bc, user-id and user-agent; the rate limit, the send throttle and session expiry."""

from __future__ import annotations

import time

import httpx

from huntaze_simulator.config import SimulatorConfig
from huntaze_simulator.testing import Simulator, is_platform_error, serve


def refresh_the_page(response: httpx.Response) -> bool:
    return is_platform_error(response, status=400, code=401, message="Please refresh the page")


def wrong_user(response: httpx.Response) -> bool:
    return is_platform_error(response, status=400, code=301, message="Wrong user.")


def unauthorized(response: httpx.Response) -> bool:
    return is_platform_error(response, status=401, code=401, message="Unauthorized")


async def test_a_signed_request_under_the_published_rules_is_accepted(
    simulator: Simulator,
) -> None:
    client = await simulator.import_session()
    response = await client.get("/users/me")
    assert response.status_code == 200, response.text
    assert response.json()["isAuth"] is True
    assert response.headers["x-of-rev"] == (await simulator.rules()).revision


async def test_the_query_string_is_part_of_what_is_signed(simulator: Simulator) -> None:
    client = await simulator.import_session()
    signed_for = "/api2/v2/chats?limit=10"
    headers = client.headers(signed_for)
    async with httpx.AsyncClient(base_url=simulator.base_url) as http:
        assert (await http.get(signed_for, headers=headers)).status_code == 200
        assert refresh_the_page(await http.get("/api2/v2/chats", headers=headers))


async def test_a_tampered_or_missing_signature_asks_to_refresh(simulator: Simulator) -> None:
    client = await simulator.import_session()
    headers = client.headers("/api2/v2/users/me")
    tampered = {**headers, "sign": headers["sign"].replace(":", ":0", 1)}
    unsigned = {k: v for k, v in headers.items() if k != "sign"}
    no_token = {k: v for k, v in headers.items() if k != "app-token"}
    async with httpx.AsyncClient(base_url=simulator.base_url) as http:
        assert refresh_the_page(await http.get("/api2/v2/users/me", headers=tampered))
        assert refresh_the_page(await http.get("/api2/v2/users/me", headers=unsigned))
        assert is_platform_error(
            await http.get("/api2/v2/users/me", headers=no_token),
            status=400,
            code=0,
            message="Application token is required.",
        )


async def test_time_in_seconds_is_accepted_unless_configured_otherwise() -> None:
    async with serve(SimulatorConfig(time_units="both")) as running:
        client = await running.import_session()
        client.time_ms = lambda: int(time.time())
        assert (await client.get("/users/me")).status_code == 200
        await running.control.patch("/_control/config", json={"time_units": "ms"})
        assert refresh_the_page(await client.get("/users/me"))


async def test_a_rotation_makes_old_signatures_stale() -> None:
    async with serve() as running:
        client = await running.import_session()
        assert (await client.get("/users/me")).status_code == 200
        rotated = await running.control.post("/_control/rules/rotate")
        assert rotated.status_code == 200
        assert refresh_the_page(await client.get("/users/me"))
        client.rules = await running.rules()
        assert (await client.get("/users/me")).status_code == 200


async def test_the_previous_rules_work_for_the_configured_grace() -> None:
    async with serve(SimulatorConfig(rules_grace_seconds=60)) as running:
        client = await running.import_session()
        await running.control.post("/_control/rules/rotate")
        assert (await client.get("/users/me")).status_code == 200
        await running.advance(61)
        assert refresh_the_page(await client.get("/users/me"))


async def test_another_user_agent_is_the_wrong_user_and_ends_the_session(
    simulator: Simulator,
) -> None:
    client = await simulator.import_session()
    response = await client.call("GET", "/users/me", headers={"user-agent": "curl/8.5"})
    assert wrong_user(response)
    # The browser that owned the session is logged out too.
    assert unauthorized(await client.get("/users/me"))


async def test_another_x_bc_is_the_wrong_user_and_ends_the_session(simulator: Simulator) -> None:
    client = await simulator.import_session()
    response = await client.call("GET", "/chats", headers={"x-bc": "0" * 40})
    assert wrong_user(response)
    assert unauthorized(await client.get("/chats"))


async def test_another_user_id_is_the_wrong_user(simulator: Simulator) -> None:
    client = await simulator.import_session()
    client.user_id = "12345"
    assert wrong_user(await client.get("/users/me"))


async def test_a_mismatch_can_be_configured_not_to_end_the_session() -> None:
    async with serve(SimulatorConfig(end_session_on_mismatch=False)) as running:
        client = await running.import_session()
        assert wrong_user(await client.call("GET", "/users/me", headers={"user-agent": "x"}))
        assert (await client.get("/users/me")).status_code == 200


async def test_the_rate_limit_answers_429_then_lifts() -> None:
    config = SimulatorConfig(
        rate_limit_requests=5, rate_limit_window_seconds=60, rate_limit_block_seconds=120
    )
    async with serve(config) as running:
        client = await running.import_session()
        for _ in range(5):
            assert (await client.get("/users/me")).status_code == 200
        limited = await client.get("/users/me")
        assert is_platform_error(
            limited, status=429, code=429, message="Too many requests. Try again later"
        )
        await running.advance(60)
        assert (await client.get("/users/me")).status_code == 429
        await running.advance(61)
        assert (await client.get("/users/me")).status_code == 200


async def test_the_rate_limit_can_count_per_address_across_sessions() -> None:
    async with serve(SimulatorConfig(rate_limit_requests=3, rate_limit_scope="ip")) as running:
        first, second = await running.import_session(), await running.import_session()
        for client in (first, second, first):
            assert (await client.get("/users/me")).status_code == 200
        assert (await second.get("/users/me")).status_code == 429


async def test_sends_are_throttled_to_one_per_three_seconds() -> None:
    async with serve() as running:
        fan = await running.new_fan()
        client = await running.import_session()
        body = {"text": "<p>hi</p>", "price": 0, "mediaFiles": [], "previews": []}
        assert (await client.call("POST", f"/chats/{fan['id']}/messages", json=body)).is_success
        again = await client.call("POST", f"/chats/{fan['id']}/messages", json=body)
        assert is_platform_error(again, status=400, code=0, message="Allow 3 seconds")
        await running.advance(3)
        assert (await client.call("POST", f"/chats/{fan['id']}/messages", json=body)).is_success


async def test_a_session_expires() -> None:
    async with serve(SimulatorConfig(session_ttl_seconds=3600)) as running:
        client = await running.import_session()
        assert (await client.get("/users/me")).status_code == 200
        await running.advance(3601)
        assert unauthorized(await client.get("/users/me"))


async def test_without_a_session_me_is_not_signed_in_and_the_rest_is_unauthorized(
    simulator: Simulator,
) -> None:
    client = await simulator.import_session()
    client.cookies = {}
    client.user_id = None
    me = await client.get("/users/me")
    assert me.status_code == 200
    assert me.json()["isAuth"] is False
    assert unauthorized(await client.get("/chats"))


async def test_a_session_ended_by_the_creator_stops_working(simulator: Simulator) -> None:
    client = await simulator.import_session()
    ended = await simulator.control.delete(f"/_control/sessions/{client.cookies['sess']}")
    assert ended.status_code == 200
    assert unauthorized(await client.get("/users/me"))


async def test_a_configured_clock_skew_limit_refuses_old_times() -> None:
    async with serve(SimulatorConfig(max_clock_skew_seconds=60)) as running:
        client = await running.import_session()
        assert (await client.get("/users/me")).status_code == 200
        client.time_ms = lambda: int((time.time() - 120) * 1000)
        assert refresh_the_page(await client.get("/users/me"))
