"""Run the webhook app under uvicorn over TLS, with the certificate pair reloaded when its files change.

uvicorn builds its SSLContext from file names once; where uvicorn.Config has `ssl_context_factory`
(recent releases) it hands uvicorn the CertReloader's context instead. Older uvicorn gets the same
context by loading the Config first and replacing `config.ssl`, which Server.startup passes to
loop.create_server.
"""

from __future__ import annotations

import gc
import inspect
import ssl
from collections.abc import Callable

import uvicorn

from scheduler.logfmt import setup as setup_logging
from scheduler.metricsport import MetricsServer, serve_metrics
from webhook.app import Metrics, create_app
from webhook.settings import WebhookSettings
from webhook.tls import CertReloader

HAS_SSL_FACTORY = "ssl_context_factory" in inspect.signature(uvicorn.Config).parameters


def build_server(
    settings: WebhookSettings, metrics: Metrics | None = None,
) -> tuple[uvicorn.Server, CertReloader | None]:
    """A ready uvicorn.Server for `settings` (not started) and its certificate reloader (None over plain HTTP)."""
    m = metrics or Metrics.create()
    reloader = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        reloader = CertReloader(settings.tls_cert, settings.tls_key, on_reload=m.on_reload)
    kw: dict[str, object] = {}
    factory_ok = HAS_SSL_FACTORY
    if reloader is not None and factory_ok:
        ctx = reloader.context

        def factory(_cfg: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return ctx

        kw["ssl_context_factory"] = factory
    config = uvicorn.Config(
        create_app(settings, m), host=settings.host, port=settings.port, log_level=settings.log_level,
        log_config=None, access_log=settings.access_log, lifespan="off",  # logging: scheduler/logfmt.py
        timeout_keep_alive=30,  # the apiserver keeps connections open
        limit_concurrency=1000, **kw,  # type: ignore[arg-type]
    )
    if reloader is not None and not factory_ok:
        config.load()
        config.ssl = reloader.context
    return uvicorn.Server(config), reloader


def start_metrics(settings: WebhookSettings, metrics: Metrics) -> MetricsServer | None:
    """The webhook's /metrics on its own plain-HTTP port (none on the TLS port next to /mutate)."""
    return serve_metrics(settings.metrics_host, settings.metrics_port, metrics.registry)


def serve(settings: WebhookSettings) -> None:
    """Serve until SIGINT/SIGTERM."""
    setup_logging(settings.log_level, settings.log_format)
    m = Metrics.create()
    server, _ = build_server(settings, m)
    start_metrics(settings, m)
    # Everything imported so far (FastAPI, pydantic, numpy, OR-Tools...) lives forever: keep it out of
    # the collector's full passes, which otherwise stall an admission for milliseconds now and then.
    gc.collect()
    gc.freeze()
    server.run()
