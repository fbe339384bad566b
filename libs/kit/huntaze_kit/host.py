"""The service host: one way to start, run and stop every service process.

A service is a `Service` subclass whose `build(host)` declares its parts in the order they
start; each `host.*` call starts one part at once and remembers how to stop it:

    class CrmServer(Service):
        def __init__(self, settings: CrmSettings) -> None:
            super().__init__(
                "crm",
                grace_seconds=settings.grace_seconds,
                metrics_host=settings.crm_grpc_host,
                metrics_port=settings.crm_metrics_port,
            )
            self.settings = settings

        async def build(self, host: Host) -> None:
            db = await host.database(self.settings, application_name="huntaze-crm")
            nats = await host.nats(
                self.settings.nats_url, name="huntaze-crm", streams=[CRM], reads_from=[ONLYFANS]
            )
            ...
            host.outbox_relay(OutboxRelay(database_url=..., schema=SCHEMA, nats_url=nats))
            await host.consumer(consumer)
            self.port = await host.grpc(server)  # last: no call is taken before all is ready


    def main(argv: list[str] | None = None) -> None:
        service_main(
            name="crm", description=__doc__, settings=CrmSettings, service=CrmServer,
            migrations="huntaze_crm.migrations", schema="crm", argv=argv,
        )

`start()` runs `build` (after the metrics endpoint, the first part); when a part fails to
start, every part started before it is stopped, in reverse, and the error is raised. `stop()`
stops the parts in reverse order, so the gRPC server (declared last) turns NOT_SERVING and
drains first and the database closes last. The whole stop shares one grace period
(`HUNTAZE_GRACE_SECONDS`): each part gets what is left of it, a part that fails to stop is
logged and the rest still stop.

Streams: a service passes the stream of its own context as `streams` (created or updated) and
the streams of other contexts it consumes as `reads_from` (created only when missing); see
`huntaze_kit.streams`.

`service_main(...)` gives each service the same command line: `python -m huntaze_<svc>.server`
or `serve` runs until SIGTERM or SIGINT (exit 0 once stopped), `migrate` applies the service's
own migrations to its own schema and exits (it writes nothing but the database), plus any
commands of the service's own.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import inspect
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
import grpc
import uvloop
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from huntaze_kit.config import CommonSettings
from huntaze_kit.consumers import EventConsumer
from huntaze_kit.db import create_engine, create_read_pool, session_factory
from huntaze_kit.grpc_client import create_channel
from huntaze_kit.grpc_server import GrpcServer
from huntaze_kit.identity import TokenVerifier
from huntaze_kit.logging import configure_logging, get_logger
from huntaze_kit.metrics import MetricsServer
from huntaze_kit.migrations import upgrade
from huntaze_kit.outbox import OutboxRelay
from huntaze_kit.process import settle_heap
from huntaze_kit.revocations import SESSION_REVOKED_SUBJECT, RevocationFollower
from huntaze_kit.streams import (
    DLQ,
    StreamSpec,
    close_nats,
    connect_nats,
    context_stream,
    ensure_stream_exists,
    ensure_streams,
)

log = get_logger(__name__)

T = TypeVar("T")


class Startable(Protocol):
    """A part with a start and a stop of its own."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


P = TypeVar("P", bound=Startable)
S = TypeVar("S", bound=CommonSettings)

# What a part is given to stop: the seconds left of the grace period.
StopPart = Callable[[float], Awaitable[None]]
# The least time a part gets to stop, even when the grace period is spent.
MIN_STOP_SECONDS = 0.1


@dataclass(frozen=True)
class _Part:
    name: str
    stop: StopPart


