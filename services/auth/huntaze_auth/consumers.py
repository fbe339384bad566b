"""The email sender: a durable consumer of the AUTH stream that turns events into emails.

| event                                | email                        |
|--------------------------------------|------------------------------|
| auth.email_verification.requested    | verification link            |
| auth.user.email_verified             | welcome                      |
| auth.password_reset.requested        | password-reset link          |
| auth.sign_in.recorded (new_device)   | new sign-in alert            |

Link tokens travel sealed in the events; only this consumer (holding the sealing key) opens
them. Each email is sent at most once per event: the consumer's effect ledger records it in a
transaction of its own before it goes out, so a retried batch (a failed commit, an outage)
does not send it again. A crash while sending loses that email rather than sending it twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.auth.v1 import events_pb2
from huntaze_auth.emails import EmailSender, EmailTemplates, OutgoingEmail
from huntaze_auth.models import SCHEMA
from huntaze_auth.sealing import Sealer, UnsealError
from huntaze_auth.streams import AUTH
from huntaze_kit.consumers import EventConsumer, PermanentEventError, ReceivedEvent
from huntaze_kit.effects import EffectLedger, EffectOutcome
from huntaze_kit.logging import get_logger

EMAIL_SENDER_DURABLE = "auth-email-sender"
EMAIL_EFFECT = "email"
VERIFICATION_REQUESTED = "auth.email_verification.requested"
EMAIL_VERIFIED = "auth.user.email_verified"
PASSWORD_RESET_REQUESTED = "auth.password_reset.requested"
SIGN_IN_RECORDED = "auth.sign_in.recorded"
EMAIL_SUBJECTS = (
    VERIFICATION_REQUESTED,
    EMAIL_VERIFIED,
    PASSWORD_RESET_REQUESTED,
    SIGN_IN_RECORDED,
)

log = get_logger(__name__)


def _datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


class EmailDispatcher:
    """Renders and sends the email an event calls for (the consumer's handler); with a ledger,
    at most once per event."""

    def __init__(
        self,
        *,
        templates: EmailTemplates,
        sender: EmailSender,
        sealer: Sealer,
        clock: Callable[[], datetime],
        ledger: EffectLedger | None = None,
    ) -> None:
        self._templates = templates
        self._sender = sender
        self._sealer = sealer
        self._clock = clock
        self._ledger = ledger

    def with_ledger(self, ledger: EffectLedger) -> EmailDispatcher:
        """The same dispatcher, sending each event's email at most once through `ledger`."""
        return EmailDispatcher(
            templates=self._templates,
            sender=self._sender,
            sealer=self._sealer,
            clock=self._clock,
            ledger=ledger,
        )

    def _unseal(self, sealed: bytes) -> str:
        try:
            return self._sealer.unseal(sealed)
        except UnsealError as exc:
            raise PermanentEventError("the token in this event cannot be unsealed") from exc

    async def handle(self, session: AsyncSession, event: ReceivedEvent) -> None:
        email = self.compose(event)
        if email is None:
            return
        if self._ledger is None:
            await self._sender.send(email)
        else:
            outcome = await self._ledger.once(
                event_id=event.event_id,
                effect=EMAIL_EFFECT,
                action=lambda: self._sender.send(email),
            )
            if outcome is not EffectOutcome.PERFORMED:
                return
        log.info("email_sent", subject=event.subject, event_id=str(event.event_id))

    def compose(self, event: ReceivedEvent) -> OutgoingEmail | None:
        """The email `event` calls for; None when there is none to send."""
        if event.subject == VERIFICATION_REQUESTED:
            verification = event.parse(events_pb2.EmailVerificationRequested)
            return self._link_email(event, verification, self._templates.verification)
        if event.subject == EMAIL_VERIFIED:
            verified = event.parse(events_pb2.UserEmailVerified)
            return self._templates.welcome(to=verified.email, name=verified.name)
        if event.subject == PASSWORD_RESET_REQUESTED:
            reset = event.parse(events_pb2.PasswordResetRequested)
            return self._link_email(event, reset, self._templates.password_reset)
        if event.subject == SIGN_IN_RECORDED:
            sign_in = event.parse(events_pb2.SignInRecorded)
            if not sign_in.new_device:
                return None
            return self._templates.sign_in_alert(
                to=sign_in.email,
                name=sign_in.name,
                ip_address=sign_in.ip_address,
                user_agent=sign_in.user_agent,
                when=_datetime(sign_in.occurred_at),
            )
        return None

    def _link_email(
        self,
        event: ReceivedEvent,
        request: events_pb2.EmailVerificationRequested | events_pb2.PasswordResetRequested,
        template: Callable[..., OutgoingEmail],
    ) -> OutgoingEmail | None:
        """An email carrying a one-time link; None when the link expired already."""
        if self._expired(request.expires_at, event):
            return None
        return template(
            to=request.email,
            name=request.name,
            token=self._unseal(request.sealed_token),
            valid_for=_datetime(request.expires_at) - _datetime(request.occurred_at),
        )

    def _expired(self, expires_at: Timestamp, event: ReceivedEvent) -> bool:
        """A link that expired before it could be sent is not worth sending."""
        if _datetime(expires_at) > self._clock():
            return False
        log.warning(
            "email_skipped_link_expired", subject=event.subject, event_id=str(event.event_id)
        )
        return True


def email_consumer(
    *,
    nats: NatsClient,
    session_factory: async_sessionmaker[AsyncSession],
    dispatcher: EmailDispatcher,
    **options: Any,
) -> EventConsumer:
    """The email sender; each email goes through the consumer's effect ledger. `options` are
    passed to `EventConsumer` (retry and outage timings)."""
    ledger = EffectLedger(
        session_factory=session_factory, schema=SCHEMA, consumer=EMAIL_SENDER_DURABLE
    )
    options.setdefault("fetch_wait", 1.0)
    # Emails go out one after another while the batch's transaction (which only records the
    # events as processed) stays open: small batches keep it short.
    options.setdefault("batch", 16)
    return EventConsumer(
        nats=nats,
        session_factory=session_factory,
        schema=SCHEMA,
        durable=EMAIL_SENDER_DURABLE,
        stream=AUTH.name,
        filter_subjects=EMAIL_SUBJECTS,
        handler=dispatcher.with_ledger(ledger).handle,
        **options,
    )
