"""The creator's web console (`web/`, built by `python -m huntaze_devstack.web build`), served
at `/` from the folder `gateway_console_dir` names.

Its hashed bundles under `/static/` are cached for a year (a new build has new names);
`index.html` is revalidated on every load, and answers every client route (`/inbox`,
`/verify-email?token=`, ...) so that a link or a reload opens the right page. Paths of the API,
the docs and the probes are never the console's: an unknown `/api/...` stays a 404 problem.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from huntaze_gateway.problems import UNAVAILABLE, ApiProblem

ASSETS_PREFIX = "/static/"
# Never answered by the console, whatever the console's routes are.
RESERVED_PREFIXES = ("/api", "/docs", "/redoc", "/openapi.json", "/healthz", "/readyz")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
INDEX = "index.html"


def is_console_path(path: str) -> bool:
    """Whether the console answers `path` (the edge gives it the console's security policy)."""
    return not any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES)


def _inside(root: Path, relative: str) -> Path | None:
    """The file `relative` names under `root`, or None (missing, a folder, or outside)."""
    parts = PurePosixPath(relative).parts
    if any(part in ("..", ".") or part.startswith(".") for part in parts):
        return None
    candidate = root.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except OSError:
        return None
    if not resolved.is_file() or not resolved.is_relative_to(root.resolve()):
        return None
    return resolved


def console_router(directory: Path) -> APIRouter:
    """The routes of the console built into `directory` (include it after every API router)."""
    router = APIRouter(include_in_schema=False)

    def index() -> FileResponse:
        page = directory / INDEX
        if not page.is_file():
            raise ApiProblem(
                UNAVAILABLE,
                code="CONSOLE_NOT_BUILT",
                detail=(
                    "The web console is not built: run `python -m huntaze_devstack.web build` "
                    "(make run does it)."
                ),
            )
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": REVALIDATE})

    @router.api_route("/{path:path}", methods=["GET", "HEAD"])
    async def console(path: str) -> FileResponse:
        url_path = "/" + path
        if not is_console_path(url_path):
            raise StarletteHTTPException(status_code=404)
        found = _inside(directory, path) if path and path != INDEX else None
        if found is not None:
            cache = IMMUTABLE if url_path.startswith(ASSETS_PREFIX) else REVALIDATE
            return FileResponse(found, headers={"Cache-Control": cache})
        # A missing bundle or file is a 404, not the app: only page routes fall back to it.
        if url_path.startswith(ASSETS_PREFIX) or "." in PurePosixPath(path).name:
            raise StarletteHTTPException(status_code=404)
        return index()

    return router


def install_console(app: FastAPI, directory: Path) -> None:
    app.include_router(console_router(directory))
