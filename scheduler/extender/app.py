"""The FastAPI app: wires state, watcher, binder, engine and metrics, and runs the watch in its lifespan.

`create_app(settings)` picks the cluster source from the settings (live: kubeconfig or in-cluster;
standalone: a cluster file; demo: the embedded cluster), both of the latter served by the in-memory
API so that bind books and records pods exactly as in a cluster. Tests pass their own `api`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from scheduler.dra.modes import ClaimVeto, binder_for
from scheduler.dra.routing import Routing
from scheduler.dra.state import DraState
from scheduler.events import EventRecorder
from scheduler.extender.metrics import Metrics
from scheduler.extender.routes import Deps, ExtenderApp, build_router
from scheduler.extender.verdicts import Engine
from scheduler.groups import PodGroups
from scheduler.settings import Settings
from scheduler.state.binder import Binder, BindResult
from scheduler.state.cluster import ClusterState
from scheduler.state.dra_memapi import DraMemoryApi
from scheduler.state.dra_standalone import load_dra_objects
from scheduler.state.kubeapi import DraApi, KubeApi, KubernetesApi
from scheduler.state.plugin import Plugins
from scheduler.state.standalone import demo_objects, load_cluster
from scheduler.state.watch import DRA_SOURCES, Watcher, WatchSettings

log = logging.getLogger("gpupack")


def make_api(settings: Settings, state: ClusterState) -> KubeApi:
    """The cluster source the settings name."""
    if settings.mode == "live":
        kubeconfig = str(settings.kubeconfig) if settings.kubeconfig else None
        return KubernetesApi(kubeconfig, settings.in_cluster, settings.api_timeout_s)
    nodes, pods = load_cluster(settings.cluster) if settings.cluster else (demo_objects(), [])
    slices, claims = load_dra_objects(settings.cluster) if settings.cluster else ([], [])
    # no API server holds the pods kube-scheduler asks about: bind adopts the pod filter was sent
    state.keep_raw = True
    return DraMemoryApi(nodes, pods, slices, claims, adopt=state.raw_pod)


def create_app(settings: Settings | None = None, api: KubeApi | None = None,
               state: ClusterState | None = None) -> ExtenderApp:
    settings = settings or Settings()
    state = state or ClusterState(settings.assume_ttl_s, mix_refresh_s=settings.mix_refresh_s)
    api = api or make_api(settings, state)
    metrics = Metrics(state)
    state.on_event_lag = metrics.event_lag.observe

    def on_bind(r: BindResult) -> None:
        metrics.binds.labels(r.outcome).inc()

    dra = DraState(state) if settings.dra_mode != "off" and isinstance(api, DraApi) else None
    if dra is not None:  # DRA (scheduler/dra): slices and claims are watched; claim pods bind by adoption
        dra.install()  # (observe) or allocation (allocate mode)
    routing = Routing.parse(settings.dra_allocate_classes, settings.dra_allocate_profiles)  # scheduler/dra/routing.py
    binder = binder_for(settings.dra_mode, state, api, dra, on_bind, routing) if dra is not None \
        else Binder(state, api, on_bind)
    watcher = Watcher(api, state, WatchSettings(settings.watch_timeout_s, settings.backoff_initial_s,
                                                settings.backoff_max_s),
                      on_error=lambda kind, e: metrics.watch_errors.labels(kind).inc(),
                      optional=DRA_SOURCES if dra is not None else None)
    groups = PodGroups(state, metrics.registry)  # pod groups: all or nothing (scheduler/groups)
    plugins = Plugins(groups)  # called at filter, preempt and bind (scheduler/state/plugin.py)
    engine = Engine(plugins=plugins, keep=settings.shortlist)
    binder.plugins = plugins
    if dra is not None and settings.dra_mode == "allocate":
        engine.veto = ClaimVeto(state, dra, routing)
    events = EventRecorder(api, on_result=lambda reason, result: metrics.events.labels(reason, result).inc())
    groups.events, binder.on_failed = events, events.bind_failed  # Events on pods (scheduler/events.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("gpupack extender: %s mode, verbs at %s/{filter,prioritize,bind,preempt}",
                 settings.mode, settings.url_prefix or "")
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            events.close()

    app = ExtenderApp(title="gpupack scheduler extender", lifespan=lifespan, docs_url=None, redoc_url=None,
                      openapi_url=None)
    deps = Deps(state, engine, binder, metrics, settings.max_body_bytes, settings.body_timeout_s, settings.max_nodes)
    app.include_router(build_router(deps, settings.url_prefix, app.verbs))
    app.state.gpupack = deps
    app.state.watcher = watcher
    app.state.groups = groups
    app.state.api = api
    app.state.dra = dra
    app.state.events = events
    return app
