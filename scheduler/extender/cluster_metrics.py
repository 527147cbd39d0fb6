"""The cluster as a dashboard shows it, read at scrape time: GPUs per model (allocated, free, stranded,
idle), MIG slices per model, and pending GPU pods by the reason they fit nowhere.

The figures are `gpupack report`'s (scheduler/report/analyze.py), from the extender's own state, so the
dashboard, the report and the scheduler agree. The reason of a pending pod is the verdict most of the
cluster's nodes give it (binpack's fit reason, snake case), `fits_now` when some node could take it now,
`pod_group` when it could but is a pod group member (held until its group is placed whole).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from binpack import Snapshot, fit
from binpack.fit import Reason
from scheduler.report.analyze import per_model
from scheduler.state.cluster import ClusterState

MAX_PENDING = 2000  # pods examined per scrape; the rest are counted as `unexamined`


def reason_label(code: int) -> str:
    try:
        return Reason(code).name.lower()
    except ValueError:
        return f"code_{code}"


class ClusterCollector(Collector):
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        view = self.state.view()
        rows = per_model(view.snapshot, view.mix)
        fams = {
            "gpus": GaugeMetricFamily("gpupack_gpus", "Usable GPUs (valid and healthy), by model", labels=["model"]),
            "allocated": GaugeMetricFamily("gpupack_gpus_allocated",
                                           "GPUs allocated, by model (shares and MIG slices count their fraction)",
                                           labels=["model"]),
            "free": GaugeMetricFamily("gpupack_gpus_free", "GPUs free, by model", labels=["model"]),
            "stranded": GaugeMetricFamily("gpupack_gpus_stranded", "Free GPUs the cluster's workload mix cannot "
                                          "use where they lie (FGD's fragmentation), by model", labels=["model"]),
            "idle": GaugeMetricFamily("gpupack_gpus_idle", "GPUs with nothing on them, by model", labels=["model"]),
            "slices": GaugeMetricFamily("gpupack_mig_slices", "MIG memory slices of MIG-enabled GPUs, by model",
                                        labels=["model"]),
            "slices_free": GaugeMetricFamily("gpupack_mig_slices_free", "MIG memory slices free, by model",
                                             labels=["model"]),
        }
        for r in rows:
            for key, value in (("gpus", r.gpus), ("allocated", r.allocated), ("free", r.free),
                               ("stranded", r.stranded), ("idle", r.whole_free), ("slices", r.mig_slices),
                               ("slices_free", r.mig_slices_free)):
                fams[key].add_metric([r.model], float(value))
        yield from fams.values()
        pending = GaugeMetricFamily("gpupack_pending_pods", "GPU pods not bound, by the reason most nodes give "
                                    "(fits_now: some node could take it now; pod_group: it could, but its group "
                                    "is placed all or nothing)", labels=["reason"])
        for reason, n in sorted(self._pending(view.snapshot).items()):
            pending.add_metric([reason], float(n))
        yield pending

    def _pending(self, snap: Snapshot) -> Counter[str]:
        out: Counter[str] = Counter()
        for i, p in enumerate(self.state.pending()):
            if i >= MAX_PENDING:
                out["unexamined"] += 1
                continue
            assert p.request is not None
            if not len(snap.names):
                out["no_nodes"] += 1
                continue
            verdict = fit(snap, p.request.demand)
            if verdict.fits.any():  # a group member that fits alone waits for its group (all or nothing)
                out["pod_group" if p.request.group else "fits_now"] += 1
                continue
            codes, counts = np.unique(verdict.reason, return_counts=True)
            out[reason_label(int(codes[int(np.argmax(counts))]))] += 1
        return out
