"""The web console's files at `/`: hashed bundles cached for a year, `index.html` revalidated and
answering every client route (the email links' paths too), the API, docs and probes never
shadowed, and the console's own security policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from huntaze_gateway.app import create_app
from huntaze_gateway.middleware import API_CSP, CONSOLE_CSP

from .conftest import offline_settings

INDEX = '<!doctype html><html lang="en"><title>Huntaze</title><div id="app"></div></html>'
BUNDLE = "console.log('console');"


@pytest.fixture(scope="module")
def console_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("console")
    (folder / "index.html").write_text(INDEX)
    (folder / "static").mkdir()
    (folder / "static" / "index-3f2a9c.js").write_text(BUNDLE)
    (folder / "robots.txt").write_text("User-agent: *\nDisallow: /\n")
    (folder / ".build-stamp").write_text("hash")
    return folder


@pytest.fixture(scope="module")
async def console(console_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(offline_settings(gateway_console_dir=console_dir))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/inbox",
        "/inbox/3c9e7a52-6a3f-4f3e-9c1f-0d6f9b0a4d11",
        "/verify-email?token=abc",
        "/reset-password?token=abc",
        "/onboarding",
        "/settings/security",
    ],
)
async def test_client_routes_answer_the_app_revalidated(
    console: httpx.AsyncClient, path: str
) -> None:
    response = await console.get(path)
    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-security-policy"] == CONSOLE_CSP
    assert "'unsafe-inline'" not in CONSOLE_CSP


async def test_hashed_bundles_are_cached_for_a_year(console: httpx.AsyncClient) -> None:
    response = await console.get("/static/index-3f2a9c.js")
    assert response.status_code == 200
    assert response.text == BUNDLE
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in response.headers["content-type"]
    head = await console.head("/static/index-3f2a9c.js")
    assert head.status_code == 200


async def test_other_top_level_files_are_served_revalidated(console: httpx.AsyncClient) -> None:
    response = await console.get("/robots.txt")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing-123.js",
        "/favicon.png",
        "/.build-stamp",
        "/static/../index.html/x.js",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/hostname.txt",
    ],
)
async def test_missing_files_and_hidden_or_outside_paths_are_404(
    console: httpx.AsyncClient, path: str
) -> None:
    response = await console.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_paths_out_of_the_folder_never_reach_its_files(console: httpx.AsyncClient) -> None:
    response = await console.get("/%2e%2e/%2e%2e/%2e%2e/etc/passwd")
    assert response.status_code in (200, 404)
    assert "root:" not in response.text


@pytest.mark.parametrize("path", ["/api/nothing-here", "/api", "/api/crm/nothing/at/all"])
async def test_the_api_is_never_shadowed(console: httpx.AsyncClient, path: str) -> None:
    response = await console.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["content-security-policy"] == API_CSP


async def test_docs_and_probes_still_answer(console: httpx.AsyncClient) -> None:
    assert (await console.get("/healthz")).json() == {"status": "ok"}
    docs = await console.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert (await console.get("/openapi.json")).json()["info"]["title"] == "Huntaze API"


async def test_api_writes_are_not_routed_to_the_console(console: httpx.AsyncClient) -> None:
    response = await console.post("/inbox", json={})
    assert response.status_code == 405


async def test_an_unbuilt_console_says_how_to_build_it(tmp_path: Path) -> None:
    app = create_app(offline_settings(gateway_console_dir=tmp_path / "not-built"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.get("/inbox")
    assert response.status_code == 503
    assert "huntaze_devstack.web build" in response.json()["detail"]
