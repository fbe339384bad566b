"""The OnlyFans worker's settings: every one an `HUNTAZE_*` environment variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from huntaze_kit.config import CommonSettings


class OnlyfansSettings(CommonSettings):
    """What the worker process reads at start (see the README's settings table)."""

    home: Path = Field(
        default=Path(".huntaze"), description="Where local data and secrets are kept."
    )
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

    def vault_key_file(self) -> Path:
        return self.onlyfans_vault_key_file or self.home / "onlyfans-vault.keys"
