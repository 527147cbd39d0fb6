"""The report's replay: the cluster's GPU pods placed again, in creation order, on the same nodes,
by gpupack's policy and by FGD and best-fit, so a picture of today's cluster says what each policy
would have made of the same arrivals.

Every policy books through binpack (benchmarks/synthetic.py's Chooser, the same code `bench
synthetic` compares), so every replayed placement is valid. Pods arrive one at a time and nothing
leaves (a pod group's members are placed one by one). Allocation and stranded GPUs are measured
like the cluster's own (analyze.py), with the mix learned from the cluster's pods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from binpack import Snapshot, allocate
from scheduler.report.analyze import Picture, created_order, gpu_use, pending, stranded

POLICIES = ("gpupack", "fgd", "best-fit")
Tick = Callable[[str, int, int], None]  # (policy, pods done, pods in all)


@dataclass(frozen=True)
class ReplayRow:
    """One policy's outcome on the cluster's pods (`as bound`: the cluster itself)."""

    policy: str
    placed: int
    unplaced: int
    allocated: float  # GPUs
    stranded: float  # GPUs, FGD's measure with the cluster's mix
    seconds: float


def as_bound(pic: Picture) -> ReplayRow:
    """The cluster as it stands: GPU pods bound, GPU pods pending, its allocation and stranding."""
    waiting = sum(1 for p in pending(pic) if p.asks != "invalid")
    placed = len(created_order(pic.pods)) - waiting
    _, used, _ = gpu_use(pic.snapshot)
    return ReplayRow("as bound", placed, waiting, round(float(used.sum()), 2),
                     round(float(stranded(pic.snapshot, pic.mix).sum()), 2), 0.0)


def replay(pic: Picture, policies: Sequence[str] = POLICIES, tick: Tick | None = None) -> tuple[ReplayRow, ...]:
    """Place the cluster's GPU pods again from empty nodes with each policy."""
    from benchmarks.synthetic import Chooser  # the benchmark's policies, on binpack snapshots

    order = created_order(pic.pods)
    empty = Snapshot.build(pic.snapshot.static.nodes)
    rows = [as_bound(pic)]
    for policy in policies:
        chooser, snap, placed = Chooser(policy, 0), empty, 0
        start = time.perf_counter()
        for n, (_, req) in enumerate(order, 1):
            p = chooser.place(snap, req.demand)
            if p is not None:
                snap = allocate(snap, p)
                placed += 1
            if tick is not None and (n % 200 == 0 or n == len(order)):
                tick(policy, n, len(order))
        seconds = time.perf_counter() - start
        _, used, _ = gpu_use(snap)
        rows.append(ReplayRow(policy, placed, len(order) - placed, round(float(used.sum()), 2),
                              round(float(stranded(snap, pic.mix).sum()), 2), round(seconds, 2)))
    return tuple(rows)
