"""The accounts this process drives, kept running: for each connected account whose lease it
holds, a push listener (a fan's message reaches the CRM within seconds) and a sync loop (at a
jittered interval, or at once on request). Leases are renewed well before they expire; an account
whose lease is lost, or that is paused or disconnected, is stopped here. At most `capacity`
accounts per process; idle browser contexts are closed by the driver."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from huntaze_kit.logging import get_logger
from huntaze_onlyfans_worker.accounts import AccountPaused, Accounts, random_share
from huntaze_onlyfans_worker.driver import NotConnected, PlatformError, RateLimited
from huntaze_onlyfans_worker.sync import Syncer

log = get_logger(__name__)

# Delays after a failure, growing (seconds).
RETRY_DELAYS = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)


@dataclass
class _Running:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sync_now: asyncio.Event = field(default_factory=asyncio.Event)


class Runner:
    def __init__(
        self,
        accounts: Accounts,
        syncer: Syncer,
        *,
        capacity: int,
        sync_interval: float,
        sync_jitter: float,
        close_idle: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.accounts = accounts
        self.syncer = syncer
        self.capacity = capacity
        self.sync_interval = sync_interval
        self.sync_jitter = sync_jitter
        self._close_idle = close_idle
        self._running: dict[uuid.UUID, _Running] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        accounts.on_paused.append(self.stop_account)

    @property
    def driving(self) -> set[uuid.UUID]:
        return set(self._running)

    async def run(self) -> None:
        """Takes and renews leases until `stop()`."""
        renew_every = max(self.accounts.lease_seconds / 3, 0.2)
        while not self._stopping.is_set():
            try:
                await self._tend()
            except Exception as error:
                log.warning("onlyfans.runner_failed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), renew_every)
            self._wake.clear()

    async def _tend(self) -> None:
        connected = set(await self.accounts.connected_accounts())
        for creator_id in list(self._running):
            if creator_id not in connected or not await self.accounts.take_lease(creator_id):
                self.stop_account(creator_id)
        for creator_id in connected - set(self._running):
            if len(self._running) >= self.capacity or self._stopping.is_set():
                break
            if await self.accounts.take_lease(creator_id):
                self._start(creator_id)
        if self._close_idle is not None:
            await self._close_idle()

    def wake(self, creator_id: uuid.UUID | None = None) -> None:
        """Looks at the accounts now (one was just connected)."""
        self._wake.set()

    def request_sync(self, creator_id: uuid.UUID) -> bool:
        """Syncs the account now if this process drives it; False otherwise."""
        running = self._running.get(creator_id)
        if running is None:
            return False
        running.sync_now.set()
        return True

    def _start(self, creator_id: uuid.UUID) -> None:
        running = _Running()
        running.sync_now.set()  # the first sync at once, whether or not the socket opens
        running.tasks = [
            asyncio.create_task(
                self._listen(creator_id, running), name=f"onlyfans-listen-{creator_id}"
            ),
            asyncio.create_task(
                self._sync_loop(creator_id, running), name=f"onlyfans-sync-{creator_id}"
            ),
        ]
        self._running[creator_id] = running
        log.info("onlyfans.account_started", creator_id=str(creator_id))

    def stop_account(self, creator_id: uuid.UUID) -> None:
        """Stops the account's tasks (safe from inside one of them)."""
        running = self._running.pop(creator_id, None)
        if running is None:
            return
        current = asyncio.current_task()
        for task in running.tasks:
            if task is not current:
                task.cancel()
        log.info("onlyfans.account_stopped", creator_id=str(creator_id))

    async def _listen(self, creator_id: uuid.UUID, running: _Running) -> None:
        """Pushes fans' messages on; each time the socket opens, a sync catches up on what
        came while it was closed."""
        failures = 0
        driver = self.accounts.driver
        while True:
            try:
                # `drive` opens the session (or logs in again); the socket then runs beside it.
                await self.accounts.drive(creator_id, driver.profile)
                async for message in driver.listen(str(creator_id), on_open=running.sync_now.set):
                    failures = 0
                    async with self.accounts.sessions() as session, session.begin():
                        await self.syncer.record_message(session, creator_id, message)
            except AccountPaused:
                return
            except Exception as error:
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                if isinstance(error, RateLimited):
                    delay = max(delay, error.retry_after)
                failures += 1
                log.warning(
                    "onlyfans.listener_retry",
                    creator_id=str(creator_id),
                    error=str(error),
                    exc_info=not isinstance(error, PlatformError | NotConnected),
                )
                await asyncio.sleep(delay)

    async def _sync_loop(self, creator_id: uuid.UUID, running: _Running) -> None:
        failures = 0
        while True:
            interval = self.sync_interval * (1 + self.sync_jitter * (2 * random_share() - 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.sync_now.wait(), interval)
            running.sync_now.clear()
            try:
                await self.syncer.sync(creator_id)
                failures = 0
            except AccountPaused:
                return
            except Exception as error:
                # Platform failures, and our own (a database outage): try again later.
                failures += 1
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                log.warning(
                    "onlyfans.sync_retry",
                    creator_id=str(creator_id),
                    error=str(error),
                    exc_info=not isinstance(error, PlatformError),
                )
                await asyncio.sleep(delay)
                running.sync_now.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        driven = list(self._running)
        tasks = [task for running in self._running.values() for task in running.tasks]
        for creator_id in driven:
            self.stop_account(creator_id)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Another replica may take these accounts at once rather than after the lease expires.
        for creator_id in driven:
            with contextlib.suppress(Exception):
                await self.accounts.drop_lease(creator_id)
