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
        access_log=False, lifespan="off", timeout_keep_alive=30,  # the apiserver keeps connections open
        limit_concurrency=1000, **kw,  # type: ignore[arg-type]
    )
    if reloader is not None and not factory_ok:
        config.load()
        config.ssl = reloader.context
    return uvicorn.Server(config), reloader


def serve(settings: WebhookSettings) -> None:
    """Serve until SIGINT/SIGTERM."""
    server, _ = build_server(settings)
    # Everything imported so far (FastAPI, pydantic, numpy, OR-Tools...) lives forever: keep it out of
    # the collector's full passes, which otherwise stall an admission for milliseconds now and then.
    gc.collect()
    gc.freeze()
    server.run()
