"""`gpupack webhook` (serve the admission webhook) and `gpupack webhook-config` (print its configuration).

Options left out fall back to GPUPACK_WEBHOOK_* environment variables, then to the defaults of
WebhookSettings; a configuration it refuses stops the command with the reason, exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from scheduler.logfmt import HELP as FORMAT_HELP
from scheduler.loglevel import HELP as LOG_HELP
from scheduler.metricsport import HELP as METRICS_HELP
from scheduler.metricsport import HOST_HELP as METRICS_HOST_HELP
from webhook.settings import WebhookSettings


def _settings(**given: Any) -> WebhookSettings:
    try:
        return WebhookSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        msgs = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        typer.echo(f"gpupack webhook: bad configuration: {msgs}", err=True)
        raise typer.Exit(2) from None


def webhook(
    host: Annotated[str | None, typer.Option(help="address to listen on (default 0.0.0.0)")] = None,
    port: Annotated[int | None, typer.Option(help="TLS port (default 9443)")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain; re-read when the file changes")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key; re-read when the file changes")] = None,
    scheduler_name: Annotated[str | None, typer.Option(help="schedulerName for GPU pods")] = None,
    runtime_class: Annotated[str | None, typer.Option(help="runtimeClassName for GPU pods (e.g. nvidia)")] = None,
    max_gpus_per_node: Annotated[int | None, typer.Option(
        help="deny pods asking more whole GPUs (default 8)")] = None,
    model_affinity: Annotated[bool | None, typer.Option(
        "--model-affinity/--no-model-affinity", help="required affinity on nvidia.com/gpu.product")] = None,
    insecure_http: Annotated[bool | None, typer.Option(
        "--insecure-http", help="plain HTTP on a loopback address, for local trials")] = None,
    log_level: Annotated[str | None, typer.Option(help=LOG_HELP + " (default info)")] = None,
    log_format: Annotated[str | None, typer.Option(help=FORMAT_HELP + " (default text)")] = None,
    access_log: Annotated[bool | None, typer.Option("--access-log", help="uvicorn's access log, in the log format")]
    = None,
    metrics_host: Annotated[str | None, typer.Option(help=METRICS_HOST_HELP + " (default 127.0.0.1)")] = None,
    metrics_port: Annotated[int | None, typer.Option(help=METRICS_HELP + " (default 9401)")] = None,
) -> None:
    """Serve the mutating admission webhook (POST /mutate, GET /healthz; GET /metrics on --metrics-port)."""
    settings = _settings(host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, scheduler_name=scheduler_name,
                         runtime_class=runtime_class, max_gpus_per_node=max_gpus_per_node,
                         model_affinity=model_affinity, insecure_http=insecure_http, log_level=log_level,
                         log_format=log_format, access_log=access_log, metrics_host=metrics_host,
                         metrics_port=metrics_port)
    from webhook.server import serve  # uvicorn only when serving

    try:
        serve(settings)
    except OSError as e:  # the metrics port (or the TLS port) is taken
        typer.echo(f"gpupack webhook: cannot listen: {e}", err=True)
        raise typer.Exit(2) from None


def webhook_config(
    ca_file: Annotated[Path | None, typer.Option(
        help="PEM CA certificate that signed the webhook's certificate; without it no caBundle "
             "(the manifests' form, filled in by cert-manager or the certgen Job)")] = None,
    namespace: Annotated[str, typer.Option(help="namespace of the webhook Service")] = "gpupack-system",
    service: Annotated[str, typer.Option(help="name of the webhook Service")] = "gpupack-webhook",
    url: Annotated[str, typer.Option(help="https URL instead of the Service (out-of-cluster webhook)")] = "",
    failure_policy: Annotated[str, typer.Option(help="Fail or Ignore")] = "Fail",
) -> None:
    """Print the MutatingWebhookConfiguration (YAML): namespaces opt in with gpupack.io/webhook=enabled."""
    from webhook.manifest import manifest_text, webhook_configuration

    try:
        doc = webhook_configuration(ca_pem=ca_file.read_bytes() if ca_file else None, namespace=namespace,
                                    service=service, url=url, failure_policy=failure_policy)
    except (OSError, ValueError) as e:
        typer.echo(f"gpupack webhook-config: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(manifest_text(doc), nl=False)


def webhook_dra_templates(
    namespace: Annotated[str, typer.Argument(help="the namespace that opts in to DRA (allocate mode)")],
    max_gpus_per_node: Annotated[int, typer.Option(help="the largest GPU node of the cluster")] = 8,
) -> None:
    """Print the ResourceClaimTemplates the webhook names in a DRA namespace (YAML, for kubectl apply -f -)."""
    import yaml

    from webhook.dra import templates

    typer.echo(yaml.safe_dump_all(templates(namespace, max_gpus_per_node), sort_keys=False), nl=False)


def register(app: typer.Typer) -> None:
    app.command("webhook")(webhook)
    app.command("webhook-config")(webhook_config)
    app.command("webhook-dra-templates")(webhook_dra_templates)
