"""Email templates and both delivery backends: SMTP (to the mail catcher) and AWS SES v2 (to a
moto server in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import boto3
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from huntaze.auth.v1 import events_pb2
from huntaze_auth.consumers import EmailDispatcher, email_consumer
from huntaze_auth.emails import EmailTemplates, OutgoingEmail, SesSender, SmtpSender, SmtpTarget
from huntaze_auth.sealing import Sealer
from huntaze_auth.streams import AUTH
from huntaze_devstack.embedded import free_port, port_accepts
from huntaze_devstack.mailcatcher import MailCatcher
from huntaze_kit.consumers import PermanentEventError, ReceivedEvent
from huntaze_kit.db import create_engine, libpq_url, session_factory
from huntaze_kit.streams import DLQ, Headers, connect_nats, ensure_streams

TEMPLATES = EmailTemplates(public_url="https://app.example.com/")


def test_every_template_renders_html_and_text() -> None:
    emails = [
        TEMPLATES.verification(
            to="ada@example.com", name="Ada <script>", token="a+b/c", valid_for=timedelta(hours=1)
        ),
        TEMPLATES.welcome(to="ada@example.com", name="Ada"),
        TEMPLATES.password_reset(
            to="ada@example.com", name="", token="tok", valid_for=timedelta(minutes=30)
        ),
        TEMPLATES.sign_in_alert(
            to="ada@example.com",
            name="Ada",
            ip_address="203.0.113.9",
            user_agent="Safari",
            when=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        ),
    ]
    verification, welcome, reset, alert = emails
    assert "https://app.example.com/verify-email?token=a%2Bb%2Fc" in verification.text
    assert "expires in 1 hour" in verification.text
    assert "Ada &lt;script&gt;" in verification.html
    assert "<script>" not in verification.html
    assert "Ada <script>" in verification.text
    assert welcome.subject == "Welcome to Huntaze"
    assert "expires in 30 minutes" in reset.text
    assert "Hi there" in reset.text
    assert "203.0.113.9" in alert.html
    assert "2026-01-02 03:04 UTC" in alert.text
    for email in emails:
        assert email.html.lstrip().startswith("<!DOCTYPE html>")
        assert email.text.strip()


def test_smtp_urls() -> None:
    plain = SmtpTarget.from_url("smtp://127.0.0.1:2525")
    assert (plain.port, plain.use_tls, plain.start_tls, plain.username) == (2525, False, None, None)
    relay = SmtpTarget.from_url("smtp+starttls://user%40x:p%3Ass@mail.example.com")
    assert (relay.port, relay.start_tls, relay.username, relay.password) == (
        587,
        True,
        "user@x",
        "p:ss",
    )
    assert SmtpTarget.from_url("smtps://mail.example.com").use_tls
    with pytest.raises(ValueError, match="HUNTAZE_SMTP_URL"):
        SmtpTarget.from_url("http://mail.example.com")


async def test_smtp_sender_delivers_both_parts(mail_catcher: MailCatcher) -> None:
    sender = SmtpSender(url=mail_catcher.smtp_url, sender="Huntaze <no-reply@example.com>")
    await sender.send(TEMPLATES.welcome(to="ada@example.com", name="Ada"))
    message = await mail_catcher.wait_for_async(timeout=10)
    assert message["Subject"] == "Welcome to Huntaze"
    assert message["To"] == "ada@example.com"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(preferencelist=("plain",)) is not None
    assert message.get_body(preferencelist=("html",)) is not None


def _moto_server() -> str | None:
    found = shutil.which("moto_server")
    if found:
        return found
    candidate = Path(sys.executable).parent / "moto_server"
    return str(candidate) if candidate.exists() else None


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    binary = _moto_server()
    if binary is None:
        pytest.skip("moto_server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_accepts("127.0.0.1", port):
            assert process.poll() is None, "moto_server exited"
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.05)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_ses_sender_against_moto(moto_url: str) -> None:
    boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url).create_email_identity(
        EmailIdentity="example.com"
    )
    sender = SesSender(
        sender="Huntaze <no-reply@example.com>", region="us-east-1", endpoint_url=moto_url
    )
    await sender.send(
        TEMPLATES.password_reset(
            to="ada@example.com", name="Ada", token="reset-me", valid_for=timedelta(hours=1)
        )
    )
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json") as response:
        sent = json.load(response)["ses"]["Message"]
    assert len(sent) == 1
    assert sent[0]["subject"] == "Reset your Huntaze password"
    assert sent[0]["destinations"]["ToAddresses"] == ["ada@example.com"]
    assert "reset-password?token=reset-me" in sent[0]["body"]


def _event(subject: str, message: Message) -> ReceivedEvent:
    return ReceivedEvent(
        event_id=uuid.uuid4(),
        subject=subject,
        message_type=message.DESCRIPTOR.full_name,
        creator_id=None,
        request_id=None,
        payload=message.SerializeToString(),
        delivery_count=1,
        headers={},
        stream_sequence=1,
        occurred_at=None,
    )


async def test_dispatcher_skips_what_should_not_be_sent(mail_catcher: MailCatcher) -> None:
    sealer = Sealer([Sealer.generate_key()])
    dispatcher = EmailDispatcher(
        templates=TEMPLATES,
        sender=SmtpSender(url=mail_catcher.smtp_url, sender="no-reply@example.com"),
        sealer=sealer,
        clock=lambda: datetime.now(UTC),
    )
    now = datetime.now(UTC)

    def stamp(value: datetime) -> Timestamp:
        result = Timestamp()
        result.FromDatetime(value)
        return result

    # A link that expired before it could be sent, and a sign-in from a known device: no email.
    expired = events_pb2.EmailVerificationRequested(
        user_id="u",
        email="old@example.com",
        sealed_token=sealer.seal("t"),
        expires_at=stamp(now - timedelta(minutes=1)),
        occurred_at=stamp(now - timedelta(hours=1)),
    )
    await dispatcher.handle(None, _event("auth.email_verification.requested", expired))
    known = events_pb2.SignInRecorded(user_id="u", email="known@example.com", new_device=False)
    await dispatcher.handle(None, _event("auth.sign_in.recorded", known))
    # A token sealed with another key cannot be opened: dead-lettered, not retried.
    foreign = events_pb2.PasswordResetRequested(
        user_id="u",
        email="x@example.com",
        sealed_token=Sealer([Sealer.generate_key()]).seal("t"),
        expires_at=stamp(now + timedelta(hours=1)),
        occurred_at=stamp(now),
    )
    with pytest.raises(PermanentEventError):
        await dispatcher.handle(None, _event("auth.password_reset.requested", foreign))

    fresh = events_pb2.EmailVerificationRequested(
        user_id="u",
        email="new@example.com",
        sealed_token=sealer.seal("open-sesame"),
        expires_at=stamp(now + timedelta(hours=1)),
        occurred_at=stamp(now),
    )
    await dispatcher.handle(None, _event("auth.email_verification.requested", fresh))
    message = await mail_catcher.wait_for_async(timeout=10)
    assert message["To"] == "new@example.com"
    assert [m["To"] for m in mail_catcher.messages()] == ["new@example.com"]


class DropsTheDatabaseAfterSending:
    """The real SMTP sender; after its first email it terminates the email consumer's database
    connections, as a connection lost between the send and the commit would."""

    def __init__(self, sender: SmtpSender, database_url: str, application_name: str) -> None:
        self._sender = sender
        self._database_url = database_url
        self._application_name = application_name
        self.dropped = 0

    async def send(self, email: OutgoingEmail) -> None:
        await self._sender.send(email)
        if self.dropped:
            return
        conn = await asyncpg.connect(libpq_url(self._database_url))
        try:
            self.dropped = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                self._application_name,
            )
        finally:
            await conn.close()


async def test_each_email_is_sent_once_although_the_commit_after_it_failed(
    migrated_url: str, nats_url: str, mail_catcher: MailCatcher
) -> None:
    application_name = "email-sender-test"
    engine = create_engine(migrated_url, application_name=application_name, pool_size=3)
    nc = await connect_nats(nats_url, name="email-sender-test")
    try:
        js = nc.jetstream()
        await ensure_streams(js, [AUTH, DLQ])
        sender = DropsTheDatabaseAfterSending(
            SmtpSender(url=mail_catcher.smtp_url, sender="no-reply@example.com"),
            migrated_url,
            application_name,
        )
        consumer = email_consumer(
            nats=nc,
            session_factory=session_factory(engine),
            dispatcher=EmailDispatcher(
                templates=TEMPLATES,
                sender=sender,
                sealer=Sealer([Sealer.generate_key()]),
                clock=lambda: datetime.now(UTC),
            ),
            backoff=[0.1],
            outage_backoff=[0.1],
        )
        addresses = [f"user{n}@example.com" for n in range(3)]
        for address in addresses:
            event_id = str(uuid.uuid4())
            verified = events_pb2.UserEmailVerified(user_id=event_id, email=address, name="Ada")
            await js.publish(
                "auth.user.email_verified",
                verified.SerializeToString(),
                headers={
                    Headers.MSG_ID: event_id,
                    Headers.EVENT_ID: event_id,
                    Headers.EVENT_TYPE: verified.DESCRIPTOR.full_name,
                },
            )
        task = asyncio.create_task(consumer.run())
        try:
            deadline = time.monotonic() + 20
            while consumer.processed < len(addresses):
                assert time.monotonic() < deadline, "the emails were not all handled"
                await asyncio.sleep(0.05)
        finally:
            await consumer.stop(grace=10)
            await asyncio.wait_for(task, 10)
        assert sender.dropped >= 1  # the batch's transaction was lost after the first email
        assert consumer.outage_pauses >= 1
        received = sorted(str(message["To"]) for message in mail_catcher.messages())
        assert received == addresses  # one each: the retry found them in the effect ledger
    finally:
        await nc.close()
        await engine.dispose()
