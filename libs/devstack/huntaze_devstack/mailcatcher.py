"""A local SMTP server that keeps every message it receives in a Maildir.

Services send mail to it exactly as they would to a real relay (`HUNTAZE_SMTP_URL`); a developer
reads the messages in the directory (each one an `.eml`-style file under `new/`) or with any mail
client that opens a Maildir, and tests read them back with `messages()` and `wait_for()`.

Standalone: `python -m huntaze_devstack.mailcatcher --port 2525 --dir .huntaze/mail`.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from huntaze_devstack.embedded import LOOPBACK, free_port

Predicate = Callable[[EmailMessage], bool]


class _Deliver:
    """aiosmtpd handler: writes each accepted message into the Maildir."""

    def __init__(self, catcher: MailCatcher) -> None:
        self._catcher = catcher

    async def handle_DATA(  # noqa: N802 (the name aiosmtpd calls)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self._catcher.deliver(envelope.mail_from or "", list(envelope.rcpt_tos), envelope.content)
        return "250 Message accepted for delivery"


class MailCatcher:
    """SMTP on `host:port` (a free port when 0), messages kept in the Maildir `maildir`."""

    def __init__(self, maildir: Path, host: str = LOOPBACK, port: int = 0) -> None:
        self.maildir = Path(maildir).expanduser().absolute()
        self.host = host
        self.port = port or free_port(host)
        self._controller: Controller | None = None
        self._arrived = threading.Condition()
        self._counter = 0
        self._hostname = socket.gethostname().replace("/", "_").replace(":", "_")

    @property
    def smtp_url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> str:
        """Creates the Maildir when missing, starts listening, returns `smtp_url`."""
        if self._controller is not None:
            return self.smtp_url
        mailbox.Maildir(self.maildir, create=True)
        controller = Controller(
            _Deliver(self),
            hostname=self.host,
            port=self.port,
            server_hostname="huntaze-mailcatcher",
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller
        return self.smtp_url

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def deliver(self, mail_from: str, rcpt_tos: list[str], content: bytes | str | None) -> Path:
        """Stores one message the way a Maildir delivery agent does (`tmp/`, then `new/`).

        File names start with the arrival time in nanoseconds, so sorting them gives arrival order.
        """
        raw = content.encode() if isinstance(content, str) else (content or b"")
        envelope = (
            f"Return-Path: <{mail_from}>\r\nX-Original-To: {', '.join(rcpt_tos)}\r\n"
        ).encode()
        with self._arrived:
            self._counter += 1
            name = f"{time.time_ns():020d}.P{os.getpid()}Q{self._counter}.{self._hostname}"
            temporary = self.maildir / "tmp" / name
            temporary.write_bytes(envelope + raw)
            final = self.maildir / "new" / f"{name}.eml"
            temporary.rename(final)
            self._arrived.notify_all()
        return final

    def paths(self) -> list[Path]:
        """Every stored message file, oldest first."""
        files = [
            path
            for folder in ("new", "cur")
            if (self.maildir / folder).is_dir()
            for path in (self.maildir / folder).iterdir()
            if path.is_file()
        ]
        return sorted(files, key=lambda path: path.name)

    def messages(self) -> list[EmailMessage]:
        """Every stored message, parsed, oldest first (newest last)."""
        parser = BytesParser(policy=policy.default)
        parsed: list[EmailMessage] = []
        for path in self.paths():
            message = parser.parsebytes(path.read_bytes())
            if isinstance(message, EmailMessage):
                parsed.append(message)
        return parsed

    def clear(self) -> None:
        """Deletes every stored message."""
        with self._arrived:
            for path in self.paths():
                path.unlink(missing_ok=True)

    def _first_match(self, predicate: Predicate | None) -> EmailMessage | None:
        matches = [m for m in self.messages() if predicate is None or predicate(m)]
        return matches[-1] if matches else None

    def wait_for(self, predicate: Predicate | None = None, timeout: float = 10.0) -> EmailMessage:
        """Blocks until a stored message satisfies `predicate` (any message when None).

        Returns the newest such message; raises TimeoutError after `timeout` seconds. From a
        coroutine whose event loop also runs the sender, use `wait_for_async` instead.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = self._first_match(predicate)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching message in {self.maildir} after {timeout}s")
                self._arrived.wait(min(remaining, 0.25))

    async def wait_for_async(
        self,
        predicate: Predicate | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 (mirrors wait_for)
    ) -> EmailMessage:
        """`wait_for` that leaves the event loop free while it waits."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._first_match(predicate)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching message in {self.maildir} after {timeout}s")
            await asyncio.sleep(0.02)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local SMTP server that keeps mail in a Maildir.")
    parser.add_argument("--host", default=LOOPBACK, help="address to listen on")
    parser.add_argument("--port", type=int, default=2525, help="port to listen on")
    parser.add_argument("--dir", type=Path, default=Path(".huntaze/mail"), help="the Maildir")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    with MailCatcher(args.dir, args.host, args.port) as catcher:
        print(f"mail catcher on {catcher.smtp_url}, messages in {catcher.maildir}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
