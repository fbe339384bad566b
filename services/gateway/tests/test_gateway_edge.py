"""The edge without any upstream: problem documents for bad requests, body limits, security
headers, request ids, CORS, probes and the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from huntaze_gateway.auth_routes import client_ip
from huntaze_gateway.middleware import API_CSP

from .conftest import ALLOWED_ORIGIN, SMALL_BODY_LIMIT

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance", "code"} <= body.keys()
    assert body["instance"] == response.request.url.path
    if code is not None:
        assert body["code"] == code
    return body


async def test_unknown_route_is_a_404_problem(offline_client: httpx.AsyncClient) -> None:
    assert_problem(await offline_client.get("/api/nowhere"), 404, "NOT_FOUND")


async def test_wrong_method_is_a_405_problem(offline_client: httpx.AsyncClient) -> None:
    response = await offline_client.get("/api/auth/login")
    assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"


async def test_malformed_json_is_a_400(offline_client: httpx.AsyncClient) -> None:
    response = await offline_client.post(
        "/api/auth/login",
        content=b'{"email": "a@b.c",',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "MALFORMED_JSON")


async def test_missing_and_wrongly_typed_fields_are_listed(
    offline_client: httpx.AsyncClient,
) -> None:
    response = await offline_client.post(
        "/api/auth/reset-password", json={"token": 12, "new_password": ["x"]}
    )
    body = assert_problem(response, 422, "VALIDATION_FAILED")
    fields = {error["field"] for error in body["errors"]}
    assert fields == {"token", "newPassword"}
    assert all(error["message"] for error in body["errors"])


async def test_a_body_that_is_not_an_object_is_a_422(offline_client: httpx.AsyncClient) -> None:
    response = await offline_client.post("/api/auth/register", json=["a@b.c", "pw"])
    assert_problem(response, 422, "VALIDATION_FAILED")


async def test_missing_body_is_a_422(offline_client: httpx.AsyncClient) -> None:
    body = assert_problem(await offline_client.post("/api/auth/register"), 422)
    assert body["errors"] == [{"field": "body", "message": "Field required"}]


async def test_form_bodies_are_refused_with_415(offline_client: httpx.AsyncClient) -> None:
    response = await offline_client.post(
        "/api/auth/login",
        content=b"email=a%40b.c&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_oversized_body_with_content_length_is_refused_unread(
    offline_client: httpx.AsyncClient,
) -> None:
    response = await offline_client.post(
        "/api/auth/login",
        content=b"x" * (SMALL_BODY_LIMIT + 1),
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413, "BODY_TOO_LARGE")


async def test_oversized_streamed_body_is_cut_off(offline_client: httpx.AsyncClient) -> None:
    """No Content-Length (chunked): the limit is enforced on the bytes as they arrive."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"email": "'
        for _ in range(64):
            sent += 1024
            yield b"a" * 1024
        yield b'"}'

    response = await offline_client.post(
        "/api/auth/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "BODY_TOO_LARGE")


async def test_a_lying_content_length_does_not_lift_the_limit(offline_app: FastAPI) -> None:
    """A client declaring a small body and sending a big one is stopped at the limit."""
    messages = [
        {"type": "http.request", "body": b'{"email":"' + b"a" * 3000, "more_body": True},
        {"type": "http.request", "body": b"a" * 3000 + b'"}', "more_body": False},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/auth/login",
        "raw_path": b"/api/auth/login",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("x", 80),
        "headers": [
            (b"host", b"gateway.test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"20"),
        ],
        "app": offline_app,
    }
    await offline_app(scope, receive, send)
    assert sent[0]["status"] == 413


async def test_security_headers_on_every_answer(offline_client: httpx.AsyncClient) -> None:
    for response in (
        await offline_client.get("/healthz"),
        await offline_client.get("/api/nowhere"),
        await offline_client.post("/api/auth/login", json={}),
    ):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["strict-transport-security"].startswith("max-age=")
        assert headers["content-security-policy"] == API_CSP
        assert headers["cache-control"] == "no-store"


async def test_docs_get_a_csp_that_lets_swagger_run(offline_client: httpx.AsyncClient) -> None:
    response = await offline_client.get("/docs")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src" in csp
    assert "frame-ancestors 'none'" in csp
    assert csp != API_CSP


async def test_request_id_is_echoed_or_made(offline_client: httpx.AsyncClient) -> None:
    echoed = await offline_client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    made = await offline_client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    unsafe = await offline_client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_cors_allows_configured_origins_with_credentials(
    offline_client: httpx.AsyncClient,
) -> None:
    preflight = await offline_client.options(
        "/api/auth/login",
        headers={
            "origin": ALLOWED_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    simple = await offline_client.get("/healthz", headers={"origin": ALLOWED_ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


async def test_cors_ignores_other_origins(offline_client: httpx.AsyncClient) -> None:
    preflight = await offline_client.options(
        "/api/auth/login",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = await offline_client.get("/healthz", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_no_token_is_a_401_with_a_challenge(offline_client: httpx.AsyncClient) -> None:
    response = await offline_client.get("/api/auth/me")
    assert_problem(response, 401, "UNAUTHENTICATED")
    assert response.headers["www-authenticate"] == 'Bearer realm="huntaze"'


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwdw==", "Bearer", "Bearer not.a.jwt", "Token abc"]
)
async def test_unusable_authorization_is_a_401(
    offline_client: httpx.AsyncClient, authorization: str
) -> None:
    response = await offline_client.get("/api/auth/me", headers={"authorization": authorization})
    assert_problem(response, 401, "INVALID_TOKEN")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_cookie_writes_from_another_site_are_refused(
    offline_client: httpx.AsyncClient,
) -> None:
    response = await offline_client.post(
        "/api/auth/2fa/enroll",
        headers={"origin": "https://evil.example", "cookie": "huntaze_access=x.y.z"},
    )
    assert_problem(response, 403, "CROSS_SITE_REQUEST")
    response = await offline_client.post(
        "/api/auth/refresh",
        headers={"sec-fetch-site": "cross-site", "cookie": "huntaze_refresh=abc"},
    )
    assert_problem(response, 403, "CROSS_SITE_REQUEST")


async def test_logout_without_a_valid_token_clears_the_cookies(
    offline_client: httpx.AsyncClient,
) -> None:
    response = await offline_client.post(
        "/api/auth/logout", headers={"cookie": "huntaze_access=garbage"}
    )
    assert_problem(response, 401, "INVALID_TOKEN")
    cleared = response.headers.get_list("set-cookie")
    assert any(c.startswith("huntaze_access=") and "Max-Age=0" in c for c in cleared)
    assert any(c.startswith("huntaze_refresh=") and "Path=/api/auth" in c for c in cleared)


async def test_an_unreachable_upstream_is_a_503_that_leaks_nothing(
    offline_client: httpx.AsyncClient,
) -> None:
    response = await offline_client.post(
        "/api/auth/login", json={"email": "a@b.c", "password": "correct horse"}
    )
    body = assert_problem(response, 503)
    assert response.headers["retry-after"] == "1"
    assert "127.0.0.1" not in response.text
    assert "ipv4" not in response.text
    assert body["type"].endswith("/service-unavailable")


async def test_probes(offline_client: httpx.AsyncClient) -> None:
    live = await offline_client.get("/healthz")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = await offline_client.get("/readyz")
    body = assert_problem(ready, 503, "NOT_READY")
    assert body["checks"]["auth"] != "SERVING"
    assert body["checks"]["crm"] != "SERVING"
    assert body["checks"]["ai"] != "SERVING"
    assert body["checks"]["analytics"] != "SERVING"
    assert body["checks"]["campaigns"] != "SERVING"
    assert body["checks"]["revocations"] == "STARTING"
    assert body["unavailable"] == ["auth", "crm", "ai", "analytics", "campaigns"]


async def test_openapi_documents_problems_everywhere(offline_client: httpx.AsyncClient) -> None:
    document = (await offline_client.get("/openapi.json")).json()
    assert "Problem" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 24
    for path, method, operation in operations:
        assert operation.get("summary"), (path, method)
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert list(response["content"]) == [PROBLEM], (path, method, status)
    login = document["paths"]["/api/auth/login"]["post"]
    assert {"400", "401", "413", "422", "429", "503"} <= login["responses"].keys()
    me = document["paths"]["/api/auth/me"]["get"]
    assert me["security"]
    schema = document["components"]["schemas"]["LoginOut"]["properties"]
    assert "twoFactorRequired" not in schema
    assert "challenge" in schema


def _request(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "headers": headers, "client": (peer, 1234)})


def test_client_ip_honours_only_trusted_proxies() -> None:
    assert client_ip(_request("10.0.0.5", ["6.6.6.6"]), 0) == "10.0.0.5"
    assert client_ip(_request("10.0.0.5", ["6.6.6.6, 198.51.100.9"]), 1) == "198.51.100.9"
    assert client_ip(_request("10.0.0.5", ["6.6.6.6, 198.51.100.9, 10.0.0.4"]), 2) == (
        "198.51.100.9"
    )
    assert client_ip(_request("10.0.0.5", ["6.6.6.6", "198.51.100.9"]), 1) == "198.51.100.9"
    assert client_ip(_request("10.0.0.5", ["198.51.100.9"]), 3) == "198.51.100.9"
    assert client_ip(_request("10.0.0.5", ["not-an-ip"]), 1) == "10.0.0.5"
    assert client_ip(_request("10.0.0.5", []), 1) == "10.0.0.5"
