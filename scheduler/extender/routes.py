"""The HTTP verbs: filter, prioritize, bind, preempt, and /healthz, /readyz, /metrics.

Each verb reads the raw body (capped: 413 past the limit; 408 when it has not arrived within
body_timeout_s), parses it with wire.py (413 past max_nodes), answers its own result type with
orjson, and never lets an exception out as a 500 with a traceback: a body of the wrong shape is a 400
carrying `Error`, an unexpected failure is the result type with `Error` set, counted in
gpupack_internal_errors_total and logged once with the pod. filter, prioritize and preempt are
CPU-only and run on the event loop; bind makes API calls and runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from scheduler.extender import wire
from scheduler.extender.metrics import Metrics
from scheduler.extender.preempt import preempt
from scheduler.extender.verdicts import PREFIX, Engine
from scheduler.state.binder import Binder
from scheduler.state.cluster import ClusterState
from scheduler.translate.pod import InvalidPod, PodRequest, PodShape

log = logging.getLogger("gpupack.extender")
JSON = "application/json"
NOT_READY = PREFIX + "not ready: the cluster state is still being listed"


class TooLarge(Exception):
    pass


@dataclass
class Deps:
    state: ClusterState
    engine: Engine
    binder: Binder
    metrics: Metrics
    max_body: int
    body_timeout_s: float = 10.0
    max_nodes: int = wire.MAX_NODES


async def _body(request: Request, cap: int, timeout_s: float) -> bytes:
    """The body, or TooLarge / TimeoutError: a huge or stalled body cannot hold a connection."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise TooLarge()
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise TooLarge()
            chunks.append(chunk)

    await asyncio.wait_for(collect(), timeout_s)
    return b"".join(chunks)


def _who(body: bytes) -> str:
    """The pod a request is about, for the log line of an internal error ("?" when it cannot be read)."""
    try:
        doc = orjson.loads(body)
        if "PodName" in doc:
            return f"{doc.get('PodNamespace')}/{doc.get('PodName')} uid={doc.get('PodUID')}"
        meta = doc["Pod"]["metadata"]
        return f"{meta.get('namespace')}/{meta.get('name')} uid={meta.get('uid')}"
    except Exception:  # the body is whatever caused the error: never fail while describing it
        return "?"


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type=JSON)


Handler = Callable[[Request], Awaitable[Response]]


