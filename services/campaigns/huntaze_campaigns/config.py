"""The campaigns service's settings: every one an `HUNTAZE_*` environment variable."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from huntaze_kit.config import CommonSettings

# The service's name among auth's service accounts (the CRM lets it read fans and send).
SERVICE_ACCOUNT = "campaigns"


class CampaignsSettings(CommonSettings):
    """What the campaigns process reads at start (see the README's settings table)."""

    campaigns_grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    campaigns_grpc_port: int = Field(default=50055, ge=0, le=65535, description="gRPC listen port.")
    campaigns_metrics_port: int = Field(
        default=9465, ge=0, le=65535, description="Port of `/metrics` (Prometheus)."
    )
    crm_grpc_target: str = Field(
        default="127.0.0.1:50052", description="Where the CRM service's gRPC API listens."
    )
    campaigns_service_secret: SecretStr | None = Field(
        default=None,
        description="The service's secret among auth's service accounts (name `campaigns`), "
        "for the service tokens it reads audiences and sends with. `make run` gives every "
        "process the accounts (`HUNTAZE_AUTH_SERVICE_ACCOUNTS`): unset, the service takes its "
        "own entry there.",
    )
    auth_service_accounts: dict[str, SecretStr] = Field(
        default_factory=dict,
        exclude=True,
        description="See `HUNTAZE_CAMPAIGNS_SERVICE_SECRET`.",
    )
    campaigns_send_concurrency: int = Field(
        default=16, ge=1, le=500, description="Sends to the CRM in flight at once."
    )
    campaigns_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often the scheduler looks for due sends."
    )
    campaigns_consumer_batch_size: int = Field(
        default=128, ge=1, le=1000, description="CRM events fetched per pull."
    )

    @model_validator(mode="after")
    def _own_secret(self) -> CampaignsSettings:
        own = self.auth_service_accounts.get(SERVICE_ACCOUNT)
        if self.campaigns_service_secret is None and own is not None:
            object.__setattr__(self, "campaigns_service_secret", own)
        object.__setattr__(self, "auth_service_accounts", {})  # nobody else's secret is kept
        return self
