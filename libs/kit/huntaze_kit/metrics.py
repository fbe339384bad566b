"""Prometheus metrics: the per-call families every server records, and the HTTP endpoint that
serves the process's default registry (`/metrics`, on a port of its own, off the public API).

Every family is defined once, here or next to the code that counts (the outbox relay and the
consumers define theirs), in prometheus-client's default registry; `MetricsServer` serves all of
them. Recording a call costs a dictionary look-up, a counter increment and a histogram
observation: the labelled children are made once per label values and kept, so no call builds
label tuples or takes the registry's lock.
"""

from __future__ import annotations

from threading import Thread
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from huntaze_kit.logging import get_logger

log = get_logger(__name__)

RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "gRPC calls completed by the server, by method and status code.",
    ("grpc_method", "grpc_code"),
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time the server took to complete a gRPC call, by method and status code.",
    ("grpc_method", "grpc_code"),
)
HTTP_HANDLED = Counter(
    "http_server_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ("method", "route", "status"),
)
HTTP_SECONDS = Histogram(
    "http_server_request_duration_seconds",
    "Time taken to answer an HTTP request, by method, route template and status.",
    ("method", "route", "status"),
)

_Children = tuple[Counter, Histogram]


class RpcMetrics:
    """The counters of one gRPC method; one per method, made when its handler is wrapped."""

    __slots__ = ("_by_code", "_method")

    def __init__(self, method: str) -> None:
        self._method = method
        self._by_code: dict[grpc.StatusCode, _Children] = {}

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        children = self._by_code.get(code)
        if children is None:
            children = self._by_code[code] = (
                RPC_HANDLED.labels(self._method, code.name),
                RPC_SECONDS.labels(self._method, code.name),
            )
        children[0].inc()
        children[1].observe(seconds)


class HttpMetrics:
    """The counters of HTTP requests, by method, route template and status.

    `route` is the template (`/api/crm/fans/{fan_id}`), never the path, so that the number of
    series stays bounded; requests that matched no route count under `unmatched`.
    """

    UNMATCHED = "unmatched"

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], _Children] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self._children[key] = (
                HTTP_HANDLED.labels(*labels),
                HTTP_SECONDS.labels(*labels),
            )
        children[0].inc()
        children[1].observe(seconds)


class MetricsServer:
    """Serves the default registry at `/metrics` over HTTP from a daemon thread.

    `port` 0 takes a free port (tests); after `start()`, `port` is the one bound.
    """

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def start(self) -> int:
        self._server, self._thread = start_http_server(self.port, addr=self.host)
        self.port = self._server.server_port
        log.info("metrics_serving", url=f"http://{self.host}:{self.port}/metrics")
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
