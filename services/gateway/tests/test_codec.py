"""The descriptor-driven codec: protobuf messages -> the public JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import pydantic
import pytest
from google.protobuf import struct_pb2

from huntaze.ai.v1 import ai_pb2
from huntaze.crm.v1 import crm_pb2
from huntaze.onlyfans.v1 import onlyfans_pb2
from huntaze_gateway.codec import ProtoEnum, enum_names, enum_values, to_json, to_message


def test_a_message_becomes_camel_case_json_with_numbers_names_and_times() -> None:
    fan = crm_pb2.Fan(
        id="f1",
        platform=crm_pb2.PLATFORM_ONLYFANS,
        display_name="Ada",
        tags=["vip"],
        value_cents=2**40,
        subscription_state=crm_pb2.SUBSCRIPTION_STATE_ACTIVE,
        custom_fields=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=3)}),
    )
    fan.created_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC))
    body = to_json(fan)
    assert body["displayName"] == "Ada"
    assert body["platform"] == "onlyfans"
    assert body["subscriptionState"] == "active"
    assert body["valueCents"] == 2**40  # a number, not a string
    assert body["createdAt"] == datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    assert body["customFields"] == {"n": 3}
    # Presence: an unset optional field or message is null; an unset Struct an empty object.
    assert body["platformFanId"] is None
    assert body["lastSeenAt"] is None
    assert to_json(crm_pb2.Fan())["customFields"] == {}
    assert to_json(crm_pb2.Fan(platform_fan_id=""))["platformFanId"] == ""


def test_only_the_member_of_a_oneof_that_is_set_appears() -> None:
    event = crm_pb2.InboxEvent(id=7, type="inbox.reset", reset=crm_pb2.InboxReset())
    assert to_json(event) == {"id": 7, "type": "inbox.reset", "createdAt": None, "reset": {}}


def test_enum_names_drop_the_prefix_and_the_zero_value_is_unspecified() -> None:
    names = enum_names(crm_pb2.MessageDirection.DESCRIPTOR)
    assert names[crm_pb2.MESSAGE_DIRECTION_UNSPECIFIED] == "unspecified"
    assert enum_values(crm_pb2.PurchaseKind.DESCRIPTOR)["ppv_unlock"] == (
        crm_pb2.PURCHASE_KIND_PPV_UNLOCK
    )
    assert "unspecified" not in enum_values(crm_pb2.Platform.DESCRIPTOR)


def test_enum_input_accepts_the_public_names_only() -> None:
    adapter: pydantic.TypeAdapter[str] = pydantic.TypeAdapter(
        Annotated[str, ProtoEnum(crm_pb2.Platform.DESCRIPTOR)]
    )
    assert adapter.validate_python("tiktok") == "tiktok"
    with pytest.raises(pydantic.ValidationError):
        adapter.validate_python("unspecified")
    assert adapter.json_schema()["enum"] == ["onlyfans", "tiktok", "instagram", "reddit"]


def test_maps_are_objects_both_ways_and_a_wrapped_list_is_the_list() -> None:
    session = onlyfans_pb2.ImportedSession(cookies={"sess": "s1", "auth_id": "7"}, x_bc="bc")
    assert to_json(session)["cookies"] == {"sess": "s1", "auth_id": "7"}
    config = to_message({"fan_modes": {"f1": "off"}}, ai_pb2.AiConfig())
    assert dict(config.fan_modes) == {"f1": "off"}
    # `TagSet` tells "no tags" from "unchanged": the JSON list fills it, an empty one too.
    update = to_message({"tags": []}, crm_pb2.UpdateFanRequest())
    assert update.HasField("tags")
    assert list(to_message({"tags": ["vip"]}, crm_pb2.UpdateFanRequest()).tags.tags) == ["vip"]
    assert not to_message({"tags": None}, crm_pb2.UpdateFanRequest()).HasField("tags")
