"""Fixtures of the simulator's tests: the simulator in-process on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from huntaze_simulator.testing import Simulator, serve


@pytest.fixture(scope="module")
async def simulator() -> AsyncIterator[Simulator]:
    """One simulator for a module, with default behaviour (tests that change it start their own)."""
    async with serve() as running:
        yield running
