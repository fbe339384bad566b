"""The loops that take work from the `suggestions` table: drafting pending suggestions, many at
once (an LLM answer takes seconds; fans are never answered one at a time), and sending the
autopilot's replies once due. Work is claimed for a lease, so a crashed worker's share is taken
up again when the lease runs out; a drafting worker wakes on the NOTIFY a new suggestion sends
at commit, and polls besides."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from huntaze_ai_agent.models import Suggestion
from huntaze_kit.db import libpq_url
from huntaze_kit.logging import get_logger

log = get_logger(__name__)

Claim = Callable[[int], Awaitable[list[Suggestion]]]
Handle = Callable[[Suggestion], Awaitable[None]]


class ClaimLoop:
    def __init__(
        self,
        *,
        name: str,
        claim: Claim,
        handle: Handle,
        concurrency: int,
        poll_seconds: float,
        database_url: str | None = None,
        channel: str | None = None,
    ) -> None:
        self.name = name
        self._claim = claim
        self._handle = handle
        self._concurrency = concurrency
        self._poll = poll_seconds
        self._dsn = libpq_url(database_url) if database_url and channel else None
        self._channel = channel
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.handled = 0

    async def run(self) -> None:
        listener = await self._listen()
        try:
            while not self._stopping.is_set():
                free = self._concurrency - len(self._in_flight)
                claimed: list[Suggestion] = []
                if free > 0:
                    try:
                        claimed = await self._claim(free)
                    except Exception:
                        log.exception("ai.claim_failed", worker=self.name)
                for suggestion in claimed:
                    task = asyncio.create_task(self._one(suggestion))
                    self._in_flight.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == free:
                    continue  # more may be waiting
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        if self._dsn is None or self._channel is None:
            return None
        try:
            connection = await asyncpg.connect(self._dsn)
            await connection.add_listener(self._channel, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError):
            log.warning("ai.listen_failed", worker=self.name)  # polling still finds the work
            return None
        return connection

    async def _one(self, suggestion: Suggestion) -> None:
        try:
            await self._handle(suggestion)
            self.handled += 1
        except Exception:
            # Left claimed: taken up again when its lease runs out.
            log.exception("ai.work_failed", worker=self.name, suggestion_id=str(suggestion.id))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        for task in set(self._in_flight):
            task.cancel()
