"""The scheduler: a loop that claims due sends from the `sends` table (no in-memory timers: a
send scheduled for next week is a row until then) and makes them, many at once. A claim is a
lease: a scheduler that crashed mid-send leaves its rows to be taken up again when the lease
runs out, and the CRM's idempotency key answers a send made twice with the first message."""

from __future__ import annotations

import asyncio
import contextlib

from huntaze_campaigns.repository import DueSend
from huntaze_campaigns.service import CampaignsService
from huntaze_kit.logging import get_logger

log = get_logger(__name__)


class Scheduler:
    def __init__(self, service: CampaignsService, *, concurrency: int, poll_seconds: float) -> None:
        self._service = service
        self._concurrency = concurrency
        self._poll = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self.dispatched = 0

    def wake(self) -> None:
        """Look for due sends now (a test that moved its clock, a campaign just scheduled)."""
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            free = self._concurrency - len(self._in_flight)
            claimed: list[DueSend] = []
            if free > 0:
                try:
                    claimed = await self._service.claim_due(limit=free)
                except Exception:
                    log.exception("campaigns.claim_failed")
            for send in claimed:
                task = asyncio.create_task(self._one(send))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if claimed and len(claimed) == free:
                continue  # more may be due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def _one(self, send: DueSend) -> None:
        try:
            await self._service.dispatch(send)
            self.dispatched += 1
        except Exception:
            # Left claimed: taken up again when its lease runs out.
            log.exception("campaigns.send_failed", campaign_id=str(send.campaign_id))

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
