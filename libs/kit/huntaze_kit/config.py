"""Settings shared by every process: all read from `HUNTAZE_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """What every service reads. Services subclass it and add their own `HUNTAZE_*` fields."""

    model_config = SettingsConfigDict(env_prefix="HUNTAZE_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/huntaze",
        description=(
            "PostgreSQL URL; each service works in its own schema of this database. "
            "`make run` starts an embedded server when unset."
        ),
    )
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="NATS with JetStream; `make run` starts an embedded server when unset.",
    )
    log_level: str = Field(default="INFO", description="Log level of every process.")
    log_format: str = Field(default="json", description="`json` or `console`.")
    auth_grpc_target: str = Field(
        default="127.0.0.1:50051", description="Where the auth service's gRPC API listens."
    )
    token_audience: str = Field(default="huntaze", description="The `aud` of access tokens.")
    token_issuer: str = Field(default="huntaze-auth", description="The `iss` of access tokens.")
    db_pool_size: int = Field(
        default=10, ge=1, le=200, description="Database connections each process keeps open."
    )
    db_max_overflow: int = Field(
        default=10, ge=0, le=200, description="Extra connections a process may open under load."
    )
    grace_seconds: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description=(
            "On SIGTERM, how long a process may take to stop: calls in flight and events being "
            "handled finish within it."
        ),
    )
