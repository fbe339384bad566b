"""Fixtures of the AI agent's tests: an HTTP server speaking the OpenAI chat completions API
(OpenAI and Azure paths), scripted to fail, stall or rate-limit, which records what it was sent;
and a fresh database with the `ai` schema."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from huntaze_ai_agent.models import SCHEMA
from huntaze_kit.db import create_engine, session_factory
from huntaze_kit.migrations import upgrade_async

MIGRATIONS_PACKAGE = "huntaze_ai_agent.migrations"


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body["messages"])

    @property
    def fan_data(self) -> dict[str, Any]:
        """The JSON document of the last (user) message."""
        content = self.messages[-1]["content"]
        return dict(json.loads(content[content.index("{") :]))


@dataclass
class Failure:
    """A scripted answer instead of a completion: a status, or a stall of `delay` seconds."""

    status: int = 500
    delay: float = 0.0
    retry_after_ms: int | None = 10


@dataclass
class FakeOpenAI:
    """What the server answers: scripted failures first, then `answer(request body)`."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    answer: Callable[[dict[str, Any]], str] = lambda body: "Hey you! 😘 missed you"
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_failure(self) -> Failure | None:
        with self.lock:
            return self.failures.pop(0) if self.failures else None


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            url = urlsplit(self.path)
            with fake.lock:
                fake.requests.append(
                    Recorded(
                        url.path,
                        parse_qs(url.query),
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
            failure = fake.next_failure()
            if failure is not None:
                if failure.delay:
                    time.sleep(failure.delay)
                headers = {}
                if failure.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(failure.retry_after_ms)
                error = {"error": {"message": "scripted failure", "type": "server_error"}}
                # After a stall the client may have timed out and hung up already.
                with contextlib.suppress(OSError):
                    self._reply(failure.status, error, headers)
                return
            if fake.delay:
                time.sleep(fake.delay)
            text = fake.answer(body)
            completion = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or "azure-deployment",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
            }
            self._reply(200, completion, {})

    return Handler


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh database migrated to the `ai` schema's head."""
    await upgrade_async(database_url, package=MIGRATIONS_PACKAGE, schema=SCHEMA)
    engine = create_engine(database_url, application_name="ai-agent-tests", pool_size=2)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
