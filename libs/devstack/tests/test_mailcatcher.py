from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from huntaze_devstack.embedded import free_port, port_accepts
from huntaze_devstack.mailcatcher import MailCatcher


def _send(smtp_port: int, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "noreply@huntaze.test"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"Hello {to}")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.send_message(message)


async def test_catches_mail_sent_over_smtp(mail_catcher: MailCatcher) -> None:
    assert mail_catcher.smtp_url == f"smtp://127.0.0.1:{mail_catcher.port}"
    await asyncio.to_thread(_send, mail_catcher.port, "first@example.com", "One")
    await asyncio.to_thread(_send, mail_catcher.port, "second@example.com", "Two")

    found = await mail_catcher.wait_for_async(lambda m: m["To"] == "second@example.com")
    assert found["Subject"] == "Two"
    assert "Hello second@example.com" in found.get_content()

    subjects = [m["Subject"] for m in mail_catcher.messages()]
    assert subjects == ["One", "Two"]
    assert all(path.suffix == ".eml" for path in mail_catcher.paths())
    assert mail_catcher.messages()[0]["Return-Path"] == "<noreply@huntaze.test>"


def test_wait_for_blocks_until_the_message_arrives(mail_catcher: MailCatcher) -> None:
    sender = threading.Timer(0.2, _send, args=(mail_catcher.port, "late@example.com", "Late"))
    sender.start()
    try:
        found = mail_catcher.wait_for(lambda m: m["Subject"] == "Late", timeout=10)
        assert found["To"] == "late@example.com"
    finally:
        sender.join()

    mail_catcher.clear()
    assert mail_catcher.messages() == []
    try:
        mail_catcher.wait_for(timeout=0.1)
    except TimeoutError:
        pass
    else:
        raise AssertionError("wait_for should time out on an empty mailbox")


def test_runs_standalone(tmp_path: Path) -> None:
    port = free_port()
    maildir = tmp_path / "mail"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "huntaze_devstack.mailcatcher",
            "--port",
            str(port),
            "--dir",
            str(maildir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not port_accepts("127.0.0.1", port):
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "mail catcher did not start"
            time.sleep(0.05)
        _send(port, "standalone@example.com", "Standalone")
        reader = MailCatcher(maildir)
        assert reader.wait_for(timeout=10)["Subject"] == "Standalone"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
