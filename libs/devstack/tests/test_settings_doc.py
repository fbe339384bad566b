"""The README documents every setting, in one generated table."""

from __future__ import annotations

from huntaze_devstack import settings_doc


def test_readme_settings_table_is_fresh() -> None:
    text = settings_doc.README.read_text()
    assert settings_doc.readme_with_table(text) == text, "run `make docs`"


def test_every_suite_process_has_documented_settings() -> None:
    readers = {reader for reader, _ in settings_doc.settings_classes()}
    assert {"auth", "gateway", "every service"} <= readers
    names = {doc.name for doc in settings_doc.collect()}
    for expected in (
        "HUNTAZE_DATABASE_URL",
        "HUNTAZE_NATS_URL",
        "HUNTAZE_GATEWAY_PORT",
        "HUNTAZE_SMTP_URL",
        "HUNTAZE_HOME",
        "HUNTAZE_TEST_DATABASE_URL",
    ):
        assert expected in names
    assert all(name.startswith("HUNTAZE_") for name in names)
