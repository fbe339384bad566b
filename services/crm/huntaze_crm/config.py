"""The CRM service's settings: every one an `HUNTAZE_*` environment variable."""

from __future__ import annotations

from pydantic import Field

from huntaze_kit.config import CommonSettings


class CrmSettings(CommonSettings):
    """What the CRM process reads at start (see the README's settings table)."""

    crm_grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    crm_grpc_port: int = Field(default=50052, ge=0, le=65535, description="gRPC listen port.")
    crm_inbox_retention_hours: int = Field(
        default=24, ge=1, le=24 * 30, description="How long inbox events stay replayable."
    )
    crm_inbox_retention_events: int = Field(
        default=1000, ge=10, le=1_000_000, description="Inbox events kept per creator at most."
    )
    crm_consumer_batch_size: int = Field(
        default=128, ge=1, le=1000, description="Inbound events fetched per pull."
    )
    crm_consumer_concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Lanes applying a fetched batch of inbound events in parallel, split by fan "
        "(1: one transaction after another, the fastest with set-based batches).",
    )
    crm_metrics_port: int = Field(
        default=9462, ge=0, le=65535, description="Port of `/metrics` (Prometheus)."
    )
    crm_automation_messages_per_fan_per_day: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Automated messages (AI, campaigns) one fan may receive in any 24 hours, "
        "unless the creator sets their own budget.",
    )
