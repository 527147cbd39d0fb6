"""Prometheus metrics of the extender, in a registry of its own (one per app, so tests never collide).

Latency per verb, filter rejections by reason, binds by outcome, internal errors by verb and exception
type, watch errors and the delay
between a watch event's arrival and its application (the window in which filter could still answer
from the old state), plus gauges read from the state at scrape time: GPUs in use, cluster
fragmentation, nodes, assumed allocations, readiness, and (cluster_metrics.py) GPUs and MIG slices per model
and pending pods by reason. Served on the verbs' port and on the metrics port (scheduler/metricsport.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from binpack.catalog import FULL_MILLI
from scheduler.extender.cluster_metrics import ClusterCollector
from scheduler.state.cluster import ClusterState

_FAST = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, state: ClusterState) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("gpupack_extender_request_seconds", "Time to answer an extender call",
                                 ["verb"], buckets=_FAST, registry=r)
        self.rejections = Counter("gpupack_filter_rejections_total", "Nodes refused by filter, by reason",
                                  ["reason"], registry=r)
        self.filter_paths = Counter("gpupack_filter_answers_total", "filter answers by how they were found: "
                                    "quick (the shortlist found in the list's bytes) or full (the list read)",
                                    ["path"], registry=r)
        self.binds = Counter("gpupack_binds_total", "Bind calls by outcome (ok, failed, conflict)",
                             ["result"], registry=r)
        self.bad_requests = Counter("gpupack_bad_requests_total", "Requests refused with 400 or 413",
                                    ["verb", "code"], registry=r)
        self.internal_errors = Counter("gpupack_internal_errors_total",
                                       "Requests answered 'internal error' (a bug), by verb and exception type",
                                       ["verb", "exception"], registry=r)
        self.watch_errors = Counter("gpupack_watch_errors_total", "List/watch failures (then back-off)",
                                    ["kind"], registry=r)
        self.event_lag = Histogram("gpupack_watch_event_apply_seconds",
                                   "From a watch event's arrival to its application to the state",
                                   buckets=_FAST, registry=r)
        self.events = Counter("gpupack_events_total", "Kubernetes Events gpupack wrote on pods, by reason "
                              "and result (written, failed, dropped: the queue was full)",
                              ["reason", "result"], registry=r)
        r.register(_StateCollector(state))
        r.register(ClusterCollector(state))  # per model, MIG slices, pending pods: the dashboard's figures

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        view = self.state.view()
        with view.snapshot.read() as v:
            s = v.s
            usable = s.valid & s.healthy
            free = v.free_milli()
            plain = usable & (s.mig_mode == 0)
            used = (plain & (free < FULL_MILLI)) | (usable & (v.mig_used != 0))
            foreign = int(v.foreign.sum())
            # foreign pods hold whole GPUs gpupack cannot see: they are neither free nor stranded
            whole_free = max(int(np.where(v.whole_free(), FULL_MILLI, 0).sum()) - foreign * FULL_MILLI, 0)
            total_free = max(int(free.sum()) - foreign * FULL_MILLI, 0)
        in_use = GaugeMetricFamily("gpupack_allocated_gpus", "GPUs with something booked (incl. foreign pods)")
        in_use.add_metric([], float(used.sum() + foreign))
        yield in_use
        frag = GaugeMetricFamily("gpupack_cluster_fragmentation",
                                 "Share of free GPU capacity stranded on partly used GPUs (0..1)")
        frag.add_metric([], float(1 - whole_free / total_free) if total_free else 0.0)
        yield frag
        nodes = GaugeMetricFamily("gpupack_nodes", "Nodes with a readable inventory")
        nodes.add_metric([], float(len(view.snapshot.names)))
        yield nodes
        assumed = GaugeMetricFamily("gpupack_assumed_allocations", "Bookings not yet seen bound by the watch")
        assumed.add_metric([], float(len(self.state.assumed())))
        yield assumed
        ready = GaugeMetricFamily("gpupack_ready", "1 once nodes and pods were listed")
        ready.add_metric([], 1.0 if view.ready else 0.0)
        yield ready
