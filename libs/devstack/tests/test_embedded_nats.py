from __future__ import annotations

import nats

from huntaze_devstack.embedded import EmbeddedNats


async def test_jetstream_messages_survive_a_restart(embedded_nats: EmbeddedNats) -> None:
    client = await nats.connect(embedded_nats.url)
    try:
        jetstream = client.jetstream()
        await jetstream.add_stream(name="DEVSTACK", subjects=["devstack.>"])
        ack = await jetstream.publish("devstack.thing.happened", b"kept on disk")
        assert ack.seq == 1
    finally:
        await client.close()

    port = embedded_nats.port
    assert embedded_nats.restart() == f"nats://127.0.0.1:{port}"

    client = await nats.connect(embedded_nats.url)
    try:
        message = await client.jetstream().get_msg("DEVSTACK", 1)
        assert message.data == b"kept on disk"
        assert message.subject == "devstack.thing.happened"
    finally:
        await client.close()


async def test_nats_url_fixture_starts_without_streams(nats_url: str) -> None:
    client = await nats.connect(nats_url)
    try:
        assert await client.jetstream().streams_info() == []
    finally:
        await client.close()
