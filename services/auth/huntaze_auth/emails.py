"""Transactional emails: English templates (HTML and plain text) and two ways to send them,
an SMTP relay (`HUNTAZE_SMTP_URL`) or AWS SES v2 (`HUNTAZE_EMAIL_BACKEND=ses`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, unquote, urlsplit

import aiosmtplib
import boto3
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from huntaze_auth.config import AuthSettings

if TYPE_CHECKING:
    from mypy_boto3_sesv2.type_defs import EmailContentTypeDef

PRODUCT = "Huntaze"
# Pages the links open (the gateway serves them until the web console does).
VERIFY_EMAIL_PATH = "/verify-email"
RESET_PASSWORD_PATH = "/reset-password"
WELCOME_PATH = "/onboarding"
SECURITY_PATH = "/settings/security"


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    html: str


def _duration(value: timedelta) -> str:
    minutes = max(1, round(value.total_seconds() / 60))
    if minutes % 60 == 0:
        hours = minutes // 60
        return "1 hour" if hours == 1 else f"{hours} hours"
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


class EmailTemplates:
    """Renders each email in both forms from `huntaze_auth/templates`."""

    def __init__(self, *, public_url: str) -> None:
        self._public_url = public_url.rstrip("/")
        self._html = Environment(
            loader=PackageLoader("huntaze_auth", "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
        )
        self._text = Environment(
            loader=PackageLoader("huntaze_auth", "templates"),
            autoescape=False,  # noqa: S701 (plain text, never shown as HTML)
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def _link(self, path: str, token: str | None = None) -> str:
        link = f"{self._public_url}{path}"
        return f"{link}?token={quote(token, safe='')}" if token else link

    def _render(self, template: str, *, to: str, subject: str, **values: object) -> OutgoingEmail:
        context = {"to": to, "subject": subject, "product": PRODUCT, **values}
        return OutgoingEmail(
            to=to,
            subject=subject,
            text=self._text.get_template(f"{template}.txt").render(context),
            html=self._html.get_template(f"{template}.html").render(context),
        )

    def verification(
        self, *, to: str, name: str, token: str, valid_for: timedelta
    ) -> OutgoingEmail:
        return self._render(
            "verification",
            to=to,
            subject="Confirm your email address",
            name=name,
            link=self._link(VERIFY_EMAIL_PATH, token),
            valid_for=_duration(valid_for),
        )

    def welcome(self, *, to: str, name: str) -> OutgoingEmail:
        return self._render(
            "welcome",
            to=to,
            subject=f"Welcome to {PRODUCT}",
            name=name,
            link=self._link(WELCOME_PATH),
        )

    def password_reset(
        self, *, to: str, name: str, token: str, valid_for: timedelta
    ) -> OutgoingEmail:
        return self._render(
            "password_reset",
            to=to,
            subject=f"Reset your {PRODUCT} password",
            name=name,
            link=self._link(RESET_PASSWORD_PATH, token),
            valid_for=_duration(valid_for),
        )

    def sign_in_alert(
        self, *, to: str, name: str, ip_address: str, user_agent: str, when: datetime
    ) -> OutgoingEmail:
        return self._render(
            "sign_in_alert",
            to=to,
            subject=f"New sign-in to your {PRODUCT} account",
            name=name,
            ip_address=ip_address,
            user_agent=user_agent,
            when=when.strftime("%Y-%m-%d %H:%M UTC"),
            link=self._link(SECURITY_PATH),
        )


class EmailSender(Protocol):
    async def send(self, email: OutgoingEmail) -> None: ...


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    # None: STARTTLS when the server offers it; True: required.
    start_tls: bool | None

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        """`smtp://`, `smtp+starttls://` or `smtps://`, optionally `user:password@`."""
        parts = urlsplit(url)
        defaults = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
        if parts.scheme not in defaults or not parts.hostname:
            raise ValueError("HUNTAZE_SMTP_URL must be smtp://, smtp+starttls:// or smtps://")
        return cls(
            hostname=parts.hostname,
            port=parts.port or defaults[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=parts.scheme == "smtps",
            start_tls=True if parts.scheme == "smtp+starttls" else None,
        )


def mime_message(email: OutgoingEmail, *, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(datetime.now().astimezone())
    domain = parseaddr(sender)[1].rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


class SmtpSender:
    def __init__(self, *, url: str, sender: str, timeout: float = 15.0) -> None:
        self._target = SmtpTarget.from_url(url)
        self._sender = sender
        self._timeout = timeout

    async def send(self, email: OutgoingEmail) -> None:
        target = self._target
        await aiosmtplib.send(
            mime_message(email, sender=self._sender),
            hostname=target.hostname,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            timeout=self._timeout,
        )


class SesSender:
    """AWS SES v2 `SendEmail`; credentials come from the standard AWS chain (environment,
    profile, instance role). boto3 blocks, so each send runs in a worker thread."""

    def __init__(
        self,
        *,
        sender: str,
        region: str,
        endpoint_url: str | None = None,
        configuration_set: str | None = None,
    ) -> None:
        self._client = boto3.client("sesv2", region_name=region, endpoint_url=endpoint_url)
        self._sender = sender
        self._configuration_set = configuration_set

    def _send(self, email: OutgoingEmail) -> None:
        content: EmailContentTypeDef = {
            "Simple": {
                "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": email.text, "Charset": "UTF-8"},
                    "Html": {"Data": email.html, "Charset": "UTF-8"},
                },
            }
        }
        if self._configuration_set:
            self._client.send_email(
                FromEmailAddress=self._sender,
                Destination={"ToAddresses": [email.to]},
                Content=content,
                ConfigurationSetName=self._configuration_set,
            )
        else:
            self._client.send_email(
                FromEmailAddress=self._sender,
                Destination={"ToAddresses": [email.to]},
                Content=content,
            )

    async def send(self, email: OutgoingEmail) -> None:
        await asyncio.to_thread(self._send, email)


def build_sender(settings: AuthSettings) -> EmailSender:
    if settings.email_backend == "ses":
        return SesSender(
            sender=settings.email_from,
            region=settings.aws_region,
            endpoint_url=settings.ses_endpoint_url,
            configuration_set=settings.ses_configuration_set,
        )
    return SmtpSender(
        url=settings.smtp_url,
        sender=settings.email_from,
        timeout=settings.smtp_timeout_seconds,
    )
