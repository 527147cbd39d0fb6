"""Prometheus metrics of pod groups (scheduler/groups), in the extender's registry.

Counters of plans by outcome, the planning time, and a gauge of groups waiting or reserved read at scrape
time (the scrape also closes plans whose members are all bound, so it is registered before the counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_PLAN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


class GroupMetrics:
    """gpupack_pod_groups_total{event}, gpupack_pod_group_planning_seconds, gpupack_pod_groups{state}."""

    def __init__(self, registry: CollectorRegistry, counts: Callable[[], dict[str, int]]) -> None:
        registry.register(_Gauges(counts))  # first: a scrape closes finished plans before the counters are read
        self.events = Counter("gpupack_pod_groups_total",
                              "Pod group plans: planned (reserved whole), unplaceable, bound (every planned member "
                              "bound), expired (a reservation lost before its member was bound)",
                              ["event"], registry=registry)
        for e in ("planned", "unplaceable", "bound", "expired"):
            self.events.labels(e)
        self.planning = Histogram("gpupack_pod_group_planning_seconds", "Time to plan one pod group",
                                  buckets=_PLAN_BUCKETS, registry=registry)


class _Gauges(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("gpupack_pod_groups", "Pod groups by state: waiting (short of members or of "
                              "room), reserved (planned, members binding)", labels=["state"])
        for k, v in self.counts().items():
            g.add_metric([k], float(v))
        yield g
