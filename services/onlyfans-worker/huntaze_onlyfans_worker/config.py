"""The OnlyFans worker's settings: every one an `HUNTAZE_*` environment variable."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr

from huntaze_kit.config import CommonSettings


class OnlyfansSettings(CommonSettings):
    """What the worker process reads at start (see the README's settings table)."""

    onlyfans_vault_key_file: Path | None = Field(
        default=None,
        description="The vault's local master keys, one base64 key a line, the current first "
        "(a 0600 file; default `<HUNTAZE_HOME>/onlyfans-vault.keys`, created when missing).",
    )
    onlyfans_vault_master_keys: SecretStr | None = Field(
        default=None,
        description="The vault's local master keys as comma-separated base64, the current "
        "first; used instead of the key file when set.",
    )
    onlyfans_vault_kms_key_id: str | None = Field(
        default=None,
        description="An AWS KMS key (id, ARN or alias) that wraps the vault's data keys; "
        "local master keys stay readable for a rotation.",
    )
    onlyfans_vault_secrets_manager: bool = Field(
        default=False,
        description="Keep the encrypted secrets in AWS Secrets Manager at `of/creds/{userId}`.",
    )
    onlyfans_aws_region: str = Field(default="us-east-1", description="AWS region of KMS and SM.")
    onlyfans_aws_endpoint_url: str | None = Field(
        default=None, description="An AWS endpoint to use instead of the region's (tests, proxies)."
    )

    onlyfans_grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    onlyfans_grpc_port: int = Field(default=50053, ge=0, le=65535, description="gRPC listen port.")
    onlyfans_base_url: str = Field(
        default="https://onlyfans.com",
        description="The platform's web address (the simulator's under `make run`).",
    )
    onlyfans_rules_url: str = Field(
        default="https://raw.githubusercontent.com/DATAHOARDERS/dynamic-rules/main/onlyfans.json",
        description="Where the request-signing rules are published (any of the known shapes).",
    )
    onlyfans_rules_ttl_seconds: float = Field(
        default=300.0, gt=0, description="How long fetched signing rules are used before a refetch."
    )
    onlyfans_browser_path: str | None = Field(
        default=None,
        description="The Chromium binary; unset: `chromium` on the PATH, else Playwright's own.",
    )
    onlyfans_user_agent: str | None = Field(
        default=None, description="The browser's user-agent for logins (unset: a current Chrome)."
    )
    onlyfans_max_contexts: int = Field(
        default=20, ge=1, le=500, description="Accounts (browser contexts) one process drives."
    )
    onlyfans_context_idle_seconds: float = Field(
        default=900.0, gt=0, description="A browser context unused this long is closed."
    )
    onlyfans_sync_interval_seconds: float = Field(
        default=300.0, gt=0, description="Mean time between two periodic syncs of an account."
    )
    onlyfans_sync_jitter: float = Field(
        default=0.2, ge=0, le=1, description="Each sync interval varies by up to this share."
    )
    onlyfans_send_interval_seconds: float = Field(
        default=4.0, ge=0, description="Least time between two sends of one account."
    )
    onlyfans_send_jitter_seconds: float = Field(
        default=2.0, ge=0, description="Up to this much more, at random, between two sends."
    )
    onlyfans_throttle_seconds: float = Field(
        default=3.0, ge=0, description='The platform\'s own send throttle ("Allow 3 seconds").'
    )
    onlyfans_rate_limit_pause_seconds: float = Field(
        default=60.0, ge=0, description="How long an account rests after a 429 naming no delay."
    )
    onlyfans_lease_seconds: float = Field(
        default=30.0, gt=0, description="How long an account stays with a process that stopped."
    )
    onlyfans_metrics_port: int = Field(
        default=9463, ge=0, le=65535, description="Port of `/metrics` (Prometheus)."
    )

    def vault_key_file(self) -> Path:
        # `HUNTAZE_HOME` is the local stack's folder (its default too).
        home = Path(os.environ.get("HUNTAZE_HOME") or ".huntaze")
        return self.onlyfans_vault_key_file or home / "onlyfans-vault.keys"
