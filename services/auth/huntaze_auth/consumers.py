"""The email sender: a durable consumer of the AUTH stream that turns events into emails.

| event                                | email                        |
|--------------------------------------|------------------------------|
| auth.email_verification.requested    | verification link            |
| auth.user.email_verified             | welcome                      |
| auth.password_reset.requested        | password-reset link          |
| auth.sign_in.recorded (new_device)   | new sign-in alert            |

Link tokens travel sealed in the events; only this consumer (holding the sealing key) opens
them. Delivery is at least once: a crash between sending and committing the inbox row sends
the email again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze.auth.v1 import events_pb2
from huntaze_auth.emails import EmailSender, EmailTemplates
from huntaze_auth.models import SCHEMA
from huntaze_auth.sealing import Sealer, UnsealError
from huntaze_auth.streams import AUTH
from huntaze_kit.consumers import EventConsumer, PermanentEventError, ReceivedEvent
from huntaze_kit.logging import get_logger

EMAIL_SENDER_DURABLE = "auth-email-sender"
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
    """Renders and sends the email an event calls for (the consumer's handler)."""

    def __init__(
        self,
        *,
        templates: EmailTemplates,
        sender: EmailSender,
        sealer: Sealer,
        clock: Callable[[], datetime],
    ) -> None:
        self._templates = templates
        self._sender = sender
        self._sealer = sealer
        self._clock = clock

    def _unseal(self, sealed: bytes) -> str:
        try:
            return self._sealer.unseal(sealed)
        except UnsealError as exc:
            raise PermanentEventError("the token in this event cannot be unsealed") from exc

    async def handle(self, session: AsyncSession, event: ReceivedEvent) -> None:
        if event.subject == VERIFICATION_REQUESTED:
            verification = event.parse(events_pb2.EmailVerificationRequested)
            if self._expired(verification.expires_at, event):
                return
            await self._sender.send(
                self._templates.verification(
                    to=verification.email,
                    name=verification.name,
                    token=self._unseal(verification.sealed_token),
                    valid_for=_datetime(verification.expires_at)
                    - _datetime(verification.occurred_at),
                )
            )
        elif event.subject == EMAIL_VERIFIED:
            verified = event.parse(events_pb2.UserEmailVerified)
            await self._sender.send(self._templates.welcome(to=verified.email, name=verified.name))
        elif event.subject == PASSWORD_RESET_REQUESTED:
            reset = event.parse(events_pb2.PasswordResetRequested)
            if self._expired(reset.expires_at, event):
                return
            await self._sender.send(
                self._templates.password_reset(
                    to=reset.email,
                    name=reset.name,
                    token=self._unseal(reset.sealed_token),
                    valid_for=_datetime(reset.expires_at) - _datetime(reset.occurred_at),
                )
            )
        elif event.subject == SIGN_IN_RECORDED:
            sign_in = event.parse(events_pb2.SignInRecorded)
            if not sign_in.new_device:
                return
            await self._sender.send(
                self._templates.sign_in_alert(
                    to=sign_in.email,
                    name=sign_in.name,
                    ip_address=sign_in.ip_address,
                    user_agent=sign_in.user_agent,
                    when=_datetime(sign_in.occurred_at),
                )
            )
        else:
            return
        log.info("email_sent", subject=event.subject, event_id=str(event.event_id))

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
) -> EventConsumer:
    return EventConsumer(
        nats=nats,
        session_factory=session_factory,
        schema=SCHEMA,
        durable=EMAIL_SENDER_DURABLE,
        stream=AUTH.name,
        filter_subjects=EMAIL_SUBJECTS,
        handler=dispatcher.handle,
        fetch_wait=1.0,
    )
