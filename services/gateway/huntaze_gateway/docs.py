"""`/docs`: Swagger UI served from the suite itself, so the API docs work on a host that cannot
reach a CDN (offline, or locked down). The assets ship in the `fastapi-offline` package; the
page is FastAPI's own, pointed at them."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from huntaze_gateway.problems import NOT_FOUND, ApiProblem

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
# Only the files the page loads, with their media types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
# The assets change only with the package: a day in a browser's cache spares 1.7 MB a visit.
_ASSET_CACHE = "public, max-age=86400"


def install_docs(app: FastAPI, *, openapi_url: str) -> None:
    """Adds `/docs` and its assets (the app is made with `docs_url=None`)."""
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            # No badge fetched from the public validator either.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get(f"{ASSETS_PATH}/{{name}}")
    async def swagger_asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise ApiProblem(NOT_FOUND, code="NOT_FOUND")
        return FileResponse(
            _ASSETS_DIR / name, media_type=media_type, headers={"Cache-Control": _ASSET_CACHE}
        )

    app.include_router(router)
