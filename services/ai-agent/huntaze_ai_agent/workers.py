"""The loops that take work from the `suggestions` table: drafting pending suggestions, many at
once (an LLM answer takes seconds; fans are never answered one at a time), and sending the
autopilot's replies once due. Work is claimed for a lease, so a crashed worker's share is taken
up again when the lease runs out; a drafting worker wakes on the NOTIFY a new suggestion sends
at commit, and polls besides.

A claimed batch is handled together first (what its suggestions share is read once), and the
handler answers what is left to do per suggestion (an LLM call each, a send each); every
suggestion holds one of the loop's `concurrency` slots until its own work ends. Outcomes that
end one at a time are written together by a `GroupCommit`: one transaction for all that are
ready, while the previous one commits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg

from huntaze_kit.db import libpq_url
from huntaze_kit.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")
Claim = Callable[[int], Awaitable[Sequence[Item]]]
# Handles a claimed batch; answers the work left per item (none: all of it is done).
HandleBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Awaitable[None]]]]


class ClaimLoop(Generic[Item]):
    """Claims up to `concurrency` items (suggestions, or suggestions with what drafting them
    needs) at a time and hands each claimed batch to `handle`."""

    def __init__(
        self,
        *,
        name: str,
        claim: Claim[Item],
        handle: HandleBatch[Item],
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
        # Suggestions claimed and not yet finished (each holds a slot).
        self._busy = 0
        self._starved = False
        self._refill = max(1, concurrency // 8)
        self.handled = 0

    async def run(self) -> None:
        listener = await self._listen()
        try:
            while not self._stopping.is_set():
                # Cleared before the claim: a NOTIFY that comes during it wakes the next wait.
                self._wake.clear()
                free = self._concurrency - self._busy
                claimed: Sequence[Item] = ()
                if free > 0:
                    try:
                        claimed = await self._claim(free)
                    except Exception:
                        log.exception("ai.claim_failed", worker=self.name)
                if claimed:
                    self._busy += len(claimed)
                    self._start(self._batch(claimed))
                # With every slot taken, work may be waiting that no NOTIFY will announce again:
                # a slot that frees up wakes the loop (otherwise a NOTIFY or the poll does).
                self._starved = free <= 0 or len(claimed) == free
                if claimed and len(claimed) == free:
                    continue  # more may be waiting
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

    def _start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    async def _batch(self, claimed: Sequence[Item]) -> None:
        left: Sequence[Awaitable[None]] = ()
        try:
            left = await self._handle(claimed)
        except Exception:
            # Left claimed: taken up again when the lease runs out.
            log.exception("ai.work_failed", worker=self.name, suggestions=len(claimed))
            self._busy -= len(claimed)
            return
        self.handled += len(claimed) - len(left)
        self._busy -= len(claimed) - len(left)
        for work in left:
            self._start(self._one(work))

    async def _one(self, work: Awaitable[None]) -> None:
        try:
            await work
            self.handled += 1
        except Exception:
            log.exception("ai.work_failed", worker=self.name)
        finally:
            self._busy -= 1

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        # Drafts that end one at a time free their slots one at a time: the loop claims again
        # once a share of them is free (or none is busy), not a batch of one per slot, each with
        # its own claim, reads and ledger write.
        free = self._concurrency - self._busy
        if self._starved and (free >= self._refill or self._busy == 0):
            self._wake.set()

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        deadline = asyncio.get_running_loop().time() + grace
        # A batch may start per-suggestion work while we wait: wait for that too.
        while self._in_flight:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._in_flight), timeout=remaining)
        for task in set(self._in_flight):
            task.cancel()


class GroupCommit(Generic[T]):
    """Writes items handed in one at a time together: `submit` returns once its item is
    written by `write` (one transaction for every item waiting), or raises its error. When a
    group fails, its items are written one by one, so one bad item fails alone."""

    def __init__(self, write: Callable[[Sequence[T]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        written = asyncio.get_running_loop().create_future()
        self._waiting.append((item, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await asyncio.shield(written)

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._write([item for item, _ in group])
            except Exception as error:
                if len(group) == 1:
                    _settle(group[0][1], error)
                    continue
                log.warning("ai.group_write_failed", items=len(group), error=str(error))
                for item, written in group:
                    try:
                        await self._write([item])
                    except Exception as alone:
                        _settle(written, alone)
                    else:
                        _settle(written, None)
                continue
            for _, written in group:
                _settle(written, None)


def _settle(written: asyncio.Future[None], error: BaseException | None) -> None:
    if written.done():
        return
    if error is None:
        written.set_result(None)
    else:
        written.set_exception(error)


class Repeat:
    """Runs `step` again and again: at once while it finds work (answers more than 0), else
    after `poll_seconds`; a failing step is logged and tried again after the same pause."""

    def __init__(
        self, *, name: str, step: Callable[[], Awaitable[int]], poll_seconds: float
    ) -> None:
        self.name = name
        self._step = step
        self._poll = poll_seconds
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            done = 0
            try:
                done = await self._step()
            except Exception as error:
                log.warning("ai.step_failed", worker=self.name, error=str(error))
            if done:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll)

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
