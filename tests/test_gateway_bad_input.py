"""Bad input everywhere gets a 4xx problem document, never a 500.

The routes come from the gateway's own OpenAPI document, so a new route is swept as soon as it
exists: every operation with a JSON body gets malformed JSON, the wrong shapes, wrong types,
missing fields, oversized and hostile strings, and the wrong media types; every operation is
called without credentials. Then the semantic checks the service makes: invalid emails, weak
passwords, unknown ids.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings

pytestmark = pytest.mark.slow

PROBLEM = "application/problem+json"
JSON = "application/json"
BODY_LIMIT = 16384  # HUNTAZE_GATEWAY_MAX_BODY_BYTES of the suite fixture
SAMPLE_ID = "0b6f9f7e-3d55-4d3c-9d0e-3f9a3f6c2b11"

DOCUMENT: dict[str, Any] = create_app(GatewaySettings()).openapi()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = DOCUMENT["components"]["schemas"][name]
    if "anyOf" in schema:  # an optional body: the object member
        objects = [_resolve(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return objects[0]
    return schema


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            found.append((method.upper(), path, operation))
    return found


OPERATIONS = _operations()
BODY_OPERATIONS = [op for op in OPERATIONS if "requestBody" in op[2]]
AUTHENTICATED = [op for op in OPERATIONS if op[2].get("security")]


def _concrete(path: str) -> str:
    """Every path parameter (`{session_id}`, `{fan_id}`, ...) as an id of nothing."""
    return re.sub(r"\{[^}]+\}", SAMPLE_ID, path)


def _wrong_value(prop: dict[str, Any]) -> Any:
    kind = prop.get("type") or next(
        (s.get("type") for s in prop.get("anyOf", []) if s.get("type") != "null"), "string"
    )
    return {"string": 12345, "array": "not-a-list", "boolean": {"x": 1}, "integer": "x"}.get(
        kind, [1, 2]
    )


def _strings(schema: dict[str, Any]) -> list[str]:
    return [
        name
        for name, prop in schema.get("properties", {}).items()
        if prop.get("type") == "string"
        or any(s.get("type") == "string" for s in prop.get("anyOf", []))
    ]


def _body_cases(schema: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    props: dict[str, Any] = schema.get("properties", {})
    strings = _strings(schema)
    long_text = "x" * (BODY_LIMIT // (2 * max(1, len(props))))

    def body(value: Any) -> bytes:
        return json.dumps(value).encode()

    return [
        ("malformed", b'{"a": ', JSON),
        ("unterminated_string", b'{"email": "abc', JSON),
        ("trailing_garbage", b"{} xyz", JSON),
        ("invalid_utf8", b'{"email": "\xff\xfe\xfd"}', JSON),
        ("deeply_nested", b"[" * 5000 + b"]" * 5000, JSON),
        ("not_an_object", body([1, 2, 3]), JSON),
        ("scalar", b"42", JSON),
        ("null", b"null", JSON),
        ("empty_object", b"{}", JSON),
        ("wrong_types", body({name: _wrong_value(p) for name, p in props.items()}), JSON),
        ("long_strings", body(dict.fromkeys(strings, long_text)), JSON),
        ("nul_bytes", body(dict.fromkeys(strings, "a\u0000b")), JSON),
        (
            "lone_surrogates",
            ("{" + ",".join(f'"{n}": "a\\ud800b"' for n in strings) + "}").encode(),
            JSON,
        ),
        ("oversized", body({"padding": "x" * (BODY_LIMIT + 10)}), JSON),
        ("form_encoded", b"email=a%40b.c&password=x", "application/x-www-form-urlencoded"),
        ("text_plain", body(dict.fromkeys(strings, "x")), "text/plain"),
        ("no_content_type", b"{not json", ""),
    ]


@pytest.fixture(scope="module")
async def access_token(suite: Any) -> str:
    async with suite.client() as client:
        email, password = await suite.register(client)
        tokens = (await suite.login(client, email, password))["tokens"]
    return tokens["accessToken"]


def _is_problem(response: httpx.Response) -> bool:
    if response.headers.get("content-type") != PROBLEM:
        return False
    body = response.json()
    return body.get("status") == response.status_code and bool(body.get("code"))


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    BODY_OPERATIONS,
    ids=[f"{m} {p}" for m, p, _ in BODY_OPERATIONS],
)
async def test_bad_bodies_get_4xx_problems(
    suite: Any, access_token: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    schema = _resolve(operation["requestBody"]["content"][JSON]["schema"])
    required = bool(operation["requestBody"].get("required"))
    failures = []
    async with suite.client() as client:
        for case, content, content_type in _body_cases(schema):
            headers = {"authorization": f"Bearer {access_token}"}
            if content_type:
                headers["content-type"] = content_type
            response = await client.request(
                method, _concrete(path), content=content, headers=headers
            )
            acceptable = response.status_code < 500 and (
                response.status_code < 400 or _is_problem(response)
            )
            # Only a body the service may legitimately accept can succeed: `{}` (or no body)
            # where every member is optional.
            may_succeed = case == "empty_object" or (case == "null" and not required)
            if response.status_code < 400 and not may_succeed:
                acceptable = False
            if not acceptable:
                failures.append((case, response.status_code, response.text[:300]))
            if case == "oversized" and response.status_code != 413:
                failures.append((case, response.status_code, "expected 413"))
            if case in ("malformed", "unterminated_string") and response.status_code != 400:
                failures.append((case, response.status_code, "expected 400"))
    assert not failures, f"{method} {path}: {failures}\n{suite.logs()}"


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    AUTHENTICATED,
    ids=[f"{m} {p}" for m, p, _ in AUTHENTICATED],
)
async def test_protected_routes_refuse_anonymous_callers(
    suite: Any, method: str, path: str, operation: dict[str, Any]
) -> None:
    async with suite.client() as client:
        response = await client.request(method, _concrete(path), json={})
        assert response.status_code == 401, response.text
        assert _is_problem(response)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_sweep_covers_the_api() -> None:
    paths = {path for _, path, _ in OPERATIONS}
    for expected in (
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/login/2fa",
        "/api/auth/refresh",
        "/api/auth/change-password",
        "/api/onboarding/save-profile",
    ):
        assert expected in paths
    assert len(BODY_OPERATIONS) >= 13
    assert len(AUTHENTICATED) >= 14


@pytest.mark.parametrize(
    "email",
    ["plainaddress", "missing-at.example.com", "a@", "@example.com", "a b@example.com", "a@b@c.d"],
)
async def test_invalid_emails_are_422_on_the_email_field(suite: Any, email: str) -> None:
    async with suite.client() as client:
        response = await client.post(
            "/api/auth/register",
            json={"email": email, "password": "Violet-Harbour-Lantern-42"},
        )
        assert response.status_code == 422, response.text
        assert _is_problem(response)
        assert [e["field"] for e in response.json()["errors"]] == ["email"]
        for route in ("/api/auth/login", "/api/auth/forgot-password"):
            other = await client.post(route, json={"email": email, "password": "x" * 10})
            assert 400 <= other.status_code < 500, other.text
            assert _is_problem(other)


@pytest.mark.parametrize(
    "password",
    ["short", "password", "12345678", "aaaaaaaaaaaa", "qwertyuiop", "P" * 129],
)
async def test_weak_passwords_are_422_on_the_password_field(suite: Any, password: str) -> None:
    async with suite.client() as client:
        response = await client.post(
            "/api/auth/register",
            json={"email": "weak-password@example.com", "password": password},
        )
        assert response.status_code == 422, response.text
        assert _is_problem(response)
        assert "password" in [e["field"] for e in response.json()["errors"]]


async def test_semantically_wrong_values_get_4xx(suite: Any, access_token: str) -> None:
    headers = {"authorization": f"Bearer {access_token}"}
    async with suite.client(headers=headers) as client:
        calls = [
            ("DELETE", "/api/auth/sessions/not-a-uuid", None),
            ("DELETE", "/api/auth/sessions/" + "a" * 65, None),
            ("DELETE", f"/api/auth/sessions/{SAMPLE_ID}", None),
            ("POST", "/api/auth/verify-email", {"token": "no-such-token"}),
            ("POST", "/api/auth/reset-password", {"token": "nope", "newPassword": "Good-Pass-12"}),
            ("POST", "/api/auth/login/2fa", {"challengeToken": "nope", "code": "123456"}),
            ("POST", "/api/auth/refresh", {"refreshToken": "nope"}),
            ("POST", "/api/auth/2fa/confirm", {"code": "123456"}),
            ("POST", "/api/auth/2fa/disable", {"password": "x", "code": "123456"}),
            ("POST", "/api/onboarding/save-profile", {"timezone": "Nowhere/Else"}),
            ("POST", "/api/onboarding/save-profile", {"goals": ["x"] * 21}),
            ("POST", "/api/auth/register", {"email": "a@example.com", "password": 12345678}),
            ("POST", "/api/auth/register", {"email": ["a@example.com"], "password": "x"}),
            ("POST", "/api/auth/login", {"email": None, "password": None}),
        ]
        for method, path, body in calls:
            response = await client.request(method, path, json=body)
            assert 400 <= response.status_code < 500, (method, path, response.text)
            assert _is_problem(response), (method, path, response.text)
