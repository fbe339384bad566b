"""The AI agent's settings: every one an `HUNTAZE_*` environment variable."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from huntaze_kit.config import CommonSettings

LlmProvider = Literal["local", "openai", "azure", "compatible"]
# The agent's name among auth's service accounts (the CRM lets it read and send messages).
SERVICE_ACCOUNT = "ai"


class AiAgentSettings(CommonSettings):
    """What the AI agent process reads at start (see the README's settings table)."""

    ai_grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    ai_grpc_port: int = Field(default=50054, ge=0, le=65535, description="gRPC listen port.")
    ai_llm_provider: LlmProvider = Field(
        default="local",
        description="`local` (no network: adapts the creator's own replies), `openai`, `azure` "
        "(Azure OpenAI) or `compatible` (any OpenAI-compatible server at `ai_llm_base_url`).",
    )
    ai_llm_model: str = Field(
        default="gpt-4o", description="Model name (for Azure: the deployment name)."
    )
    ai_llm_base_url: str = Field(
        default="", description="Base URL of an OpenAI-compatible API (`.../v1`)."
    )
    ai_llm_api_key: SecretStr | None = Field(default=None, description="The LLM API key.")
    ai_azure_endpoint: str = Field(
        default="", description="Azure OpenAI endpoint (`https://<resource>.openai.azure.com`)."
    )
    ai_azure_api_version: str = Field(default="2024-10-21", description="Azure OpenAI API version.")
    ai_llm_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="How long one LLM request may take."
    )
    ai_llm_max_retries: int = Field(
        default=3, ge=0, le=10, description="Retries of a failed LLM request, with backoff."
    )
    ai_llm_max_output_tokens: int = Field(
        default=300, ge=16, le=4096, description="Tokens a reply may use."
    )
    ai_llm_input_usd_per_million_tokens: float = Field(
        default=2.5, ge=0, description="Price of prompt tokens, for the cost ledger and budget."
    )
    ai_llm_output_usd_per_million_tokens: float = Field(
        default=10.0, ge=0, description="Price of completion tokens."
    )
    ai_embeddings_base_url: str = Field(
        default="",
        description="Base URL (`.../v1`) of an OpenAI-compatible `/embeddings` API: the "
        "creator's past replies are then retrieved by vector likeness (pgvector). Unset: "
        "PostgreSQL text search.",
    )
    ai_embeddings_model: str = Field(
        default="text-embedding-3-small", description="The embedding model's name."
    )
    ai_embeddings_api_key: SecretStr | None = Field(
        default=None, description="The embeddings API key."
    )
    ai_embeddings_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="How long one embeddings request may take."
    )
    ai_embeddings_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="How often past replies without a vector are looked for.",
    )
    crm_grpc_target: str = Field(
        default="127.0.0.1:50052", description="Where the CRM service's gRPC API listens."
    )
    ai_service_secret: SecretStr | None = Field(
        default=None,
        description="The agent's secret among auth's service accounts (name `ai`), for the "
        "service tokens it acts for creators with. `make run` gives every process the accounts "
        "(`HUNTAZE_AUTH_SERVICE_ACCOUNTS`): unset, the agent takes its own entry there.",
    )
    auth_service_accounts: dict[str, SecretStr] = Field(
        default_factory=dict, exclude=True, description="See `HUNTAZE_AI_SERVICE_SECRET`."
    )
    ai_draft_concurrency: int = Field(
        # At 1 s an answer, 128 in flight leave room for 100 drafts a second.
        default=128,
        ge=1,
        le=1000,
        description="Drafts in flight at once (LLM calls take seconds); also the LLM client's "
        "connections.",
    )
    ai_autopilot_min_delay_seconds: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="The autopilot waits at least this long before it sends.",
    )
    ai_autopilot_max_delay_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="The autopilot waits at most this long before it sends.",
    )
    ai_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often the workers look for drafts to make and replies due to send.",
    )
    ai_attribution_window_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 30,
        description="A purchase this soon after an AI message is attributed to it.",
    )
    ai_consumer_batch_size: int = Field(
        default=128, ge=1, le=1000, description="CRM events fetched per pull."
    )
    ai_metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of `/metrics` (Prometheus)."
    )

    @model_validator(mode="after")
    def _own_secret(self) -> AiAgentSettings:
        own = self.auth_service_accounts.get(SERVICE_ACCOUNT)
        if self.ai_service_secret is None and own is not None:
            object.__setattr__(self, "ai_service_secret", own)
        object.__setattr__(self, "auth_service_accounts", {})  # nobody else's secret is kept
        return self
