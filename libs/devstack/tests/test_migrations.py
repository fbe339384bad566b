from __future__ import annotations

import asyncpg

from huntaze_kit.migrations import current_revision, downgrade, upgrade, upgrade_async


async def _columns(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'demo' AND table_name = 'items' ORDER BY ordinal_position"
        )
        return [row["column_name"] for row in rows]
    finally:
        await conn.close()


async def test_upgrade_creates_the_schema_and_keeps_versions_in_it(
    database_url: str, migrations_package: str
) -> None:
    # Called from a coroutine on purpose: upgrade() must cope with a running event loop.
    upgrade(database_url, package=migrations_package, schema="demo")
    assert await _columns(database_url) == ["id", "name", "note"]
    assert current_revision(database_url, schema="demo") == "0002"

    conn = await asyncpg.connect(database_url)
    try:
        version_tables = await conn.fetch(
            "SELECT table_schema FROM information_schema.tables"
            " WHERE table_name = 'alembic_version'"
        )
        assert [row["table_schema"] for row in version_tables] == ["demo"]
    finally:
        await conn.close()

    # A second run is a no-op.
    await upgrade_async(database_url, package=migrations_package, schema="demo")
    assert current_revision(database_url, schema="demo") == "0002"


async def test_downgrade_and_partial_upgrade(database_url: str, migrations_package: str) -> None:
    assert current_revision(database_url, schema="demo") is None
    await upgrade_async(database_url, package=migrations_package, schema="demo", revision="0001")
    assert await _columns(database_url) == ["id", "name"]
    upgrade(database_url, package=migrations_package, schema="demo")
    downgrade(database_url, package=migrations_package, schema="demo", revision="base")
    assert await _columns(database_url) == []
    assert current_revision(database_url, schema="demo") is None