@dataclass(frozen=True)
class Database:
    """The database parts of a service: the SQLAlchemy engine (writes, in transactions of the
    service layer) and the asyncpg pool of read models."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    reads: asyncpg.Pool


class Host:
    """Starts parts in order and stops them in reverse, within one grace period."""

    def __init__(self, service: str, *, grace_seconds: float) -> None:
        self.service = service
        self.grace_seconds = grace_seconds
        self._parts: list[_Part] = []
        self._log = log.bind(service=service)

    @property
    def parts(self) -> list[str]:
        """The names of the running parts, in the order they started."""
        return [part.name for part in self._parts]

    # -- any part ---------------------------------------------------------------------------

    def on_stop(self, name: str, stop: Callable[[], Awaitable[None] | None]) -> None:
        """Declares a part that is already running (made without awaiting) by its stop."""

        async def stopping(_: float) -> None:
            result = stop()
            if inspect.isawaitable(result):
                await result

        self._parts.append(_Part(name, stopping))
        self._log.debug("part_started", part=name)

    async def add(self, name: str, part: P) -> P:
        """Starts a part that has `start()` and `stop()` of its own."""
        await part.start()
        self.on_stop(name, part.stop)
        return part

    async def part(
        self, name: str, start: Callable[[], Awaitable[T]], stop: Callable[[T], Awaitable[None]]
    ) -> T:
        """Starts a part (`start()` answers it) and declares `stop(it)` for the host's stop."""
        started = await start()
        self.on_stop(name, lambda: stop(started))
        return started

    def task(
        self,
        name: str,
        run: Coroutine[Any, Any, None],
        *,
        stop: Callable[[float], Awaitable[None]] | None = None,
    ) -> asyncio.Task[None]:
        """Runs `run` in the background until stop: `stop(grace)` asks it to finish, then it
        gets what is left of the grace period before it is cancelled (at once without `stop`)."""
        task = asyncio.create_task(run, name=f"{self.service}-{name}")

        async def stopping(grace: float) -> None:
            deadline = time.monotonic() + grace
            if stop is not None:
                await stop(grace)
            if stop is not None and not task.done():
                await asyncio.wait(
                    {task}, timeout=max(MIN_STOP_SECONDS, deadline - time.monotonic())
                )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._parts.append(_Part(name, stopping))
        self._log.debug("part_started", part=name)
        return task

    # -- the parts services share -----------------------------------------------------------

    async def database(self, settings: CommonSettings, *, application_name: str) -> Database:
        """The engine and the read pool on `settings.database_url`, sized by the settings."""
        engine = create_engine(
            settings.database_url,
            application_name=application_name,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        self.on_stop("database-engine", engine.dispose)
        reads = await self.part(
            "database-reads",
            lambda: create_read_pool(
                settings.database_url,
                application_name=f"{application_name}-reads",
                max_size=settings.db_pool_size,
            ),
            lambda pool: pool.close(),
        )
        return Database(engine=engine, sessions=session_factory(engine), reads=reads)

    async def nats(
        self,
        url: str,
        *,
        name: str,
        streams: Sequence[StreamSpec] = (),
        reads_from: Iterable[StreamSpec] = (),
    ) -> NatsClient:
        """A NATS connection; creates or updates the `streams` the service owns (its context's;
        the DLQ stream always) and makes sure the streams it `reads_from` exist."""
        client = await self.part("nats", lambda: connect_nats(url, name=name), close_nats)
        js = client.jetstream()
        await ensure_streams(js, [*streams, DLQ])
        for spec in reads_from:
            await ensure_stream_exists(js, spec)
        return client

    def channel(self, name: str, target: str) -> grpc.aio.Channel:
        """A gRPC channel to another service, kept for the life of the process."""
        channel = create_channel(target)
        self.on_stop(f"channel-{name}", lambda: channel.close(grace=1.0))
        return channel

    async def follow_revocations(
        self, nats: NatsClient, verifier: TokenVerifier
    ) -> RevocationFollower:
        """Feeds `verifier` the sessions that are revoked. The stream of those events is made
        when missing, so a service need not wait for the one that owns it to start first."""
        context = SESSION_REVOKED_SUBJECT.split(".", 1)[0]
        await ensure_stream_exists(nats.jetstream(), context_stream(context))
        return await self.add("revocations", RevocationFollower(nats, verifier.revocations))

    def outbox_relay(self, relay: OutboxRelay) -> None:
        self.task("outbox-relay", relay.run(), stop=relay.stop)

    async def consumer(self, consumer: EventConsumer) -> None:
        """Starts a consumer (configuration errors surface here, not in its task) and runs it."""
        await consumer.start()
        self.task(consumer.durable, consumer.run(), stop=consumer.stop)

    def every(self, name: str, seconds: float, action: Callable[[], Awaitable[Any]]) -> None:
        """Runs `action` every `seconds` until stop (a run in progress may finish); a failure
        is logged, and the next run comes."""
        stopping = asyncio.Event()

        async def stop(_: float) -> None:
            stopping.set()

        self.task(name, _every(seconds, action, name, stopping), stop=stop)

    async def grpc(self, server: GrpcServer) -> int:
        """Starts the gRPC server (declare it last); answers the port it bound."""
        port = await server.start()
        self._parts.append(_Part("grpc", server.stop))
        self._log.debug("part_started", part="grpc")
        return port

    # -- stop -------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stops every running part, last started first. Safe to call more than once."""
        deadline = time.monotonic() + self.grace_seconds
        while self._parts:
            part = self._parts.pop()
            started = time.monotonic()
            try:
                await part.stop(max(MIN_STOP_SECONDS, deadline - started))
            except Exception:
                self._log.exception("part_stop_failed", part=part.name)
            else:
                took = round((time.monotonic() - started) * 1000, 1)
                self._log.debug("part_stopped", part=part.name, ms=took)


async def _every(
    seconds: float, action: Callable[[], Awaitable[Any]], name: str, stopping: asyncio.Event
) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
        if stopping.is_set():
            return
        try:
            await action()
        except Exception:
            log.exception("periodic_task_failed", task=name)


class Service(abc.ABC):
    """A service process: its parts declared in `build`, run by a `Host`.

    `metrics_port` serves the process's metrics at `/metrics` (0: a free port, read back from
    `metrics_port` after start).
    """

    def __init__(
        self, name: str, *, grace_seconds: float, metrics_host: str, metrics_port: int
    ) -> None:
        self.name = name
        self.host = Host(name, grace_seconds=grace_seconds)
        self.metrics_port = metrics_port
        self._metrics = MetricsServer(host=metrics_host, port=metrics_port)

    @abc.abstractmethod
    async def build(self, host: Host) -> None:
        """Starts the service's parts, in order, through `host`."""

    async def start(self) -> None:
        """Starts every part; when one fails, stops those that started and raises."""
        try:
            self.metrics_port = await self.host.part(
                "metrics", self._start_metrics, self._stop_metrics
            )
            await self.build(self.host)
        except BaseException:
            await self.host.stop()
            raise
        log.info(f"{self.name}_started", parts=self.host.parts)

    async def stop(self) -> None:
        await self.host.stop()
        log.info(f"{self.name}_stopped")

    async def _start_metrics(self) -> int:
        return self._metrics.start()

    async def _stop_metrics(self, _: int) -> None:
        # A blocking join of the metrics thread, kept off the event loop.
        await asyncio.to_thread(self._metrics.stop)


async def run_until_signalled(
    service: Service, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Starts `service`, serves until SIGTERM or SIGINT, then stops it: the life of every
    service process. A signal during the start cancels it (whatever started is stopped).

    Once started, the heap is settled for serving (`huntaze_kit.process.settle_heap`)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    starting = asyncio.create_task(service.start(), name=f"{service.name}-start")

    def on_signal() -> None:
        stopping.set()
        starting.cancel()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        await starting
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise
        log.info(f"{service.name}_start_interrupted")
        return
    settle_heap()
    try:
        await stopping.wait()
    finally:
        await service.stop()


def service_main(
    *,
    name: str,
    description: str | None,
    settings: Callable[[], S],
    service: Callable[[S], Service],
    migrations: str,
    schema: str,
    commands: Mapping[str, Callable[[S], Coroutine[Any, Any, None]]] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """The command line of every service: `serve` (the default), `migrate` and `commands`.

    `migrations` is the service's Alembic package and `schema` its PostgreSQL schema;
    `commands` run once with the settings, then exit.
    """
    extra = dict(commands or {})
    parser = argparse.ArgumentParser(
        prog=f"huntaze_{name}.server",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    choices = ["serve", "migrate", *extra]
    parser.add_argument("command", nargs="?", default="serve", choices=choices)
    args = parser.parse_args(argv)
    loaded = settings()
    configure_logging(service=name, level=loaded.log_level, fmt=loaded.log_format)
    if args.command == "migrate":
        upgrade(loaded.database_url, package=migrations, schema=schema)
        log.info("migrated", schema=schema)
    elif args.command == "serve":
        uvloop.run(run_until_signalled(service(loaded)))
    else:
        uvloop.run(extra[args.command](loaded))
