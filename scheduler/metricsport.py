"""Every component's Prometheus metrics on a port of their own, next to (never on) its serving port.

The extender's verbs stay on the loopback and the webhook's /mutate on TLS; `/metrics` is served
here, plain HTTP, by prometheus_client's threaded server, so a Prometheus inside the cluster can
scrape it (the manifests bind 0.0.0.0 and name the port `metrics`). Defaults: extender 9400,
webhook 9401, agent 9402; 0 switches it off.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.registry import Collector

log = logging.getLogger("gpupack.metrics")
EXTENDER_PORT, WEBHOOK_PORT, AGENT_PORT = 9400, 9401, 9402
HELP = "Prometheus /metrics port, plain HTTP, apart from the serving port (0: off)"
HOST_HELP = "address the metrics port listens on (0.0.0.0 in a pod, so Prometheus can scrape it)"


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(host: str, port: int, registry: Collector = REGISTRY) -> MetricsServer | None:
    """Serve `registry` on host:port in a daemon thread (None when port is 0); OSError if the port is taken."""
    if not port:
        return None
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return MetricsServer(server, thread)
