"""Streams declared per context, and a NATS connection that never outlives its cancellation or
its close (the cause of fixtures that hung at teardown while a client retried a stopped server).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from huntaze_devstack.embedded import free_port
from huntaze_kit.streams import (
    close_nats,
    connect_nats,
    context_stream,
    ensure_stream_exists,
    ensure_streams,
)

pytestmark = pytest.mark.timeout(90)


def _other_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]


async def test_cancelling_a_connection_that_waits_for_nats_ends_it() -> None:
    """nats-py's own retry loop can miss a cancellation that lands as an attempt fails."""
    url = f"nats://127.0.0.1:{free_port()}"  # nobody listens: every attempt is refused
    before = set(_other_tasks())
    for _ in range(60):
        connecting = asyncio.create_task(
            connect_nats(url, name="cancelled", reconnect_time_wait=0.001)
        )
        await asyncio.sleep(random.uniform(0, 0.01))
        connecting.cancel()
        done, _ = await asyncio.wait({connecting}, timeout=2.0)
        assert done, "the cancelled connection kept retrying"
        assert connecting.cancelled()
    assert set(_other_tasks()) <= before


async def test_a_connection_that_never_comes_up_gives_up_at_its_deadline() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match="did not answer"):
        await connect_nats(
            url, name="deadline", reconnect_time_wait=0.05, initial_connect_deadline=0.3
        )


async def test_closing_a_client_whose_server_is_gone_stops_its_reconnecting(
    embedded_nats: Any,
) -> None:
    client = await connect_nats(embedded_nats.url, name="orphan", reconnect_time_wait=0.05)
    before = set(_other_tasks())
    await asyncio.to_thread(embedded_nats.stop)
    for _ in range(100):
        if client.is_reconnecting:
            break
        await asyncio.sleep(0.05)
    assert client.is_reconnecting
    await asyncio.sleep(0.3)  # several refused attempts

    await asyncio.wait_for(close_nats(client), 5.0)
    assert client.is_closed
    await asyncio.sleep(0.3)
    assert [task for task in _other_tasks() if task not in before and not task.done()] == []


async def test_an_owner_declares_its_stream_and_a_reader_only_makes_sure_it_exists(
    nats_url: str,
) -> None:
    client = await connect_nats(nats_url, name="streams")
    try:
        js = client.jetstream()
        owned = context_stream("ledger", "Events of the ledger: entries and balances.")
        assert owned.name == "LEDGER"
        assert owned.subjects == ("ledger.>",)

        # A reader starts first: the stream exists, with the shape the owner will declare.
        await ensure_stream_exists(js, context_stream("ledger"))
        info = await js.stream_info("LEDGER")
        assert info.config.subjects == ["ledger.>"]
        assert info.config.duplicate_window == 3600

        # The owner's start makes it exactly what the owner declares; readers leave it so.
        await ensure_streams(js, [owned])
        await ensure_stream_exists(js, context_stream("ledger"))
        info = await js.stream_info("LEDGER")
        assert info.config.description == owned.description
    finally:
        await close_nats(client)


def test_context_names_are_checked() -> None:
    with pytest.raises(ValueError, match="invalid context name"):
        context_stream("Ledger.v1")
