"""The gateway's settings: every field is a `HUNTAZE_*` environment variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from huntaze_kit.config import CommonSettings


class GatewaySettings(CommonSettings):
    """What the HTTP edge reads. Upstream addresses (`HUNTAZE_AUTH_GRPC_TARGET`, ...) come from
    `CommonSettings`."""

    gateway_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    gateway_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port.")
    gateway_metrics_port: int = Field(
        default=9460,
        ge=0,
        le=65535,
        description="Port of `/metrics` (Prometheus), apart from the public API.",
    )
    gateway_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Browser origins allowed to call the API with credentials, comma-separated "
            "(e.g. `http://localhost:3000,https://app.example.com`). Empty: no cross-origin calls."
        ),
    )
    gateway_cookie_secure: bool = Field(
        default=True,
        description="Set the Secure flag on the token cookies; turn off only for local plain HTTP.",
    )
    gateway_cookie_domain: str | None = Field(
        default=None, description="Domain attribute of the token cookies; unset: host-only."
    )
    gateway_cookie_samesite: Literal["lax", "strict"] = Field(
        default="lax", description="SameSite attribute of the token cookies."
    )
    gateway_access_cookie_name: str = Field(
        default="huntaze_access", description="Cookie holding the access token (path `/`)."
    )
    gateway_refresh_cookie_name: str = Field(
        default="huntaze_refresh",
        description="Cookie holding the refresh token (path `/api/auth`).",
    )
    gateway_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body accepted; larger ones get 413.",
    )
    gateway_trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=10,
        description=(
            "How many reverse proxies in front of the gateway append to X-Forwarded-For; "
            "0 means the TCP peer is the client."
        ),
    )
    gateway_upstream_deadline_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Deadline of every gRPC call to an upstream service."
    )
    gateway_readiness_timeout_seconds: float = Field(
        default=1.0, gt=0, le=10, description="Deadline of each health check behind `/readyz`."
    )
    gateway_docs_enabled: bool = Field(
        default=True, description="Serve the OpenAPI document and `/docs`."
    )
    gateway_console_dir: Path | None = Field(
        default=None,
        description=(
            "Folder of the built web console, served at `/` (`make run` builds `web/dist`); "
            "unset: no console, and the email links open the gateway's own pages."
        ),
    )
    gateway_problem_type_base: str = Field(
        default="https://huntaze.app/problems/",
        description="Base URI of the `type` member of problem documents.",
    )
    crm_grpc_target: str = Field(
        default="127.0.0.1:50052", description="Where the CRM service's gRPC API listens."
    )
    onlyfans_grpc_target: str = Field(
        default="127.0.0.1:50053", description="Where the OnlyFans worker's gRPC API listens."
    )
    ai_grpc_target: str = Field(
        default="127.0.0.1:50054", description="Where the AI agent's gRPC API listens."
    )
    analytics_grpc_target: str = Field(
        default="127.0.0.1:50056", description="Where the analytics service's gRPC API listens."
    )
    campaigns_grpc_target: str = Field(
        default="127.0.0.1:50055", description="Where the campaigns service's gRPC API listens."
    )
    gateway_sse_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Idle seconds after which an event stream gets a comment (keeps proxies open).",
    )

    @field_validator("gateway_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("gateway_cors_origins")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("`*` cannot be used with credentials: list the origins")
        return value
