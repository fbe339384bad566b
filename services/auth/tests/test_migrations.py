"""The migrations build exactly the schema the models describe, and unwind cleanly."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from huntaze_auth.models import SCHEMA, metadata
from huntaze_auth.server import MIGRATIONS_PACKAGE
from huntaze_kit.db import async_url
from huntaze_kit.migrations import current_revision, downgrade, upgrade_async

# Made by huntaze_kit.outbox (and Alembic itself), not by the auth models.
NOT_MODELLED = {
    "outbox",
    "processed_events",
    "consumer_failures",
    "effect_ledger",
    "alembic_version",
}


def _table_of(diff: Any) -> str | None:
    step = diff[0] if isinstance(diff, list) else diff
    for item in step[1:]:
        name = getattr(item, "name", None) if not isinstance(item, str) else None
        table = getattr(item, "table", None)
        if table is not None:
            return str(table.name)
        if name is not None:
            return str(name)
    return None


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, kind, _: kind != "schema" or name == SCHEMA,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return [d for d in compare_metadata(context, metadata) if _table_of(d) not in NOT_MODELLED]


async def test_models_match_migrations_and_downgrade_works(database_url: str) -> None:
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    assert current_revision(database_url, schema=SCHEMA) == "0002"
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []

        downgrade(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA, revision="base")
        async with engine.connect() as connection:
            left = await connection.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": SCHEMA},
            )
            assert set(left.scalars()) <= {"alembic_version"}
        await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
        assert current_revision(database_url, schema=SCHEMA) == "0002"
    finally:
        await engine.dispose()
