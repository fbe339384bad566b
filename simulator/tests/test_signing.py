"""The signature rule, checked against the worked examples public clients reproduce."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from huntaze_simulator.signing import DynamicRules, compute_sign, generate_rules, sign_request

# The deviint rule set of 2025-04-18 ("shape C").
DEVIINT = {
    "end": "68013327",
    "start": "40089",
    "format": "40089:{}:{:x}:68013327",
    "prefix": "40089",
    "suffix": "68013327",
    "revision": "202504171657-5ce73b38fc",
    "app_token": "33d57ade8c02dbc5a333db99ff9ae26a",
    "static_param": "UkBoRvNXEEgUq42IDfP867YM2u2QsTxG",
    "checksum_indexes": [
        0,
        0,
        0,
        1,
        4,
        6,
        7,
        9,
        10,
        10,
        11,
        12,
        12,
        13,
        14,
        16,
        17,
        18,
        18,
        20,
        22,
        23,
        23,
        27,
        28,
        28,
        31,
        34,
        35,
        38,
        38,
        39,
    ],
    "checksum_constant": -250,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api2/v2/users/me", "40089:5b4f1c114272a1a2adfa7f87ac09289e74b6c16a:795:68013327"),
        (
            "/api2/v2/chats?limit=10&offset=0&order=recent&skip_users=all",
            "40089:8ff6a506eca6465d5f217086bd67228a03211d4c:70d:68013327",
        ),
    ],
)
def test_the_worked_examples_sign_alike(path: str, expected: str) -> None:
    rules = DynamicRules.from_published(DEVIINT)
    assert compute_sign(rules, path_and_query=path, user_id="123456", time="1713400000000") == (
        expected
    )


def test_every_published_shape_parses_back_to_the_same_rules() -> None:
    rules = generate_rules(random.Random(7), now=datetime(2026, 9, 17, 15, 55, tzinfo=UTC))
    for shape in ("format", "prefix", "ofauth"):
        parsed = DynamicRules.from_published(rules.published(shape))
        assert parsed.model_dump(exclude={"revision"}) == rules.model_dump(exclude={"revision"})


def test_a_rotation_bumps_the_prefix_and_stamps_the_build_time() -> None:
    rng = random.Random(3)
    first = generate_rules(rng, now=datetime(2026, 1, 19, 10, 33, tzinfo=UTC))
    second = generate_rules(rng, now=datetime(2026, 9, 17, 15, 55, tzinfo=UTC), previous=first)
    assert int(second.prefix) > int(first.prefix)
    assert second.suffix == "6aac0d54"
    assert second.revision.startswith("202609171555-")
    assert second.static_param != first.static_param
    assert len(second.checksum_indexes) == 32
    assert all(0 <= index < 40 for index in second.checksum_indexes)


def test_the_signed_headers_carry_time_and_app_token() -> None:
    rules = DynamicRules.from_published(DEVIINT)
    headers = sign_request(
        rules, path_and_query="/api2/v2/users/me", user_id=123456, time_ms=1713400000000
    )
    assert headers == {
        "sign": "40089:5b4f1c114272a1a2adfa7f87ac09289e74b6c16a:795:68013327",
        "time": "1713400000000",
        "app-token": "33d57ade8c02dbc5a333db99ff9ae26a",
    }
