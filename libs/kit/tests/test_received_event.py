"""How the kit consumer reads an event from a JetStream message: its id parsed the fast way
accepts exactly what `uuid.UUID` accepts, and compares, hashes and prints as one."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from huntaze_kit.consumers import InvalidEvent, ReceivedEvent
from huntaze_kit.streams import Headers

EVENT_ID = uuid.UUID("7bca141b-86c2-4d6c-a840-9f1492d5cafa")


V1_REPLY = "$JS.ACK.CRM.analytics-ingest.2.41.40.1764554400000000000.9"


def message(event_id: str, reply: str = V1_REPLY) -> Msg:
    return Msg(
        _client=Client(),
        subject="crm.purchase.recorded",
        reply=reply,
        data=b"\x08\x01",
        headers={
            Headers.EVENT_ID: event_id,
            Headers.EVENT_TYPE: "huntaze.crm.v1.PurchaseRecorded",
            Headers.AGGREGATE_TYPE: "fan",
            Headers.AGGREGATE_ID: "42",
        },
    )


@pytest.mark.parametrize(
    "written",
    [
        str(EVENT_ID),
        str(EVENT_ID).upper(),
        EVENT_ID.hex,
        "{" + str(EVENT_ID) + "}",
        "urn:uuid:" + str(EVENT_ID),
        "7bca-141b-86c2-4d6c-a840-9f14-92d5-cafa",
    ],
)
def test_every_form_uuid_accepts_is_the_same_event_id(written: str) -> None:
    event = ReceivedEvent.from_msg(message(written))
    assert event.event_id == uuid.UUID(written) == EVENT_ID
    assert isinstance(event.event_id, uuid.UUID)
    assert hash(event.event_id) == hash(EVENT_ID)
    assert {EVENT_ID: "found"}[event.event_id] == "found"
    assert str(event.event_id) == str(EVENT_ID)
    assert event.stream_sequence == 41
    assert event.delivery_count == 2
    assert event.payload == b"\x08\x01"


@pytest.mark.parametrize(
    "written",
    [
        str(EVENT_ID)[:-1],
        str(EVENT_ID) + "0",
        " " + str(EVENT_ID),
        "x" * 36,
        "not-a-uuid",
        str(EVENT_ID).replace("a", "g", 1),
    ],
)
def test_what_uuid_rejects_is_an_invalid_event(written: str) -> None:
    with pytest.raises(ValueError, match=r"badly formed|invalid literal"):
        uuid.UUID(written)
    with pytest.raises(InvalidEvent, match="is not a UUID"):
        ReceivedEvent.from_msg(message(written))


@pytest.mark.parametrize(
    "reply",
    [
        V1_REPLY,
        "$JS.ACK.hub.ACCHASH.CRM.analytics-ingest.3.1041.40.1764554400000000000.0.x8Kz",
        "$JS.ACK._.ACCHASH.CRM.analytics-ingest.1.7.7.1764554400000000000.12",
        "$JS.ACK.hub.ACCHASH.CRM.analytics-ingest.5.99.98.1764554400000000000.0.r.extra",
    ],
)
def test_delivery_count_and_sequence_are_those_nats_py_reads(reply: str) -> None:
    msg = message(str(EVENT_ID), reply)
    event = ReceivedEvent.from_msg(msg)
    assert event.delivery_count == msg.metadata.num_delivered
    assert event.stream_sequence == msg.metadata.sequence.stream


@pytest.mark.parametrize(
    "reply", ["", "_INBOX.abc", "$JS.ACK.CRM.c.1.2", "$JS.ACK.a.b.c.d.e.f.g.h"]
)
def test_a_message_without_a_jetstream_ack_subject_raises_as_nats_py_does(reply: str) -> None:
    msg = message(str(EVENT_ID), reply)
    with pytest.raises(Exception) as expected:  # noqa: PT011
        _ = msg.metadata
    with pytest.raises(type(expected.value)):
        ReceivedEvent.from_msg(msg)
