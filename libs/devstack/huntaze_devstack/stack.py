"""The local stack behind `make run` and `make migrate`.

Whatever the environment does not provide is started here: PostgreSQL when `HUNTAZE_DATABASE_URL`
is unset, NATS when `HUNTAZE_NATS_URL` is unset, the mail catcher when `HUNTAZE_SMTP_URL` is unset.
On the embedded PostgreSQL every service gets its own role (see `roles.py`), and its process the
database URL of that role.
Everything lives under `HUNTAZE_HOME` (default `./.huntaze`), so a second start finds the same data,
and local secrets are generated there once.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.fernet import Fernet

from huntaze_devstack.embedded import LOOPBACK, EmbeddedNats, EmbeddedPostgres, ensure_database
from huntaze_devstack.onlyfans_demo import SIMULATOR_PORT, simulator_url
from huntaze_devstack.roles import provision_roles, service_roles
from huntaze_devstack.suite import SUITE, Service
from huntaze_kit.migrations import upgrade

DEFAULT_HOME = ".huntaze"
DEFAULT_PG_PORT = 54329
DEFAULT_NATS_PORT = 42229
DEFAULT_SMTP_PORT = 2525
DEFAULT_GATEWAY_PORT = 8080
DATABASE_NAME = "huntaze"
SECRETS_FILE = "secrets.env"
SEALING_KEY = "HUNTAZE_AUTH_SEALING_KEY"
SERVICE_ACCOUNTS = "HUNTAZE_AUTH_SERVICE_ACCOUNTS"


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a port number, not {raw!r}") from None


def huntaze_home(environ: Mapping[str, str] = os.environ) -> Path:
    """`HUNTAZE_HOME` as an absolute path (default `./.huntaze`)."""
    return Path(environ.get("HUNTAZE_HOME") or DEFAULT_HOME).expanduser().absolute()


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines; blank lines and `#` comments are skipped, values are taken verbatim."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def local_secrets(home: Path, suite: tuple[Service, ...] = SUITE) -> dict[str, str]:
    """The secrets the services need locally, generated once into `home/secrets.env`.

    `HUNTAZE_AUTH_SEALING_KEY` is a Fernet key; `HUNTAZE_AUTH_SERVICE_ACCOUNTS` is a JSON object
    mapping each service of the suite to a random secret (a service added later gets its own
    secret on the next start, the others keep theirs).
    """
    path = home / SECRETS_FILE
    stored = read_env_file(path)
    values = dict(stored)
    if not values.get(SEALING_KEY):
        values[SEALING_KEY] = Fernet.generate_key().decode()
    try:
        accounts = json.loads(values.get(SERVICE_ACCOUNTS) or "{}")
    except json.JSONDecodeError:
        accounts = {}
    if not isinstance(accounts, dict):
        accounts = {}
    for service in suite:
        accounts.setdefault(service.name, secrets.token_urlsafe(32))
    values[SERVICE_ACCOUNTS] = json.dumps(accounts, sort_keys=True, separators=(",", ":"))
    if values != stored:
        home.mkdir(parents=True, exist_ok=True)
        lines = ["# Local secrets for the services, generated once. Keep this file private."]
        lines += [f"{key}={value}" for key, value in sorted(values.items())]
        temporary = path.with_suffix(".tmp")
        temporary.write_text("\n".join(lines) + "\n")
        temporary.chmod(0o600)
        temporary.replace(path)
    return values


@dataclass
class LocalStack:
    """Starts the infrastructure the environment lacks; `env` is what the processes get."""

    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    with_nats: bool = True
    with_mail: bool = True
    suite: tuple[Service, ...] = SUITE
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    env: dict[str, str] = field(default_factory=dict)
    mail_command: str | None = None
    # Each service's own database URL (its own role), when the stack provisioned the roles.
    database_urls: dict[str, str] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)
    # Whether `make run` runs the OnlyFans simulator (when no platform address is configured).
    simulator_started: bool = False
    maildir: Path | None = None

    @property
    def home(self) -> Path:
        return huntaze_home(self.environ)

    @property
    def database_url(self) -> str:
        return self.env["HUNTAZE_DATABASE_URL"]

    def start(self) -> dict[str, str]:
        env = dict(self.environ)
        home = self.home
        home.mkdir(parents=True, exist_ok=True)
        env["HUNTAZE_HOME"] = str(home)

        if env.get("HUNTAZE_DATABASE_URL"):
            self.notes.append(("PostgreSQL", env["HUNTAZE_DATABASE_URL"]))
        else:
            port = _port(env, "HUNTAZE_EMBEDDED_PG_PORT", DEFAULT_PG_PORT)
            self.postgres = EmbeddedPostgres(home / "postgres", port)
            server_url = self.postgres.start()
            env["HUNTAZE_DATABASE_URL"] = asyncio.run(ensure_database(server_url, DATABASE_NAME))
            # The embedded server trusts loopback logins, so the roles need no password.
            self.database_urls = asyncio.run(
                provision_roles(env["HUNTAZE_DATABASE_URL"], service_roles(self.suite))
            )
            self.notes.append(
                ("PostgreSQL", f"{env['HUNTAZE_DATABASE_URL']}  (embedded, in {home / 'postgres'})")
            )

        if self.with_nats:
            if env.get("HUNTAZE_NATS_URL"):
                self.notes.append(("NATS", env["HUNTAZE_NATS_URL"]))
            else:
                port = _port(env, "HUNTAZE_EMBEDDED_NATS_PORT", DEFAULT_NATS_PORT)
                self.nats = EmbeddedNats(home / "nats", port)
                env["HUNTAZE_NATS_URL"] = self.nats.start()
                self.notes.append(
                    ("NATS", f"{env['HUNTAZE_NATS_URL']}  (embedded, in {home / 'nats'})")
                )

        if self.with_mail:
            if env.get("HUNTAZE_SMTP_URL"):
                self.notes.append(("mail", env["HUNTAZE_SMTP_URL"]))
            else:
                port = _port(env, "HUNTAZE_MAILCATCHER_PORT", DEFAULT_SMTP_PORT)
                maildir = home / "mail"
                self.maildir = maildir
                env["HUNTAZE_SMTP_URL"] = f"smtp://{LOOPBACK}:{port}"
                self.mail_command = shlex.join(
                    [
                        "exec",
                        sys.executable,
                        "-m",
                        "huntaze_devstack.mailcatcher",
                        "--host",
                        LOOPBACK,
                        "--port",
                        str(port),
                        "--dir",
                        str(maildir),
                    ]
                )
                self.notes.append(
                    ("mail", f"{env['HUNTAZE_SMTP_URL']}  (caught, one file each in {maildir}/new)")
                )

        for service in self.suite:
            if service.grpc_port_env and service.grpc_port_default and service.grpc_target_env:
                port = _port(env, service.grpc_port_env, service.grpc_port_default)
                env.setdefault(service.grpc_target_env, f"{LOOPBACK}:{port}")

        if not env.get("HUNTAZE_ONLYFANS_BASE_URL"):
            platform = simulator_url(_port(env, "HUNTAZE_SIMULATOR_PORT", SIMULATOR_PORT))
            env["HUNTAZE_ONLYFANS_BASE_URL"] = platform
            env.setdefault("HUNTAZE_ONLYFANS_RULES_URL", f"{platform}/rules.json")
            self.simulator_started = True
            self.notes.append(
                ("OnlyFans", f"{platform}  (the simulator, demo mode; state in {home})")
            )

        for key, value in local_secrets(home, self.suite).items():
            env.setdefault(key, value)
        env.setdefault("HUNTAZE_LOG_FORMAT", "console")
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env
        return env

    def service_env(self, service: Service) -> dict[str, str]:
        """What `service`'s process gets: `env`, with the database URL of its own role (and
        none for a service that owns no schema, when the stack provisioned the roles)."""
        env = dict(self.env)
        if not self.database_urls:
            return env
        own = self.database_urls.get(service.name)
        if own is None:
            env.pop("HUNTAZE_DATABASE_URL", None)
        else:
            env["HUNTAZE_DATABASE_URL"] = own
        return env

    def migrate(self) -> list[str]:
        """Applies every service's migrations, each as the service's own role when there is
        one; returns the schemas brought up to date."""
        done = []
        for service in self.suite:
            if not (service.migrations and service.schema):
                continue
            url = self.database_urls.get(service.name, self.database_url)
            upgrade(url, package=service.migrations, schema=service.schema)
            done.append(service.schema)
        return done

    def stop(self) -> None:
        """Stops what `start` started, NATS first; the data stays for the next start."""
        nats, self.nats = self.nats, None
        postgres, self.postgres = self.postgres, None
        try:
            if nats is not None:
                nats.stop()
        finally:
            if postgres is not None:
                postgres.stop()

    @property
    def simulator_port(self) -> int:
        return _port(self.env, "HUNTAZE_SIMULATOR_PORT", SIMULATOR_PORT)

    @property
    def gateway_url(self) -> str:
        return f"http://{LOOPBACK}:{_port(self.env, 'HUNTAZE_GATEWAY_PORT', DEFAULT_GATEWAY_PORT)}"

    def summary(self) -> list[tuple[str, str]]:
        """What runs where, for people: the gateway, the docs, gRPC ports, each process's
        Prometheus metrics and infrastructure."""
        gateway_port = _port(self.env, "HUNTAZE_GATEWAY_PORT", DEFAULT_GATEWAY_PORT)
        gateway = f"http://{LOOPBACK}:{gateway_port}"
        lines = [("gateway", gateway), ("API docs", f"{gateway}/docs")]
        if self.env.get("HUNTAZE_GATEWAY_CONSOLE_DIR"):
            lines.insert(0, ("web console", f"{gateway}/"))
        for service in self.suite:
            if service.grpc_port_env and service.grpc_port_default:
                port = _port(self.env, service.grpc_port_env, service.grpc_port_default)
                lines.append((f"gRPC {service.name}", f"{LOOPBACK}:{port}"))
        for service in self.suite:
            if service.metrics_port_env and service.metrics_port_default:
                port = _port(self.env, service.metrics_port_env, service.metrics_port_default)
                lines.append((f"metrics {service.name}", f"http://{LOOPBACK}:{port}/metrics"))
        return lines + self.notes

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
