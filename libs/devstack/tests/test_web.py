"""The console's build stamp: any change to what the build reads changes the hash (so `make run`
rebuilds), nothing else does; and the folders the build reads are the ones the app lives in."""

from __future__ import annotations

from pathlib import Path

import pytest

from huntaze_devstack import web


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in web.SOURCE_FILES:
        (tmp_path / name).write_text(f"{name}\n")
    (tmp_path / "src" / "pages").mkdir(parents=True)
    (tmp_path / "src" / "pages" / "inbox.tsx").write_text("export const x = 1;\n")
    monkeypatch.setattr(web, "WEB_ROOT", tmp_path)
    return tmp_path


def test_a_source_change_changes_the_hash(sources: Path) -> None:
    before = web.source_hash()
    assert web.source_hash() == before
    (sources / "src" / "pages" / "inbox.tsx").write_text("export const x = 2;\n")
    assert web.source_hash() != before


def test_a_new_source_file_or_a_lock_change_changes_the_hash(sources: Path) -> None:
    before = web.source_hash()
    (sources / "src" / "new.ts").write_text("")
    added = web.source_hash()
    assert added != before
    (sources / "package-lock.json").write_text("{}\n")
    assert web.source_hash() != added


def test_build_output_and_installed_packages_do_not_count(sources: Path) -> None:
    before = web.source_hash()
    (sources / "dist").mkdir()
    (sources / "dist" / "index.html").write_text("<html></html>")
    (sources / "node_modules").mkdir()
    (sources / "node_modules" / "x.js").write_text("")
    assert web.source_hash() == before


def test_the_real_console_has_every_source_the_build_reads() -> None:
    for name in web.SOURCE_FILES:
        assert (web.REPO_ROOT / "web" / name).is_file(), name
    assert (web.REPO_ROOT / "web" / "src" / "main.tsx").is_file()