class ExtenderApp(FastAPI):
    """FastAPI with a direct path for the four verbs.

    kube-scheduler calls filter, prioritize and bind for every pod, and each verb already reads its raw
    body, answers bytes and turns every failure into its result type: FastAPI's middleware stack,
    routing and endpoint machinery around it add nothing but ~20% of gpupack's CPU per pod (py-spy under
    a real kube-scheduler, docs/benchmarks.md). So a POST to a verb's path goes straight to its handler;
    everything else (health, readiness, metrics, lifespan) goes through FastAPI as usual. The same
    handlers are registered as FastAPI routes too, so the app describes itself the same way."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verbs: dict[str, Handler] = {}  # path -> handler, filled by build_router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.verbs.get(scope["path"])
            if handler is not None:
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def build_router(deps: Deps, prefix: str, verbs: dict[str, Handler] | None = None) -> APIRouter:
    """The verbs as FastAPI routes; each handler is also put in `verbs` by path (ExtenderApp's direct path)."""
    router = APIRouter()
    state, engine, metrics = deps.state, deps.engine, deps.metrics

    def verb(name: str, bad: Callable[[str], bytes]) -> Callable[[Callable[[bytes], Awaitable[Response]]],
                                                               Callable[[Request], Awaitable[Response]]]:
        """Wrap a verb: body cap, 400 on WireError, result type with Error on anything unexpected, timing."""

        def wrap(fn: Callable[[bytes], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def handler(request: Request) -> Response:
                t0 = time.perf_counter()
                body = b""
                try:
                    body = await _body(request, deps.max_body, deps.body_timeout_s)
                    resp = await fn(body)
                except TooLarge:
                    metrics.bad_requests.labels(name, "413").inc()
                    resp = _json(bad(f"{PREFIX}request body over {deps.max_body} bytes"), 413)
                except TimeoutError:
                    metrics.bad_requests.labels(name, "408").inc()
                    resp = _json(bad(f"{PREFIX}request body not received within {deps.body_timeout_s:g} s"), 408)
                except wire.TooMany as e:
                    metrics.bad_requests.labels(name, "413").inc()
                    resp = _json(bad(f"{PREFIX}bad {name} request: {e}"), 413)
                except wire.WireError as e:
                    metrics.bad_requests.labels(name, "400").inc()
                    resp = _json(bad(f"{PREFIX}bad {name} request: {e}"), 400)
                except Exception as e:  # a bug must still answer the result type, not a traceback
                    kind = type(e).__name__
                    metrics.internal_errors.labels(name, kind).inc()
                    log.exception("internal error in %s for pod %s", name, _who(body))
                    resp = _json(bad(f"{PREFIX}internal error in {name}: {kind}: {e}"))
                dt = time.perf_counter() - t0
                metrics.latency.labels(name).observe(dt)
                resp.headers["server-timing"] = f"{name};dur={dt * 1e3:.3f}"  # time inside gpupack, in ms
                return resp

            router.add_api_route(f"{prefix}/{name}", handler, methods=["POST"], name=name)
            if verbs is not None:
                verbs[f"{prefix}/{name}"] = handler
            return handler

        return wrap

    def pod_request(pod: dict[str, object]) -> tuple[PodRequest | None, str]:
        """The pod's request, or None and why it is invalid (a per-node reason); a body that is not
        shaped like a pod is a WireError (400), never an answer about nodes."""
        try:
            return state.request(pod), ""
        except PodShape as e:
            raise wire.WireError(str(e)) from None
        except InvalidPod as e:
            return None, str(e)

    @verb("filter", lambda m: wire.filter_error(m))
    async def _filter(body: bytes) -> Response:
        args = wire.parse_args(body, deps.max_nodes)
        view = state.view()
        if not view.ready:
            return _json(wire.filter_error(NOT_READY, args.items is None))
        # a large list in a new order may be answered from the shortlist without being read name by
        # name; any other list is read first, so that a 400 leaves the learned mix as it was
        quick = engine.quick_list(view, args)
        table = None if quick else engine.table(view, args)
        req, invalid = pod_request(args.pod)
        if table is None:
            fast = engine.shortlisted(view, req, args)
            if fast is not None:
                metrics.filter_paths.labels("quick").inc()
                return _json(fast)
            table = engine.table(view, args)
        metrics.filter_paths.labels("full").inc()
        answer, reasons = engine.filter_answer(view, req, invalid, table, args)
        for reason, n in reasons.items():
            metrics.rejections.labels(reason).inc(n)
        return _json(answer)

    @verb("prioritize", lambda m: b"[]")
    async def _prioritize(body: bytes) -> Response:
        args = wire.parse_args(body, deps.max_nodes)
        view = state.view()
        meta = args.pod.get("metadata")
        uid = meta.get("uid") if isinstance(meta, dict) else ""
        # the node list is checked before the pod is read: a 400 must leave the learned mix as it was
        table = engine.table(view, args, uid if isinstance(uid, str) else "")
        req, _ = pod_request(args.pod)
        return _json(engine.prioritize_answer(view, req, table))

    @verb("bind", wire.binding_result)
    async def _bind(body: bytes) -> Response:
        args = wire.parse_binding(body)
        if not state.ready:
            return _json(wire.binding_result(NOT_READY))
        result = await run_in_threadpool(deps.binder.bind, args.namespace, args.name, args.uid, args.node)
        return _json(wire.binding_result(result.error))

    @verb("preempt", lambda m: wire.preemption_result({}, m))
    async def _preempt(body: bytes) -> Response:
        args = wire.parse_preemption(body, deps.max_nodes)
        view = state.view()
        req, _ = pod_request(args.pod)
        echo = {n: ([v.uid for v in vs], pdb) for n, (vs, pdb) in args.victims.items()}
        if req is None:
            return _json(wire.preemption_result({}))  # a pod no node can take: evicting helps nowhere
        if not req.managed or not view.ready:
            return _json(wire.preemption_result(echo))  # gpupack has no say: leave the proposal as it is
        got = engine.plugins.preempt(req, view, args.victims)  # a pod group member: room for the whole group
        if got is not None:  # or nothing evicted
            return _json(wire.preemption_result(got))
        return _json(wire.preemption_result(preempt(state, view, req.demand, args.victims)))

    @router.get("/healthz")
    async def healthz() -> Response:
        return _json(b'{"ok":true}')

    @router.get("/readyz")
    async def readyz() -> Response:
        ready = state.ready
        return _json(orjson.dumps({"ready": ready, **state.synced}), 200 if ready else 503)

    @router.get("/metrics")
    async def prom() -> Response:
        return Response(content=metrics.render(), media_type="text/plain; version=0.0.4")

    return router
