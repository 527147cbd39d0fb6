"""The webhook's HTTP edge (FastAPI): POST /mutate (AdmissionReview v1), GET /healthz.

Its metrics (`Metrics.registry`) are served on a port of their own by webhook/server.py, never here
next to /mutate on the TLS port.

The body is read by hand, capped in size and time, and parsed once with orjson; a body that is not
an AdmissionReview gets HTTP 400 with a Status message, every other outcome an AdmissionReview
response. Nothing a client sends ends in a 500: an unexpected failure is logged and answered as a
denial with code 500 (the apiserver then applies the webhook's failurePolicy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from scheduler.logfmt import about
from webhook.admit import PREFIX, Policy
from webhook.review import BadReview, Review, decide, parse_review, respond, review_response
from webhook.settings import WebhookSettings

log = logging.getLogger("gpupack.webhook")
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Metrics:
    """The webhook's Prometheus series, on a registry of its own (tests build many apps)."""

    registry: CollectorRegistry
    admissions: Counter
    latency: Histogram
    cert_reloads: Counter

    @classmethod
    def create(cls) -> Metrics:
        reg = CollectorRegistry()
        ProcessCollector(registry=reg)  # process_cpu_seconds_total etc.: CPU per review, independent of load
        return cls(
            registry=reg,
            admissions=Counter("gpupack_webhook_admissions", "Admission reviews answered, by result",
                               ["result"], registry=reg),
            latency=Histogram("gpupack_webhook_admission_seconds", "Time to answer one admission review",
                              buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0), registry=reg),
            cert_reloads=Counter("gpupack_webhook_cert_reloads", "Certificate reloads, by result", ["result"],
                                 registry=reg),
        )

    def on_reload(self, ok: bool) -> None:
        self.cert_reloads.labels("ok" if ok else "failed").inc()


class _TooLarge(Exception):
    pass


def _status(code: int, reason: str, message: str) -> Response:
    """A plain HTTP error in the shape of a Kubernetes Status, for bodies that are no AdmissionReview."""
    doc = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
           "message": PREFIX + message}
    return Response(orjson.dumps(doc), status_code=code, media_type=JSON)


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, or _TooLarge / TimeoutError: a slow or huge body cannot hold a worker."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)

    await asyncio.wait_for(collect(), timeout_s)
    return b"".join(chunks)


def create_app(settings: WebhookSettings, metrics: Metrics | None = None) -> FastAPI:
    """The webhook ASGI app for one configuration."""
    m = metrics or Metrics.create()
    policy = Policy(scheduler_name=settings.scheduler_name, runtime_class=settings.runtime_class,
                    max_gpus_per_node=settings.max_gpus_per_node, model_affinity=settings.model_affinity,
                    dra_namespaces=settings.dra_namespace_set)
    app = FastAPI(title="gpupack webhook", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = m
    app.state.policy = policy

    async def mutate(request: Request) -> Response:
        start = time.perf_counter()
        result, resp = _answer(await _body_or_error(request), policy)
        m.admissions.labels(result).inc()
        m.latency.observe(time.perf_counter() - start)
        return resp

    async def _body_or_error(request: Request) -> bytes | Response:
        try:
            return await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        except _TooLarge:
            return _status(413, "RequestEntityTooLarge", f"body over {settings.max_body_bytes} bytes")
        except TimeoutError:
            return _status(408, "Timeout", f"body not received within {settings.body_timeout_s:g} s")

    # a plain Starlette route: the body is read by hand, so FastAPI's parameter solving is pure overhead (~0.1 ms)
    app.add_route("/mutate", mutate, methods=["POST"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok", media_type="text/plain")

    return app


def _answer(body: bytes | Response, policy: Policy) -> tuple[str, Response]:
    if isinstance(body, Response):
        return "invalid", body
    try:
        review = parse_review(body)
    except BadReview as e:
        return "invalid", _status(400, "BadRequest", str(e))
    doc: dict[str, Any]
    try:
        d = decide(review, policy)
    except BadReview as e:
        return "invalid", _status(400, "BadRequest", str(e))
    except Exception:  # a bug must not turn into a crash or a hang; the apiserver's failurePolicy decides
        log.exception("admission of %s failed", review.uid, extra=about(_pod(review)))
        doc = review_response(uid=review.uid, allowed=False, code=500, reason="InternalError",
                              message=PREFIX + "internal error in the webhook; see its log")
        return "error", Response(orjson.dumps(doc), media_type=JSON)
    if d.allowed is False:
        log.info("denied %s: %s", review.uid, d.message, extra=about(_pod(review)))
    return d.result, Response(orjson.dumps(respond(review, d)), media_type=JSON)


def _pod(review: Review) -> str:
    """namespace/name of the reviewed pod for the log (generateName and a * before the apiserver names it)."""
    meta = review.obj.get("metadata") if isinstance(review.obj, dict) else None
    if not isinstance(meta, dict):
        return ""
    name = meta.get("name") or (f"{meta['generateName']}*" if meta.get("generateName") else "")
    return f"{meta.get('namespace') or ''}/{name}" if name else ""
