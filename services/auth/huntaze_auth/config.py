"""The auth service's settings: every one an `HUNTAZE_*` environment variable."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from huntaze_kit.config import CommonSettings


class AuthSettings(CommonSettings):
    """What the auth process reads at start (see the README's settings table)."""

    auth_grpc_host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    auth_grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC listen port.")
    auth_metrics_port: int = Field(
        default=9461, ge=0, le=65535, description="Port of `/metrics` (Prometheus)."
    )
    auth_sealing_key: SecretStr | None = Field(
        default=None,
        description=(
            "Fernet key(s), comma-separated, newest first, that seal tokens carried in events. "
            "When unset, a key is generated on first start and kept in the auth schema."
        ),
    )
    auth_service_accounts: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Service accounts as JSON, name -> secret, e.g. {"crm": "s3cret"}.',
    )
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Where users reach the suite: the base of links in emails.",
    )
    email_backend: Literal["smtp", "ses"] = Field(default="smtp", description="smtp or ses.")
    smtp_url: str = Field(
        default="smtp://127.0.0.1:1025",
        description=(
            "SMTP relay: smtp:// (STARTTLS when offered), smtp+starttls:// (STARTTLS required) "
            "or smtps:// (TLS), with optional user:password@."
        ),
    )
    smtp_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Timeout of each SMTP connection and command."
    )
    email_from: str = Field(
        default="Huntaze <no-reply@huntaze.local>", description="The From of every email."
    )
    aws_region: str = Field(default="us-east-1", description="AWS region of SES.")
    ses_endpoint_url: str | None = Field(
        default=None, description="SES endpoint override (a local SES-compatible server)."
    )
    ses_configuration_set: str | None = Field(default=None, description="SES configuration set.")

    # argon2id; the defaults are OWASP's minimum (19 MiB, 2 passes, 1 lane).
    auth_argon2_time_cost: int = Field(
        default=2, ge=1, le=20, description="argon2id passes; hashes are upgraded at login."
    )
    auth_argon2_memory_kib: int = Field(
        default=19_456, ge=8, le=4_194_304, description="argon2id memory in KiB."
    )
    auth_argon2_parallelism: int = Field(default=1, ge=1, le=16, description="argon2id lanes.")
    auth_password_min_score: int = Field(
        default=3, ge=0, le=4, description="Minimum zxcvbn score of a new password."
    )

    auth_access_token_ttl_seconds: int = Field(
        default=15 * 60, ge=30, le=3600, description="Lifetime of an access token (JWT)."
    )
    auth_service_token_ttl_seconds: int = Field(
        default=5 * 60, ge=30, le=3600, description="Lifetime of a service token."
    )
    auth_session_lifetime_seconds: int = Field(
        default=30 * 24 * 3600, ge=300, description="Absolute session lifetime from sign-in."
    )
    auth_signing_key_rotation_days: int = Field(
        default=30, ge=1, description="A new signing key is made when the newest is this old."
    )
    auth_email_token_ttl_seconds: int = Field(
        default=3600, ge=60, description="Verification and password-reset links."
    )
    auth_two_factor_challenge_ttl_seconds: int = Field(
        default=300, ge=30, le=1800, description="Lifetime of a two-factor login challenge."
    )
    auth_email_resend_interval_seconds: int = Field(
        default=60, ge=0, description="At most one verification or reset email per this period."
    )

    # Login throttling (see `service.LoginThrottle`).
    auth_login_window_seconds: int = Field(
        default=15 * 60, ge=10, description="Window of the per-(account, IP) and per-IP limits."
    )
    auth_login_max_failures_per_account_ip: int = Field(
        default=5, ge=1, description="Failed logins per (account, IP) in that window."
    )
    auth_login_account_window_seconds: int = Field(
        default=5 * 60, ge=10, description="Short window of the per-account ceiling."
    )
    auth_login_max_failures_per_account: int = Field(
        default=20,
        ge=1,
        description="Failed logins per account in that window; known devices are exempt.",
    )
    auth_login_max_failures_per_ip: int = Field(
        default=50, ge=1, description="Failed logins per IP across all accounts."
    )

    def sealing_keys(self) -> list[str]:
        if self.auth_sealing_key is None:
            return []
        return [k.strip() for k in self.auth_sealing_key.get_secret_value().split(",") if k.strip()]
