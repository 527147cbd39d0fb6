"""`gpupack serve`: the extender under uvicorn. Flags override GPUPACK_* variables; bad settings stop it."""

from __future__ import annotations

import gc
import ssl
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from scheduler.logfmt import HELP as FORMAT_HELP
from scheduler.logfmt import setup as setup_logging
from scheduler.loglevel import HELP as LOG_HELP
from scheduler.metricsport import HELP as METRICS_HELP
from scheduler.metricsport import HOST_HELP as METRICS_HOST_HELP
from scheduler.metricsport import serve_metrics
from scheduler.settings import Settings, describe
from scheduler.state.standalone import InvalidCluster


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def _default(name: str) -> str:
    """The Settings default shown in --help (flags default to None so GPUPACK_* variables still apply)."""
    value = Settings.model_fields[name].default
    return "none" if value in (None, "") else str(value)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on", show_default=_default("host"))] = None,
    port: Annotated[int | None, typer.Option(help="Port", show_default=_default("port"))] = None,
    url_prefix: Annotated[str | None, typer.Option(
        help="Path before the verbs, e.g. /gpupack", show_default=_default("url_prefix"))] = None,
    kubeconfig: Annotated[Path | None, typer.Option(
        help="Live mode: kubeconfig of the cluster", show_default=_default("kubeconfig"))] = None,
    in_cluster: Annotated[bool, typer.Option("--in-cluster", help="Live mode: the pod's service account")] = False,
    cluster: Annotated[Path | None, typer.Option(
        help="Standalone mode: a YAML/JSON cluster file", show_default=_default("cluster"))] = None,
    log_level: Annotated[str | None, typer.Option(help=LOG_HELP, show_default=_default("log_level"))] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve HTTPS with this certificate (and --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(
        help="Require client certificates signed by this CA (kube-scheduler's extender tlsConfig)")] = None,
    allow_unauthenticated_remote: Annotated[bool, typer.Option(
        "--allow-unauthenticated-remote",
        help="Listen on a non-loopback --host without client certificates (anyone who reaches the port "
             "can bind pods): only behind a NetworkPolicy that admits kube-scheduler alone")] = False,
    log_format: Annotated[str | None, typer.Option(help=FORMAT_HELP, show_default=_default("log_format"))] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="uvicorn's access log, in the log format")] = False,
    metrics_host: Annotated[str | None, typer.Option(
        help=METRICS_HOST_HELP, show_default=_default("metrics_host"))] = None,
    metrics_port: Annotated[int | None, typer.Option(help=METRICS_HELP, show_default=_default("metrics_port"))] = None,
    shortlist: Annotated[int | None, typer.Option(
        help="Filter passes at most this many of gpupack's best nodes (ties kept) to pods without soft "
             "preferences of their own; kube-scheduler then scores only those. 0: every fitting node",
        show_default=_default("shortlist"))] = None,
) -> None:
    """Serve the kube-scheduler extender verbs (filter, prioritize, bind, preempt).

    With neither --kubeconfig, --in-cluster nor --cluster it serves the embedded demo cluster.
    Every flag is also a GPUPACK_<NAME> variable (GPUPACK_PORT=9000); a flag wins.
    """
    import uvicorn

    from scheduler.extender.app import create_app

    flags: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port), ("url_prefix", url_prefix),
                                               ("kubeconfig", kubeconfig), ("cluster", cluster),
                                               ("log_level", log_level), ("tls_cert", tls_cert),
                                               ("tls_key", tls_key), ("tls_client_ca", tls_client_ca),
                                               ("log_format", log_format), ("metrics_host", metrics_host),
                                               ("metrics_port", metrics_port), ("shortlist", shortlist))
                             if v is not None}
    if in_cluster:
        flags["in_cluster"] = True
    if allow_unauthenticated_remote:
        flags["allow_unauthenticated_remote"] = True
    if access_log:
        flags["access_log"] = True
    try:
        settings = Settings(**flags)
        app = create_app(settings)
    except ValidationError as e:
        typer.echo(f"gpupack serve: {describe(e)}", err=True)
        raise typer.Exit(2) from None
    except (InvalidCluster, OSError) as e:
        typer.echo(f"gpupack serve: bad setting GPUPACK_CLUSTER (--cluster): {e}", err=True)
        raise typer.Exit(2) from None
    except Exception as e:  # e.g. a kubeconfig the client cannot load
        typer.echo(f"gpupack serve: cannot reach the cluster ({settings.mode} mode): {e}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    try:  # the same registry as the verbs' /metrics, on a port Prometheus can reach
        serve_metrics(settings.metrics_host, settings.metrics_port, app.state.gpupack.metrics.registry)
    except OSError as e:
        typer.echo(f"gpupack serve: bad setting GPUPACK_METRICS_PORT (--metrics-port): {e}", err=True)
        raise typer.Exit(2) from None
    gc.set_threshold(10_000, 20, 50)  # a 500-Node request allocates ~100k objects: fewer young collections
    tls: dict[str, Any] = {}
    if settings.tls_cert is not None:
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
        if settings.tls_client_ca is not None:
            tls |= {"ssl_ca_certs": str(settings.tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, log_config=None,
                access_log=settings.access_log, timeout_graceful_shutdown=5, **tls)
