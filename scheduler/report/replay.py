"""The report's replay: the cluster's pods placed again, in creation order, on the same nodes, by
gpupack's policy and by FGD and best-fit, so a picture of today's cluster says what each policy
would have made of the same arrivals.

The choosers are `bench packing`'s own (benchmarks/report_choosers.py): gpupack's rule through
binpack, and bench packing's FGD and best-fit policy objects on a mirror of the snapshot; every
placement books through binpack, so it is valid. Pods arrive one at a time and nothing leaves (a
pod group's members are placed one by one), as in bench packing. The pods replayed are every
non-terminal pod gpupack can read that asks for a GPU, and those asking for none that are pending
or bound to a node of the picture (their CPU and memory decide how much of a GPU node is usable).

Each policy runs in its own process when there are cores for it (fork: the picture is not copied
or pickled, and a row is all that comes back). Figures per policy: pods placed, GPUs allocated
(analyze.gpu_use), stranded GPUs with the cluster's learned mix (analyze.stranded, the extender's
measure), and FGD's fragmentation as bench packing counts it (its typical pods: the replayed pods).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from binpack import Demand, Mix, Snapshot, allocate
from binpack.catalog import FULL_MILLI
from binpack.types import Node
from scheduler.podspec import PodRequest
from scheduler.report.analyze import Picture, gpu_use, materialize, stranded
from scheduler.report.dump import Obj
from scheduler.state.cluster import TERMINAL

POLICIES = ("gpupack", "fgd", "best-fit")
Tick = Callable[[str, int, int], None]  # (policy, pods done, pods in all)
TICK_EVERY = 500  # pods between progress reports


@dataclass(frozen=True)
class ReplayRow:
    """One policy's outcome on the cluster's pods (`as bound`: the cluster itself)."""

    policy: str
    placed: int
    unplaced: int
    allocated: float  # GPUs
    stranded: float  # GPUs, FGD's measure with the cluster's learned mix (the extender's)
    fgd_frag: float  # GPUs, bench packing's fragmentation: FGD's measure with the replayed pods' typical pods
    seconds: float


def replay_order(pic: Picture) -> list[tuple[Obj, PodRequest]]:
    """The replayed pods in creation order (then namespace/name): the replay's arrival order."""
    nodes = pic.snapshot.static.index
    keep = []
    for p, r, _ in pic.pods:
        if r is None or (p.get("status") or {}).get("phase") in TERMINAL:
            continue
        node = (p.get("spec") or {}).get("nodeName")
        if r.managed or not node or node in nodes:
            keep.append((p, r))

    def key(pr: tuple[Obj, PodRequest]) -> tuple[str, str, str]:
        meta = pr[0].get("metadata") or {}
        return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""),
                str(meta.get("name") or ""))

    return sorted(keep, key=key)


def as_bound(pic: Picture, order: Sequence[tuple[Obj, PodRequest]]) -> ReplayRow:
    """The cluster as it stands: the replayed pods bound and pending, its allocation and stranding."""
    from benchmarks.report_choosers import fgd_frag, pod_table

    waiting = sum(1 for p, _ in order if not (p.get("spec") or {}).get("nodeName"))
    _, used, _ = gpu_use(pic.snapshot)
    frag = fgd_frag(materialize(pic.snapshot), pod_table([r.demand for _, r in order]))
    return ReplayRow("as bound", len(order) - waiting, waiting, round(float(used.sum()), 2),
                     round(float(stranded(pic.snapshot, pic.mix).sum()), 2), round(frag / FULL_MILLI, 2), 0.0)


def listed_nodes(pic: Picture) -> list[Node]:
    """The nodes gpupack read, in the order the source listed them: the replay's tie-break order (ties
    go to the node listed first; `kubectl get` lists by name, a bench packing dump in its seed's order)."""
    read = {n.name: n for n in pic.snapshot.static.nodes}
    names = (str((o.get("metadata") or {}).get("name") or "") for o in pic.dump.nodes)
    return [read[n] for n in dict.fromkeys(names) if n in read]


@dataclass(frozen=True)
class _Job:
    """What every policy's run reads: the empty nodes, the demands in order, the mix to measure with."""

    empty: Snapshot
    demands: tuple[Demand, ...]
    mix: Mix


def run_policy(job: _Job, policy: str, tick: Tick | None = None) -> ReplayRow:
    """Place the demands in order from empty nodes with one policy."""
    from benchmarks.report_choosers import chooser, fgd_frag, pod_table

    table = pod_table(job.demands)
    start = time.perf_counter()
    snap, placed, total = job.empty, 0, len(job.demands)
    pick = chooser(policy, snap, table)
    for n, d in enumerate(job.demands, 1):
        p = pick.place(snap, d)
        if p is not None:
            snap = allocate(snap, p)
            pick.booked(snap, p)
            placed += 1
        if tick is not None and (n % TICK_EVERY == 0 or n == total):
            tick(policy, n, total)
    seconds = time.perf_counter() - start
    _, used, _ = gpu_use(snap)
    return ReplayRow(policy, placed, total - placed, round(float(used.sum()), 2),
                     round(float(stranded(snap, job.mix).sum()), 2), round(fgd_frag(snap, table) / FULL_MILLI, 2),
                     round(seconds, 2))


# a forked worker finds its job here (inherited, never pickled) and reports progress on the queue
_shared: tuple[_Job, Any] | None = None


def _in_worker(policy: str) -> ReplayRow:
    assert _shared is not None, "replay worker started without its job"
    job, q = _shared
    return run_policy(job, policy, lambda p, n, total: q.put((p, n, total)))


def replay(pic: Picture, policies: Sequence[str] = POLICIES, tick: Tick | None = None,
           workers: int = 0) -> tuple[ReplayRow, ...]:
    """Place the cluster's pods again from empty nodes with each policy; `workers` 0: one process per
    policy up to the CPU count, 1: every policy in this process."""
    global _shared
    order = replay_order(pic)
    job = _Job(Snapshot.build(listed_nodes(pic)), tuple(r.demand for _, r in order), pic.mix)
    head = as_bound(pic, order)
    workers = min(workers or os.cpu_count() or 1, len(policies))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return (head, *(run_policy(job, p, tick) for p in policies))
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    _shared = (job, q)
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures: list[Future[ReplayRow]] = [pool.submit(_in_worker, p) for p in policies]
            while not all(f.done() for f in futures):
                _drain(q, tick, 0.2)
            _drain(q, tick, 0.0)
            rows = [f.result() for f in futures]
    finally:
        _shared = None
        q.close()
    return (head, *rows)


def _drain(q: Any, tick: Tick | None, wait: float) -> None:
    """Hand the workers' progress reports to `tick`: at most one blocking wait of `wait` seconds."""
    try:
        item = q.get(timeout=wait) if wait else q.get_nowait()
        while True:
            if tick is not None:
                tick(*item)
            item = q.get_nowait()
    except queue.Empty:
        return
