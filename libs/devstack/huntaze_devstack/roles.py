"""One PostgreSQL role per service, owning that service's schema and nothing else.

The model: the service `auth` logs in as `huntaze_auth`, which owns the schema `auth` and
everything in it (its migrations run as that role too). No role has any privilege on another
service's schema, so "a service never reads another's tables" is enforced by PostgreSQL. Each role
may connect to the database and use temporary tables; PUBLIC loses its default CONNECT and
TEMPORARY on the database, and no role may create schemas (the schema exists before the first
migration). LISTEN/NOTIFY needs no privilege, so the outbox relay and the CRM's inbox keep working.
Extensions a service uses when the server has them (`Service.extensions`, pgvector for the AI
agent) are created here too, in the default schema, since only an administrator may.

`make run` provisions the roles on its embedded server. For any other server an operator runs
`python -m huntaze_devstack roles` once with an administrator's URL; it prints each service's own
database URL, for that service's Secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import make_url

from huntaze_devstack.suite import SUITE, Service
from huntaze_kit.db import libpq_url

ROLE_PREFIX = "huntaze_"

# Objects a migration run by someone else (before roles existed) left in the schema; they pass
# to the schema's role so it can keep migrating and using them. Sequences owned by a column
# follow their table.
_FOREIGN_RELATIONS = """
SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, $2::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relowner <> $2::text::regrole AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""
_FOREIGN_SEQUENCES = """
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', n.nspname, c.relname, $2::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relowner <> $2::text::regrole AND c.relkind = 'S'
  AND NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
  )
"""
_FOREIGN_FUNCTIONS = """
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, $2::text)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1 AND p.proowner <> $2::text::regrole
"""
_FOREIGN_TYPES = """
SELECT format('ALTER TYPE %I.%I OWNER TO %I', n.nspname, t.typname, $2::text)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = $1 AND t.typowner <> $2::text::regrole AND t.typrelid = 0 AND t.typcategory <> 'A'
"""


@dataclass(frozen=True)
class ServiceRole:
    """The database role of one service and the schema it owns."""

    service: str
    schema: str
    extensions: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return ROLE_PREFIX + self.service


def service_roles(suite: Iterable[Service] = SUITE) -> list[ServiceRole]:
    """A role for every service of the suite that owns a schema."""
    return [ServiceRole(s.name, s.schema, s.extensions) for s in suite if s.schema is not None]


def role_url(database_url: str, role: str, password: str | None = None) -> str:
    """`database_url` (same server and database) logging in as `role`."""
    url = make_url(database_url).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _provision(
    conn: asyncpg.Connection, database: str, role: ServiceRole, password: str | None
) -> None:
    name, schema = _identifier(role.name), _identifier(role.schema)
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role.name)
    verb = "ALTER" if exists else "CREATE"
    secret = f" PASSWORD {_literal(password)}" if password is not None else ""
    await conn.execute(
        f"{verb} ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS{secret}"
    )
    await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {_identifier(database)} TO {name}")
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {name}")
    await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {name}")
    await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
    for query in (_FOREIGN_RELATIONS, _FOREIGN_SEQUENCES, _FOREIGN_FUNCTIONS, _FOREIGN_TYPES):
        for statement in await conn.fetch(query, role.schema, role.name):
            await conn.execute(statement[0])
    for extension in role.extensions:
        # Only where the server has it: the service copes without (see its migrations).
        if await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = $1", extension):
            await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {_identifier(extension)}")


async def provision_roles(
    admin_url: str,
    roles: Iterable[ServiceRole],
    *,
    passwords: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Creates (or brings up to date) every role and its schema in the database of `admin_url`
    (a superuser's, or a role with CREATEROLE that owns the database); answers each service's
    database URL. A role without a password in `passwords` keeps the one it has."""
    passwords = passwords or {}
    database = make_url(admin_url).database
    if not database:
        raise ValueError("the administrator's URL names no database")
    urls: dict[str, str] = {}
    conn = await asyncpg.connect(libpq_url(admin_url))
    try:
        async with conn.transaction():
            # Serialises concurrent provisioning (two test sessions, two operators).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('huntaze-roles'))")
            await conn.execute(f"REVOKE ALL ON DATABASE {_identifier(database)} FROM PUBLIC")
            for role in roles:
                password = passwords.get(role.service)
                await _provision(conn, database, role, password)
                urls[role.service] = role_url(admin_url, role.name, password)
    finally:
        await conn.close()
    return urls


def new_passwords(roles: Iterable[ServiceRole]) -> dict[str, str]:
    """A fresh random password per service."""
    return {role.service: secrets.token_urlsafe(32) for role in roles}
