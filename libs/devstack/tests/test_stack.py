from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from huntaze_devstack.embedded import free_port
from huntaze_devstack.stack import LocalStack, local_secrets, read_env_file
from huntaze_devstack.suite import SUITE, Service
from huntaze_kit.db import libpq_url


def test_suite_lists_each_service_once() -> None:
    names = [service.name for service in SUITE]
    assert len(names) == len(set(names))
    assert {"auth", "gateway"} <= set(names)
    assert "auth" in [s.schema for s in SUITE if s.migrations]
    assert all(s.schema for s in SUITE if s.migrations), "a service with migrations owns a schema"
    assert SUITE[0].command(python="/usr/bin/python3") == (
        "exec /usr/bin/python3 -m huntaze_auth.server"
    )


def test_local_secrets_are_generated_once_and_extended(tmp_path: Path) -> None:
    first = local_secrets(tmp_path, (Service("auth", "a"), Service("gateway", "g")))
    Fernet(first["HUNTAZE_AUTH_SEALING_KEY"].encode())
    accounts = json.loads(first["HUNTAZE_AUTH_SERVICE_ACCOUNTS"])
    assert set(accounts) == {"auth", "gateway"}
    assert accounts["auth"] != accounts["gateway"]
    assert (tmp_path / "secrets.env").stat().st_mode & 0o777 == 0o600

    second = local_secrets(tmp_path, (Service("auth", "a"), Service("gateway", "g")))
    assert second == first
    assert read_env_file(tmp_path / "secrets.env") == first

    grown = local_secrets(
        tmp_path, (Service("auth", "a"), Service("gateway", "g"), Service("crm", "c"))
    )
    grown_accounts = json.loads(grown["HUNTAZE_AUTH_SERVICE_ACCOUNTS"])
    assert grown_accounts["auth"] == accounts["auth"]
    assert "crm" in grown_accounts
    assert grown["HUNTAZE_AUTH_SEALING_KEY"] == first["HUNTAZE_AUTH_SEALING_KEY"]


async def test_stack_migrates_a_given_database_and_keeps_set_values(
    tmp_path: Path, database_url: str, migrations_package: str
) -> None:
    suite = (
        Service(
            "demo",
            "demo.server",
            migrations=migrations_package,
            schema="demo",
            grpc_port_env="HUNTAZE_DEMO_GRPC_PORT",
            grpc_port_default=50999,
            grpc_target_env="HUNTAZE_DEMO_GRPC_TARGET",
            metrics_port_env="HUNTAZE_DEMO_METRICS_PORT",
            metrics_port_default=9999,
        ),
    )
    environ = {
        "HUNTAZE_HOME": str(tmp_path / "home"),
        "HUNTAZE_DATABASE_URL": database_url,
        "HUNTAZE_AUTH_SEALING_KEY": "from-the-environment",
        "HUNTAZE_GATEWAY_PORT": "18080",
        "HUNTAZE_DEMO_GRPC_PORT": "50998",
        "HUNTAZE_DEMO_METRICS_PORT": "19998",
    }
    with LocalStack(environ=environ, with_nats=False, suite=suite) as stack:
        assert stack.postgres is None
        assert stack.nats is None
        assert stack.env["HUNTAZE_DATABASE_URL"] == database_url
        assert stack.env["HUNTAZE_AUTH_SEALING_KEY"] == "from-the-environment"
        assert json.loads(stack.env["HUNTAZE_AUTH_SERVICE_ACCOUNTS"]).keys() == {"demo"}
        assert stack.env["HUNTAZE_SMTP_URL"] == "smtp://127.0.0.1:2525"
        assert "huntaze_devstack.mailcatcher" in (stack.mail_command or "")
        assert stack.migrate() == ["demo"]
        summary = dict(stack.summary())
        assert summary["gateway"] == "http://127.0.0.1:18080"
        assert summary["API docs"] == "http://127.0.0.1:18080/docs"
        assert summary["gRPC demo"] == "127.0.0.1:50998"
        assert summary["metrics demo"] == "http://127.0.0.1:19998/metrics"
        assert stack.env["HUNTAZE_DEMO_GRPC_TARGET"] == "127.0.0.1:50998"
    assert (tmp_path / "home" / "secrets.env").exists()

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('demo.items')::text") == "demo.items"
    finally:
        await conn.close()


def test_embedded_stack_gives_each_service_its_own_role(tmp_path: Path) -> None:
    environ = {
        "HUNTAZE_HOME": str(tmp_path / "home"),
        "HUNTAZE_EMBEDDED_PG_PORT": str(free_port()),
        "HUNTAZE_SMTP_URL": "smtp://127.0.0.1:1",
    }
    with LocalStack(environ=environ, with_nats=False, suite=SUITE) as stack:
        assert stack.migrate() == ["auth", "crm", "onlyfans", "ai", "analytics", "campaigns"]
        urls = {s.name: stack.service_env(s).get("HUNTAZE_DATABASE_URL") for s in SUITE}
        users = {name: url and make_url(url).username for name, url in urls.items()}
        assert users == {
            "auth": "huntaze_auth",
            "crm": "huntaze_crm",
            "onlyfans": "huntaze_onlyfans",
            "ai": "huntaze_ai",
            "analytics": "huntaze_analytics",
            "campaigns": "huntaze_campaigns",
            "gateway": None,
        }

        async def owners() -> set[str]:
            conn = await asyncpg.connect(libpq_url(stack.database_url))
            try:
                rows = await conn.fetch(
                    "SELECT DISTINCT schemaname || ':' || tableowner FROM pg_tables "
                    "WHERE schemaname IN"
                    " ('auth', 'crm', 'onlyfans', 'ai', 'analytics', 'campaigns')"
                )
            finally:
                await conn.close()
            return {row[0] for row in rows}

        assert asyncio.run(owners()) == {
            "auth:huntaze_auth",
            "crm:huntaze_crm",
            "onlyfans:huntaze_onlyfans",
            "ai:huntaze_ai",
            "analytics:huntaze_analytics",
            "campaigns:huntaze_campaigns",
        }
