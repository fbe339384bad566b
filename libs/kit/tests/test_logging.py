"""Logging: records below the level cost nothing and are not written; the request id rides
along on every record made inside a request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from huntaze_kit import logging as kit_logging
from huntaze_kit.logging import (
    configure_logging,
    enabled_for,
    get_logger,
    new_request_id,
    request_context,
)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    threshold = kit_logging._Threshold.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root.handlers[:] = handlers
        root.setLevel(level)
        kit_logging._Threshold.level = threshold


def test_records_below_the_level_are_dropped_and_request_ids_ride_along(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(service="logging-test", level="info")
    assert not enabled_for(logging.DEBUG)
    assert enabled_for(logging.INFO)
    log = get_logger("huntaze.test.logging")
    with request_context("rid-42"):
        log.debug("hidden", detail="never formatted")
        log.info("shown", answer=42)
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [line["event"] for line in lines] == ["shown", "outside"]
    assert lines[0]["request_id"] == "rid-42"
    assert lines[0]["answer"] == 42
    assert lines[0]["service"] == "logging-test"
    assert lines[0]["level"] == "info"
    assert "request_id" not in lines[1]


def test_unknown_levels_are_refused(restored_logging: None) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(service="logging-test", level="loud")


def test_request_ids_are_unique_hex() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in ids)
