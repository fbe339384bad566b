"""structlog JSON logging with a request id that follows a request across gRPC and NATS.

Loggers filter by level before doing any work: a call below the configured level is a no-op
that formats nothing. Code that would compute something only to log it at a low level asks
`enabled_for(level)` first.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

REQUEST_ID_METADATA_KEY = "x-request-id"
REQUEST_ID_HEADER = "Huntaze-Request-Id"

_request_id: ContextVar[str | None] = ContextVar("huntaze_request_id", default=None)


class _Threshold:
    """The configured level; until `configure_logging` runs, structlog's defaults print every
    level."""

    level = logging.NOTSET


def _add_request_id(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Adds the current request id to each record (read only when a record is made)."""
    request_id = _request_id.get()
    if request_id is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def level_number(level: str) -> int:
    """`"INFO"` -> 20; a ValueError for a name the logging module does not know."""
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(*, service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Routes stdlib and structlog records through one JSON (or console) renderer."""
    threshold = level_number(level)
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Filters on the method called: below the threshold it returns at once.
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    structlog.contextvars.bind_contextvars(service=service)
    _Threshold.level = threshold


def enabled_for(level: int) -> bool:
    """Whether a record of `level` would be written."""
    return level >= _Threshold.level


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger


class _RequestIds:
    """A random per-process prefix and a counter: making an id costs no system call."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_request_ids = _RequestIds()
# A forked child must not repeat its parent's ids.
os.register_at_fork(after_in_child=_request_ids.reseed)


def new_request_id() -> str:
    """32 hex digits, unique across processes (random prefix) and within one (counter)."""
    return _request_ids.next()


def current_request_id() -> str | None:
    return _request_id.get()


class _RequestContext(AbstractContextManager[str]):
    # A class, not a generator-based context manager: it runs around every request.
    __slots__ = ("_request_id", "_token")
    _token: Token[str | None]

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id

    def __enter__(self) -> str:
        self._token = _request_id.set(self._request_id)
        return self._request_id

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _request_id.reset(self._token)


def request_context(request_id: str | None) -> AbstractContextManager[str]:
    """Binds a request id (a new one when none is given) to logs and outgoing calls."""
    return _RequestContext(request_id or new_request_id())
