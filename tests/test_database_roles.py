"""Every service's database role owns its schema and may not touch another's: PostgreSQL, not
convention, keeps the CRM out of `auth` (and auth out of `crm`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from huntaze_devstack.__main__ import main
from huntaze_devstack.roles import new_passwords, provision_roles, service_roles
from huntaze_devstack.suite import SUITE
from huntaze_kit.db import libpq_url
from huntaze_kit.migrations import current_revision, upgrade_async

ROLES = service_roles()
PACKAGES = {service.name: service.migrations for service in SUITE if service.migrations}


@pytest.fixture
async def role_urls(database_url: str) -> dict[str, str]:
    """Each service's URL as its own role, every schema migrated by its own role."""
    urls = await provision_roles(database_url, ROLES, passwords=new_passwords(ROLES))
    for role in ROLES:
        await upgrade_async(urls[role.service], package=PACKAGES[role.service], schema=role.schema)
    return urls


@pytest.fixture
async def connect() -> AsyncIterator[list[asyncpg.Connection]]:
    opened: list[asyncpg.Connection] = []
    yield opened
    for conn in opened:
        await conn.close()


async def _open(opened: list[asyncpg.Connection], url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(libpq_url(url))
    opened.append(conn)
    return conn


async def _tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1",
        schema,
    )
    return [row[0] for row in rows]


@pytest.mark.parametrize(("reader", "owner"), [("crm", "auth"), ("auth", "crm")])
async def test_a_service_cannot_read_or_change_another_services_tables(
    database_url: str,
    role_urls: dict[str, str],
    connect: list[asyncpg.Connection],
    reader: str,
    owner: str,
) -> None:
    admin = await _open(connect, database_url)
    foreign = await _tables(admin, owner)
    assert foreign, f"no tables in {owner}"
    intruder = await _open(connect, role_urls[reader])
    for table in foreign:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await intruder.fetch(f"SELECT * FROM {table} LIMIT 1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await intruder.execute(f"CREATE TABLE {owner}.intruder (id int)")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await intruder.execute(f"CREATE SCHEMA {reader}_extra")


async def test_each_role_owns_and_uses_its_own_schema(
    database_url: str, role_urls: dict[str, str], connect: list[asyncpg.Connection]
) -> None:
    admin = await _open(connect, database_url)
    for role in ROLES:
        owners = await admin.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = $1", role.schema
        )
        assert [row[0] for row in owners] == [role.name]
        own = await _open(connect, role_urls[role.service])
        for table in await _tables(admin, role.schema):
            await own.fetch(f"SELECT * FROM {table} LIMIT 1")
        assert current_revision(role_urls[role.service], schema=role.schema) is not None


async def test_roles_notify_and_listen_across_services(
    role_urls: dict[str, str], connect: list[asyncpg.Connection]
) -> None:
    """The outbox relays and the CRM's inbox wake on NOTIFY: that needs no privilege."""
    listener = await _open(connect, role_urls["crm"])
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("huntaze_roles_test", lambda *args: heard.put_nowait(args[-1]))
    sender = await _open(connect, role_urls["auth"])
    await sender.execute("SELECT pg_notify('huntaze_roles_test', 'hello')")
    assert await asyncio.wait_for(heard.get(), 5) == "hello"


async def test_roles_take_over_a_schema_migrated_before_they_existed(
    database_url: str, connect: list[asyncpg.Connection]
) -> None:
    """Data migrated by an administrator (before roles) passes to the service's role."""
    await upgrade_async(database_url, package=PACKAGES["crm"], schema="crm")
    urls = await provision_roles(database_url, ROLES, passwords=new_passwords(ROLES))
    crm = await _open(connect, urls["crm"])
    admin = await _open(connect, database_url)
    for table in await _tables(admin, "crm"):
        await crm.fetch(f"SELECT * FROM {table} LIMIT 1")
    await upgrade_async(urls["crm"], package=PACKAGES["crm"], schema="crm")
    foreign = await admin.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'crm' AND c.relowner <> 'huntaze_crm'::regrole"
    )
    assert foreign == 0


def test_the_operators_command_prints_each_services_own_url(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["roles", "--admin-url", database_url]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert set(printed) == {"auth", "crm", "onlyfans", "ai", "analytics", "campaigns"}
    for service, line in printed.items():
        key, url = line.split("=", 1)
        assert key == "HUNTAZE_DATABASE_URL"
        parsed = make_url(url)
        assert parsed.username == f"huntaze_{service}"
        assert parsed.password
        assert parsed.database == make_url(database_url).database
