"""`python -m huntaze_gateway`: the gateway under uvicorn (uvloop, httptools), logging through
structlog (uvicorn's own access log is off: the edge middleware logs each request), with its
metrics at `/metrics` on a port of their own (`HUNTAZE_GATEWAY_METRICS_PORT`), off the API."""

from __future__ import annotations

import uvicorn

from huntaze_gateway.app import create_app
from huntaze_gateway.config import GatewaySettings
from huntaze_kit.logging import configure_logging, get_logger
from huntaze_kit.metrics import MetricsServer
from huntaze_kit.process import settle_heap


def main() -> None:
    settings = GatewaySettings()
    configure_logging(service="gateway", level=settings.log_level, fmt=settings.log_format)
    get_logger(__name__).info(
        "gateway_listening", url=f"http://{settings.gateway_host}:{settings.gateway_port}"
    )
    app = create_app(settings)
    metrics = MetricsServer(host=settings.gateway_host, port=settings.gateway_metrics_port)
    metrics.start()
    # Start-up is done but for the lifespan's few clients: settle the heap for serving.
    settle_heap()
    try:
        uvicorn.run(
            app,
            host=settings.gateway_host,
            port=settings.gateway_port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            # Client addresses come from the trusted-proxy setting, not from uvicorn.
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.grace_seconds)),
        )
    finally:
        metrics.stop()


if __name__ == "__main__":
    main()
