"""The analytics service's settings: every one an `HUNTAZE_*` environment variable."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from huntaze_kit.config import CommonSettings

SummaryProvider = Literal["facts", "openai", "azure", "compatible"]


class AnalyticsSettings(CommonSettings):
    """What the analytics process reads at start (see the README's settings table)."""

    analytics_grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    analytics_grpc_port: int = Field(default=50056, ge=0, le=65535, description="gRPC listen port.")
    analytics_metrics_port: int = Field(
        default=9466, ge=0, le=65535, description="Port of `/metrics` (Prometheus)."
    )
    analytics_consumer_batch_size: int = Field(
        default=1000,
        ge=1,
        le=1000,
        description="Events fetched per pull, per stream (and applied in one transaction).",
    )
    analytics_snapshot_interval_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="How old the latest insight snapshot of a period may be before the next "
        "read takes a new one.",
    )
    analytics_summary_provider: SummaryProvider = Field(
        default="facts",
        description="Who writes the summaries: `facts` (plain sentences from the figures, no "
        "network) or an LLM, the way the AI agent reaches one: `openai`, `azure` or "
        "`compatible` (any OpenAI-compatible server at `analytics_llm_base_url`).",
    )
    analytics_llm_model: str = Field(
        default="gpt-4o-mini", description="Model name (for Azure: the deployment name)."
    )
    analytics_llm_base_url: str = Field(
        default="", description="Base URL of an OpenAI-compatible API (`.../v1`)."
    )
    analytics_llm_api_key: SecretStr | None = Field(default=None, description="The LLM API key.")
    analytics_azure_endpoint: str = Field(
        default="", description="Azure OpenAI endpoint (`https://<resource>.openai.azure.com`)."
    )
    analytics_azure_api_version: str = Field(
        default="2024-10-21", description="Azure OpenAI API version."
    )
    analytics_llm_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="How long one summary request may take."
    )
    analytics_llm_max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a failed summary request, with backoff."
    )
