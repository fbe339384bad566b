"""The suite: every service process and its migrations, in one list.

Adding a service to `make run`, `make migrate` and the local secrets is one entry in `SUITE`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    """One process of the suite.

    `module` is run as `python -m module args...` with the suite's environment. When the service
    owns tables, `migrations` names its Alembic package and `schema` its PostgreSQL schema. When it
    serves gRPC, `grpc_port_env` names the setting of its listen port (default
    `grpc_port_default`) and `grpc_target_env` the setting its clients read to reach it: the stack
    sets the latter from the former unless it is set already. `metrics_port_env` names the setting
    of its Prometheus `/metrics` port (default `metrics_port_default`), shown by `make run`.
    """

    name: str
    module: str
    args: tuple[str, ...] = ()
    migrations: str | None = None
    schema: str | None = None
    grpc_port_env: str | None = None
    grpc_port_default: int | None = None
    grpc_target_env: str | None = None
    metrics_port_env: str | None = None
    metrics_port_default: int | None = None
    # PostgreSQL extensions its migrations use when the server has them: created by the
    # administrator who provisions the roles (a service role may not create them).
    extensions: tuple[str, ...] = ()

    def command(self, python: str = sys.executable) -> str:
        """The shell command that runs the process (`exec`, so signals reach it directly)."""
        return shlex.join(["exec", python, "-m", self.module, *self.args])


SUITE: tuple[Service, ...] = (
    Service(
        name="auth",
        module="huntaze_auth.server",
        migrations="huntaze_auth.migrations",
        schema="auth",
        grpc_port_env="HUNTAZE_AUTH_GRPC_PORT",
        grpc_port_default=50051,
        grpc_target_env="HUNTAZE_AUTH_GRPC_TARGET",
        metrics_port_env="HUNTAZE_AUTH_METRICS_PORT",
        metrics_port_default=9461,
    ),
    Service(
        name="crm",
        module="huntaze_crm.server",
        migrations="huntaze_crm.migrations",
        schema="crm",
        grpc_port_env="HUNTAZE_CRM_GRPC_PORT",
        grpc_port_default=50052,
        grpc_target_env="HUNTAZE_CRM_GRPC_TARGET",
        metrics_port_env="HUNTAZE_CRM_METRICS_PORT",
        metrics_port_default=9462,
    ),
    Service(
        name="onlyfans",
        module="huntaze_onlyfans_worker.server",
        migrations="huntaze_onlyfans_worker.migrations",
        schema="onlyfans",
        grpc_port_env="HUNTAZE_ONLYFANS_GRPC_PORT",
        grpc_port_default=50053,
        grpc_target_env="HUNTAZE_ONLYFANS_GRPC_TARGET",
        metrics_port_env="HUNTAZE_ONLYFANS_METRICS_PORT",
        metrics_port_default=9463,
    ),
    Service(
        name="ai",
        module="huntaze_ai_agent.server",
        migrations="huntaze_ai_agent.migrations",
        schema="ai",
        grpc_port_env="HUNTAZE_AI_GRPC_PORT",
        grpc_port_default=50054,
        grpc_target_env="HUNTAZE_AI_GRPC_TARGET",
        metrics_port_env="HUNTAZE_AI_METRICS_PORT",
        metrics_port_default=9464,
        extensions=("vector",),
    ),
    Service(
        name="analytics",
        module="huntaze_analytics.server",
        migrations="huntaze_analytics.migrations",
        schema="analytics",
        grpc_port_env="HUNTAZE_ANALYTICS_GRPC_PORT",
        grpc_port_default=50056,
        grpc_target_env="HUNTAZE_ANALYTICS_GRPC_TARGET",
        metrics_port_env="HUNTAZE_ANALYTICS_METRICS_PORT",
        metrics_port_default=9466,
    ),
    Service(
        name="campaigns",
        module="huntaze_campaigns.server",
        migrations="huntaze_campaigns.migrations",
        schema="campaigns",
        grpc_port_env="HUNTAZE_CAMPAIGNS_GRPC_PORT",
        grpc_port_default=50055,
        grpc_target_env="HUNTAZE_CAMPAIGNS_GRPC_TARGET",
        metrics_port_env="HUNTAZE_CAMPAIGNS_METRICS_PORT",
        metrics_port_default=9465,
    ),
    Service(
        name="gateway",
        module="huntaze_gateway",
        metrics_port_env="HUNTAZE_GATEWAY_METRICS_PORT",
        metrics_port_default=9460,
    ),
)
