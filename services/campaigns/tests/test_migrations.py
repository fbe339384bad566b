"""The `campaigns` migrations build exactly the schema the models describe, and unwind cleanly."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from huntaze_campaigns.models import SCHEMA, metadata
from huntaze_campaigns.server import MIGRATIONS_PACKAGE
from huntaze_kit.db import async_url
from huntaze_kit.migrations import current_revision, downgrade, upgrade_async
from huntaze_kit.outbox import schema_tables


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
    # The messaging tables are the kit's (huntaze_kit.outbox), not the models'.
    kit_tables = {table.name for table in schema_tables(SCHEMA).all()} | {"alembic_version"}
    return [
        diff for diff in compare_metadata(context, metadata) if _table_of(diff) not in kit_tables
    ]


def _table_of(diff: Any) -> str | None:
    step = diff[0] if isinstance(diff, list) else diff
    for item in step[1:]:
        table = getattr(item, "table", None)
        if table is not None:
            return str(table.name)
        name = getattr(item, "name", None)
        if isinstance(name, str):
            return name
    return None


async def test_models_match_migrations_and_downgrade_works(database_url: str) -> None:
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    assert current_revision(database_url, schema=SCHEMA) is not None
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
        downgrade(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA, revision="base")
        async with engine.connect() as connection:
            left = await connection.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = :schema AND table_name <> 'alembic_version'"
                ),
                {"schema": SCHEMA},
            )
            assert left.all() == []
    finally:
        await engine.dispose()
