"""The proto's field rules, as the server interceptor checks every request."""

from __future__ import annotations

import pytest

from huntaze.crm.v1 import crm_pb2
from huntaze_kit.errors import VALIDATION_FAILED, InvalidArgument
from huntaze_kit.validation import check_request


def test_every_broken_rule_is_named_by_its_field_path() -> None:
    request = crm_pb2.SendMessageRequest(
        text="x" * 5001,
        price_cents=-1,
        attachments=[crm_pb2.Attachment(url="https://a.test/"), crm_pb2.Attachment(url="u" * 2049)],
        idempotency_key="k",
    )
    with pytest.raises(InvalidArgument) as caught:
        check_request(request)
    assert caught.value.reason == VALIDATION_FAILED
    assert [v.field for v in caught.value.violations] == [
        "text",
        "price_cents",
        "attachments[1].url",
    ]
    assert caught.value.violations[0].description == "must be at most 5000 characters"
    assert caught.value.message == "text: must be at most 5000 characters (and 2 more)"


def test_a_request_at_its_limits_passes() -> None:
    check_request(
        crm_pb2.SendMessageRequest(
            text="x" * 5000,
            price_cents=100_000_000,
            attachments=[crm_pb2.Attachment(url="u" * 2048)] * 20,
            idempotency_key="k" * 200,
        )
    )
    check_request(crm_pb2.GetFanRequest())  # a message without rules
