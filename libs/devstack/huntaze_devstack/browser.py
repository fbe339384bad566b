"""A Chromium for the OnlyFans worker, found or installed (`make run` and `make test` call this).

Order: a `chromium` already on the PATH (Debian's package); else Playwright's own download
(`playwright install chromium`), where the machine can reach Playwright's CDN; else, as root on
Debian or Ubuntu, `apt-get install -y chromium`. The worker uses the same order: the configured
`HUNTAZE_ONLYFANS_BROWSER_PATH`, then `chromium` on the PATH, then Playwright's download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

INSTALL_TIMEOUT = 900


def system_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def playwright_chromium() -> str | None:
    """Playwright's downloaded Chromium, when there is one."""
    cache = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache/ms-playwright")
    for candidate in sorted(cache.glob("chromium*/chrome-linux*/chrome"), reverse=True):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _run(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, timeout=INSTALL_TIMEOUT, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_chromium() -> str:
    """The path of a Chromium, installing one when there is none."""
    found = system_chromium() or playwright_chromium()
    if found:
        return found
    print("No Chromium found: trying Playwright's download.", flush=True)
    if _run([sys.executable, "-m", "playwright", "install", "chromium"]):
        found = playwright_chromium()
        if found:
            return found
    apt = shutil.which("apt-get")
    if apt and os.geteuid() == 0:
        print("Playwright's download failed: installing Debian's chromium.", flush=True)
        if _run([apt, "update"]) and _run([apt, "install", "-y", "chromium"]):
            found = system_chromium()
            if found:
                return found
    raise SystemExit(
        "No Chromium for the OnlyFans worker: install Debian's `chromium` package (as root: "
        "apt-get install -y chromium), or run `python -m playwright install chromium`, or set "
        "HUNTAZE_ONLYFANS_BROWSER_PATH."
    )


def main() -> int:
    print(f"Chromium: {ensure_chromium()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
