"""The pages of the email links and the offline API docs, as the edge serves them by itself."""

from __future__ import annotations

import re

import httpx

from huntaze_gateway.middleware import API_CSP, PAGES_CSP


async def test_pages_get_their_own_policy_and_no_script(offline_client: httpx.AsyncClient) -> None:
    for path in (
        "/onboarding",
        "/verify-email?token=abc",
        "/reset-password?token=abc",
        "/settings/security",
    ):
        response = await offline_client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == PAGES_CSP
        assert response.headers["cache-control"] == "no-store"  # links carry tokens
        assert "<script" not in response.text
        assert '<html lang="en">' in response.text
    # `/api/onboarding` is the API, not the page.
    api = await offline_client.get("/api/onboarding/profile")
    assert api.headers["content-security-policy"] == API_CSP


async def test_page_text_is_escaped(offline_client: httpx.AsyncClient) -> None:
    response = await offline_client.get('/verify-email?token="><b>x</b>')
    assert "<b>x</b>" not in response.text
    assert "&#34;&gt;&lt;b&gt;" in response.text


async def test_the_stylesheet_is_served_and_cached(offline_client: httpx.AsyncClient) -> None:
    css = await offline_client.get("/assets/pages.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["cache-control"].startswith("public")


async def test_an_upstream_outage_keeps_the_link_for_another_try(
    offline_client: httpx.AsyncClient,
) -> None:
    response = await offline_client.post("/verify-email", data={"token": "tok-123"})
    assert response.status_code == 503
    assert 'name="token" value="tok-123"' in response.text
    assert 'role="alert"' in response.text


async def test_docs_name_no_other_host_and_serve_only_their_assets(
    offline_client: httpx.AsyncClient,
) -> None:
    docs = await offline_client.get("/docs")
    assert docs.status_code == 200
    assert "//" not in re.sub(r"<!--.*?-->", "", docs.text)
    assert "http" not in docs.headers["content-security-policy"]
    bundle = await offline_client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert (await offline_client.get("/docs/assets/redoc.standalone.js")).status_code == 404
    assert (await offline_client.get("/docs/assets/..%2Fcore.py")).status_code == 404


async def test_an_unreadable_form_is_a_problem(offline_client: httpx.AsyncClient) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    for body in (b"token=\xff", b"&".join(b"f%d=x" % n for n in range(20))):
        response = await offline_client.post("/verify-email", content=body, headers=form)
        assert response.status_code == 400
        assert response.json()["code"] == "MALFORMED_FORM"
