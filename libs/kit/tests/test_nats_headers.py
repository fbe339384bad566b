"""The kit's reading of NATS headers gives exactly nats-py's result: on the blocks the server
and the kit's publishers write, on status lines, repeated headers and malformed blocks, and over
a real server."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client

from huntaze_kit.nats_headers import FastHeadersClient, parse_plain_headers
from huntaze_kit.streams import Headers, connect_nats, context_stream, ensure_streams

pytestmark = pytest.mark.timeout(60)

EVENT_ID = str(uuid.uuid4())
EVENT_BLOCK = (
    f"NATS/1.0\r\nNats-Msg-Id: {EVENT_ID}\r\nHuntaze-Event-Id: {EVENT_ID}\r\n"
    "Huntaze-Event-Type: huntaze.crm.v1.PurchaseRecorded\r\n"
    "Huntaze-Occurred-At: 2026-01-02T03:04:05.123456+00:00\r\n"
    "Huntaze-Aggregate-Type: fan\r\nHuntaze-Aggregate-Id: 42\r\n\r\n"
).encode()

# What the server sends, and what other clients or hands may write.
BLOCKS: list[bytes] = [
    EVENT_BLOCK,
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n",
    b"NATS/1.0 409 Consumer Deleted\r\n\r\n",
    b"NATS/1.0 409 Exceeded MaxWaiting\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1016\r\nNats-Last-Stream: 1024\r\n\r\n",
    b"NATS/1.0 100 FlowControl Request\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 100\r\nNats-Last-Consumer: 3\r\n\r\n",
    # Repeated headers: the last value wins, as with nats-py.
    b"NATS/1.0\r\nX-Tag: one\r\nX-Tag: two\r\nX-Tag: three\r\n\r\n",
    b"NATS/1.0\r\nNats-Msg-Id: a\r\nNats-Msg-Id: b\r\n\r\n",
    # The publish-side headers JetStream keeps with a message.
    b"NATS/1.0\r\nNats-Expected-Stream: CRM\r\nNats-Expected-Last-Sequence: 41\r\n"
    b"Nats-Expected-Last-Subject-Sequence: 7\r\nNats-Expected-Last-Msg-Id: x-1\r\n\r\n",
    # Continuation (folded) lines, tabs, padding, no space after the colon, empty values.
    b"NATS/1.0\r\nA: first\r\n continued\r\nB: 2\r\n\r\n",
    b"NATS/1.0\r\nA: first\r\n\tcontinued: too\r\n\r\n",
    b"NATS/1.0\r\nA:\tvalue\r\nB:value\r\nC:  two spaces  \r\nD:\r\nE: \r\n\r\n",
    b"NATS/1.0\r\nNo colon here\r\nName With Space: v\r\n: empty name\r\n\r\n",
    b"NATS/1.0\r\nA: caf\xc3\xa9\r\nB: \xff\xfe\r\n\xc3\xa9: name\r\n\r\n",
    b"NATS/1.0\r\nA\x1fB: unit separator\r\nC: v\x7f\r\n\r\n",
    b"NATS/1.0\r\nUrl: http://example.com:8080/a?b=c\r\n\r\n",
    b"NATS/1.0\r\nA: 1\r\nB: 2",  # no closing blank line
    b"NATS/1.0\r\nA: 1\nB: 2\r\n\r\n",  # a bare line feed
    b"NATS/1.0 \r\n\r\n",
]


async def nats_py(block: bytes) -> dict[str, str] | None:
    result: dict[str, str] | None = await Client()._process_headers(block)
    return result


async def ours(block: bytes) -> dict[str, str] | None:
    return await FastHeadersClient()._process_headers(block)


async def outcome(
    read: Callable[[bytes], Awaitable[dict[str, str] | None]], block: bytes
) -> object:
    """The headers read, or the kind of error raised (nats-py fails on some broken status
    lines: so must we)."""
    try:
        return await read(block)
    except Exception as error:
        return type(error)


@pytest.mark.parametrize("block", BLOCKS)
async def test_every_block_reads_as_nats_py_reads_it(block: bytes) -> None:
    assert await ours(block) == await nats_py(block)


async def test_event_headers_take_the_fast_path() -> None:
    parsed = parse_plain_headers(EVENT_BLOCK)
    assert parsed is not None
    assert parsed[Headers.EVENT_ID] == EVENT_ID
    assert parsed[Headers.MSG_ID] == EVENT_ID
    assert parsed[Headers.OCCURRED_AT] == "2026-01-02T03:04:05.123456+00:00"
    assert parse_plain_headers(b"NATS/1.0\r\nX-Tag: one\r\nX-Tag: two\r\n\r\n") == {"X-Tag": "two"}
    assert parse_plain_headers(b"NATS/1.0\r\n\r\n") == {}
    # Status lines and anything unusual are left to nats-py.
    for block in (BLOCKS[2], BLOCKS[6], BLOCKS[13], BLOCKS[15], BLOCKS[17]):
        assert parse_plain_headers(block) is None


async def test_random_blocks_read_as_nats_py_reads_them() -> None:
    rng = random.Random(7)
    pieces = [b"A", b"Nats-Msg-Id", b":", b": ", b" ", b"\t", b"\r\n", b"\n", b"\r", b"v", b"0"]
    pieces += [b"\xc3\xa9", b"\xff", b"\x1f", b"\x00", b"-", b"404", b"Status", b"Description"]
    # Mostly well-formed lines, so that many blocks take the fast path.
    names = [b"A", b"Nats-Msg-Id", b"Huntaze-Event-Id", b"X_y.z"] * 8
    names += [b"A B", b"", b"\xc3\xa9", b" A"]
    separators = [b": "] * 12 + [b":"] * 4 + [b":  ", b": \t", b" : ", b""]
    values = [b"v", b"v w", b"a: b", b"~!", b"1  2"] * 6
    values += [b" v", b"v ", b"", b"\xc3\xa9", b"v\x7f"]
    plain = 0
    for number in range(6000):
        if number % 2:
            head = rng.choice([b"NATS/1.0\r\n", b"NATS/1.0 ", b"NATS/1.0 100 Idle\r\n"])
            body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 16)))
        else:
            head = b"NATS/1.0\r\n"
            body = b"\r\n".join(
                rng.choice(names) + rng.choice(separators) + rng.choice(values)
                for _ in range(rng.randrange(1, 6))
            )
        block = head + body + rng.choice([b"\r\n\r\n"] * 4 + [b"\r\n", b""])
        assert await outcome(ours, block) == await outcome(nats_py, block), block
        plain += parse_plain_headers(block) is not None
    assert plain > 200  # the fast path is among those compared


async def test_headers_over_a_real_server(nats_url: str) -> None:
    """What a connection of `connect_nats` receives equals what a plain nats-py client does,
    for a stored event and for the server's status messages."""
    stream = context_stream("headertest")
    ours_nc = await connect_nats(nats_url, name="headers-ours")
    plain = Client()
    await plain.connect(nats_url)
    try:
        assert isinstance(ours_nc, FastHeadersClient)
        js = ours_nc.jetstream()
        await ensure_streams(js, [stream])
        event_id = str(uuid.uuid4())
        headers = {
            Headers.MSG_ID: event_id,
            Headers.EVENT_ID: event_id,
            Headers.EVENT_TYPE: "huntaze.test.v1.Thing",
            Headers.OCCURRED_AT: "2026-01-02T03:04:05+00:00",
            "Nats-Expected-Stream": stream.name,
            "X-Text": "café: ünïcode",
        }
        await js.publish("headertest.thing", b"payload", headers=headers)
        await js.publish("headertest.thing", b"payload", headers=headers)  # deduplicated
        received = []
        for client in (ours_nc, plain):
            sub = await client.jetstream().pull_subscribe("headertest.thing", durable=None)
            [msg] = await sub.fetch(1, timeout=5)
            received.append(msg.headers)
            with pytest.raises(asyncio.TimeoutError):
                await sub.fetch(1, timeout=0.5)  # a 404/408 status, read by each client
            await sub.unsubscribe()
        assert received[0] == received[1]
        assert received[0] is not None
        assert received[0][Headers.EVENT_ID] == event_id
        assert received[0]["X-Text"] == "café: ünïcode"
    finally:
        await plain.close()
        await ours_nc.close()
