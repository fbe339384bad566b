"""Alembic migrations run from code: no `alembic.ini`, one schema per service.

A service keeps its migrations in a package (say `huntaze_auth.migrations`) holding `env.py`,
`script.py.mako` and `versions/`. Its `env.py` is two lines:

    from huntaze_auth.models import metadata
    from huntaze_kit.migrations import run_env

    run_env(metadata, "auth")

and `upgrade(database_url, package="huntaze_auth.migrations", schema="auth")` brings a database
up to date: it creates the schema when missing, keeps Alembic's version table inside that schema
and holds an advisory lock meanwhile, so replicas starting together migrate once.
Migrations name their schema explicitly (`schema="auth"`, `auth.users` in raw SQL).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.schema import MetaData

from huntaze_kit.db import async_url

_LOCK_NAMESPACE = "huntaze-migrations:"


def package_directory(package: str) -> Path:
    """The directory of an importable package (regular or namespace)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not an importable package")
    return Path(next(iter(spec.submodule_search_locations)))


def make_config(database_url: str, package: str, schema: str) -> Config:
    """An Alembic config for the migrations package `package` working in `schema`."""
    config = Config()
    config.set_main_option("script_location", str(package_directory(package)))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "sqlalchemy.url",
        async_url(database_url).render_as_string(hide_password=False).replace("%", "%%"),
    )
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    return config


def _quote(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def _lock_key(schema: str) -> int:
    """A stable signed 32-bit key for `pg_advisory_xact_lock`, one per schema."""
    return zlib.crc32((_LOCK_NAMESPACE + schema).encode()) - 2**31


async def _ensure_schema(conn: AsyncConnection, schema: str) -> None:
    """Creates `schema` when missing. A service's own role, which owns its schema but may not
    create schemas, gets past this: `CREATE SCHEMA IF NOT EXISTS` checks that right first."""
    found = await conn.scalar(text("SELECT to_regnamespace(:schema)"), {"schema": _quote(schema)})
    if found is None:
        await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema)}"))


async def _run_async(
    database_url: str, schema: str, action: Callable[[Connection], None], *, prepare: bool
) -> None:
    engine = create_async_engine(async_url(database_url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            if prepare:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(schema)}
                )
                await _ensure_schema(conn, schema)
            await conn.run_sync(action)
    finally:
        await engine.dispose()


def _run_blocking(
    database_url: str, schema: str, action: Callable[[Connection], None], *, prepare: bool = True
) -> None:
    """Runs `action` on a connection in one transaction (with the schema's lock and the schema
    itself when `prepare`); safe to call with or without a running event loop."""
    work = functools.partial(_run_async, database_url, schema, action, prepare=prepare)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(work())
        return
    # Called from a coroutine: Alembic is synchronous, so run on a private loop in a thread.
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            asyncio.run(work())
        except BaseException as err:
            failure.append(err)

    thread = threading.Thread(target=worker, name=f"migrate-{schema}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _with_connection(config: Config, step: Callable[[Config], Any]) -> Callable[[Connection], None]:
    def action(connection: Connection) -> None:
        config.attributes["connection"] = connection
        try:
            step(config)
        finally:
            config.attributes.pop("connection", None)

    return action


def upgrade(database_url: str, *, package: str, schema: str, revision: str = "head") -> None:
    """Applies the migrations of `package` to `schema` up to `revision`."""
    config = make_config(database_url, package, schema)
    _run_blocking(
        database_url,
        schema,
        _with_connection(config, lambda cfg: command.upgrade(cfg, revision)),
    )


async def upgrade_async(
    database_url: str, *, package: str, schema: str, revision: str = "head"
) -> None:
    """`upgrade` for coroutines: runs in a worker thread, the event loop stays free."""
    await asyncio.to_thread(
        upgrade, database_url, package=package, schema=schema, revision=revision
    )


def downgrade(database_url: str, *, package: str, schema: str, revision: str) -> None:
    """Reverts the migrations of `package` in `schema` down to `revision` (`base`: all)."""
    config = make_config(database_url, package, schema)
    _run_blocking(
        database_url,
        schema,
        _with_connection(config, lambda cfg: command.downgrade(cfg, revision)),
    )


def current_revision(database_url: str, *, schema: str) -> str | None:
    """The revision `schema` is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    found: list[str | None] = []

    def action(connection: Connection) -> None:
        context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
        found.append(context.get_current_revision())

    _run_blocking(database_url, schema, action, prepare=False)
    return found[0]


def _include_name(schema: str) -> Callable[[str | None, str, dict[str, str | None]], bool]:
    def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    return include_name


def _configure_options(target_metadata: MetaData | None, schema: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "version_table_schema": schema,
        "include_schemas": True,
        "include_name": _include_name(schema),
        "compare_type": True,
    }


def _database_url(config: Config) -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set attributes['database_url'] or sqlalchemy.url")
    return str(url)


def run_env(target_metadata: MetaData | None, schema: str) -> None:
    """The body of every service's migration `env.py`.

    Uses the connection `upgrade` hands over when there is one; otherwise (the `alembic` command
    line) opens its own asyncpg connection; offline mode (`--sql`) prints the SQL.
    """
    from alembic import context  # noqa: PLC0415

    config = context.config
    options = _configure_options(target_metadata, schema)

    if context.is_offline_mode():
        context.configure(
            url=async_url(_database_url(config)),
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **options,
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run_migrations(connection: Connection) -> None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()

    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return

    database_url = _database_url(config)

    async def run_online() -> None:
        engine = create_async_engine(async_url(database_url), poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                await _ensure_schema(conn, schema)
                await conn.run_sync(do_run_migrations)
        finally:
            await engine.dispose()

    asyncio.run(run_online())
