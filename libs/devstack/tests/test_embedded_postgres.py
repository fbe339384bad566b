from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import asyncpg

from huntaze_devstack.embedded import EmbeddedPostgres, drop_database, ensure_database, free_port


async def test_starts_on_tcp_and_keeps_data_across_restarts() -> None:
    # PostgreSQL may run as another user: a fresh directory outside pytest's private tree.
    scratch = Path(tempfile.mkdtemp(prefix="huntaze-pgtest-"))
    server = EmbeddedPostgres(
        scratch / "data", free_port(), durable=False, settings={"work_mem": "8MB"}
    )
    try:
        url = server.start()
        assert url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        conn = await asyncpg.connect(url)
        try:
            assert (
                await conn.fetchval("SELECT current_setting('server_version_num')::int") >= 160000
            )
            assert await conn.fetchval("SHOW work_mem") == "8MB"
            assert await conn.fetchval("SHOW fsync") == "off"
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
            await conn.execute("INSERT INTO kept VALUES (1, 'survives a restart')")
        finally:
            await conn.close()
        assert not list((scratch / "data").glob(".s.PGSQL.*")), "no unix socket expected"

        server.stop()
        again = EmbeddedPostgres(scratch / "data", server.port, durable=False)
        with again:
            conn = await asyncpg.connect(again.url)
            try:
                assert await conn.fetchval("SELECT note FROM kept WHERE id = 1") == (
                    "survives a restart"
                )
            finally:
                await conn.close()
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


async def test_ensure_database_is_idempotent(pg_server_url: str) -> None:
    name = "devstack_ensure_db"
    await drop_database(pg_server_url, name)
    try:
        first = await ensure_database(pg_server_url, name)
        second = await ensure_database(pg_server_url, name)
        assert first == second
        assert first.endswith(f"/{name}")
        conn = await asyncpg.connect(first)
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
    finally:
        await drop_database(pg_server_url, name)


async def test_database_url_fixture_gives_an_isolated_database(
    database_url: str, pg_server_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        assert name.startswith("test_")
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
    finally:
        await conn.close()
