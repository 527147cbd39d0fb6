"""The report's replay: the cluster's pods placed again, in creation order, on the same nodes, by
gpupack's policy and by FGD and best-fit, so a picture of today's cluster says what each policy
would have made of the same arrivals.

The choosers are `bench packing`'s own (benchmarks/report_choosers.py): gpupack's rule through
binpack, and bench packing's FGD and best-fit policy objects on a mirror of the snapshot; every
placement books through binpack, so it is valid. Pods arrive one at a time and nothing leaves (a
pod group's members are placed one by one), as in bench packing. The pods replayed are every
non-terminal pod gpupack can read that asks for a GPU, and the pending ones asking for none. Pods
asking for no GPU that are bound to a node of the picture stay there from the start, holding their
CPU and memory (which decide how much of a GPU node is usable): no GPU policy would have moved them,
since they pass through gpupack's extender only when they opt in.

With two cores or more the policies run in forked processes (nothing is pickled on the way in; a
row comes back): `start` forks the first policy's (gpupack, the longest) as soon as the dump is read,
and it parses the nodes and pods itself while this process builds the cluster picture; the others
start from the picture, the last in this process (it would otherwise wait), the rest on the cores
left. Only the learned mix, which the stranded figure needs, is sent to the workers once the picture
has it. Figures per policy: pods placed, GPUs allocated
(analyze.gpu_use), stranded GPUs with the cluster's learned mix (analyze.stranded, the extender's
measure), and FGD's fragmentation as bench packing counts it (its typical pods: the replayed pods).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from binpack import Demand, DemandKind, Mix, Placement, Snapshot, allocate
from binpack.catalog import FULL_MILLI
from binpack.types import Node
from scheduler.report.analyze import Picture, gpu_use, materialize, stranded
from scheduler.report.dump import Dump, Obj
from scheduler.state.cluster import TERMINAL
from scheduler.translate.inventory import InvalidInventory, node_from_k8s
from scheduler.translate.pod import InvalidPod, PodRequest, read_pod

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


Pods = list[tuple[Obj, PodRequest]]


def replay_order(pods: Iterable[tuple[Obj, PodRequest | None]], nodes: Container[str]) -> tuple[Pods, Pods]:
    """(the replayed pods in creation order, then namespace/name: the replay's arrival order; the pods
    asking for no GPU bound to one of `nodes`, which stay there and hold their CPU and memory)."""
    keep, held = [], []
    for p, r in pods:
        if r is None or (p.get("status") or {}).get("phase") in TERMINAL:
            continue
        node = (p.get("spec") or {}).get("nodeName")
        if r.managed or not node:
            keep.append((p, r))
        elif node in nodes:
            held.append((p, r))

    def key(pr: tuple[Obj, PodRequest]) -> tuple[str, str, str]:
        meta = pr[0].get("metadata") or {}
        return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""),
                str(meta.get("name") or ""))

    return sorted(keep, key=key), held


def _start(nodes: list[Node], held: Pods) -> Snapshot:
    """The empty nodes, holding the bound pods that ask for no GPU (one that no longer fits is left out:
    its node was overcommitted, or its request changed). One booking per node, of their sum: bookings
    of CPU and memory add up, and one per pod cost a second on 25,000 pods."""
    snap = Snapshot.build(nodes)
    left = {n.name: [n.cpu_milli, n.memory_mib] for n in nodes}
    for p, r in held:
        room, d = left[str((p.get("spec") or {}).get("nodeName"))], r.demand
        if d.cpu_milli <= room[0] and d.host_memory_mib <= room[1]:
            room[0] -= d.cpu_milli
            room[1] -= d.host_memory_mib
    for n in nodes:
        cpu, mem = n.cpu_milli - left[n.name][0], n.memory_mib - left[n.name][1]
        if cpu or mem:
            snap = allocate(snap, Placement(n.name, cpu_milli=cpu, host_memory_mib=mem, kind=DemandKind.NONE))
    return snap


def listed_nodes(pic: Picture) -> list[Node]:
    """The nodes gpupack read, in the order the source listed them: the replay's tie-break order (ties
    go to the node listed first; `kubectl get` lists by name, a bench packing dump in its seed's order)."""
    read = {n.name: n for n in pic.snapshot.static.nodes}
    names = (str((o.get("metadata") or {}).get("name") or "") for o in pic.dump.nodes)
    return [read[n] for n in dict.fromkeys(names) if n in read]


def as_bound(pic: Picture, order: Sequence[tuple[Obj, PodRequest]]) -> ReplayRow:
    """The cluster as it stands: the replayed pods bound and pending, its allocation and stranding."""
    from benchmarks.report_choosers import fgd_frag, pod_table

    waiting = sum(1 for p, _ in order if not (p.get("spec") or {}).get("nodeName"))
    _, used, _ = gpu_use(pic.snapshot)
    frag = fgd_frag(materialize(pic.snapshot), pod_table([r.demand for _, r in order]))
    return ReplayRow("as bound", len(order) - waiting, waiting, round(float(used.sum()), 2),
                     round(float(stranded(pic.snapshot, pic.mix).sum()), 2), round(frag / FULL_MILLI, 2), 0.0)


@dataclass(frozen=True)
class _Job:
    """What every policy's run reads: the nodes in listing order (empty but for the bound pods that ask for
    no GPU) and the demands in arrival order."""

    empty: Snapshot
    demands: tuple[Demand, ...]


def _job_of_picture(pic: Picture) -> _Job:
    order, held = replay_order(((p, r) for p, r, _ in pic.pods), pic.snapshot.static.index)
    return _Job(_start(listed_nodes(pic), held), tuple(r.demand for _, r in order))


def _job_of_dump(dump: Dump) -> _Job:
    """The same job as _job_of_picture, from the raw objects: nodes and pods parsed as ClusterState
    parses them (node_from_k8s, read_pod; a node listed twice is its last object, one gpupack cannot
    read is left out), without booking anything."""
    nodes: dict[str, Node | None] = {}
    for o in dump.nodes:
        name = str((o.get("metadata") or {}).get("name") or "")
        if name:
            try:
                nodes[name] = node_from_k8s(o)
            except InvalidInventory:
                nodes[name] = None
    listed = [n for n in nodes.values() if n is not None]
    parsed = []
    for p in dump.pods:
        try:
            parsed.append((p, read_pod(p)))
        except InvalidPod:
            continue
    order, held = replay_order(parsed, {n.name for n in listed})
    return _Job(_start(listed, held), tuple(r.demand for _, r in order))


def _place_all(job: _Job, policy: str, tick: Tick | None) -> tuple[Snapshot, int, float]:
    """Place the demands in order from empty nodes with one policy: (last snapshot, pods placed, seconds)."""
    from benchmarks.report_choosers import chooser, pod_table

    start = time.perf_counter()
    snap, placed, total = job.empty, 0, len(job.demands)
    pick = chooser(policy, snap, pod_table(job.demands))
    for n, d in enumerate(job.demands, 1):
        p = pick.place(snap, d)
        if p is not None:
            snap = allocate(snap, p)
            pick.booked(snap, p)
            placed += 1
        if tick is not None and (n % TICK_EVERY == 0 or n == total):
            tick(policy, n, total)
    return snap, placed, time.perf_counter() - start


def _row(job: _Job, policy: str, snap: Snapshot, placed: int, seconds: float, mix: Mix) -> ReplayRow:
    from benchmarks.report_choosers import fgd_frag, pod_table

    _, used, _ = gpu_use(snap)
    return ReplayRow(policy, placed, len(job.demands) - placed, round(float(used.sum()), 2),
                     round(float(stranded(snap, mix).sum()), 2),
                     round(fgd_frag(snap, pod_table(job.demands)) / FULL_MILLI, 2), round(seconds, 2))


def run_policy(job: _Job, policy: str, mix: Mix, tick: Tick | None = None) -> ReplayRow:
    """One policy's replay and its figures (stranded GPUs measured with `mix`)."""
    snap, placed, seconds = _place_all(job, policy, tick)
    return _row(job, policy, snap, placed, seconds, mix)


MIX_WAIT_S = 900.0  # a worker waits this long at most for the picture's mix
COLLECT_WAIT_S = 0.2  # between looks at the workers while collecting


def _worker(make: Callable[[], _Job], policies: Sequence[str], out: Any, mixes: Any) -> None:
    """A forked process: build the job, replay its policies, then (with the mix) send their rows."""
    try:
        job = make()
        # forked while the parent read the dump with the cyclic GC off (report/cli.py bulk_read): what the
        # job parsed lives until the end, so freeze it and collect only what the replay makes
        gc.freeze()
        gc.enable()
        done = [(p, *_place_all(job, p, lambda q, n, total: out.put(("tick", q, n, total)))) for p in policies]
        mix = mixes.get(timeout=MIX_WAIT_S)
        for p, snap, placed, seconds in done:
            out.put(("row", _row(job, p, snap, placed, seconds, mix)))
    except BaseException as e:  # the parent reports it; a dead worker must not leave it waiting
        out.put(("error", f"{type(e).__name__}: {e}"))


class Running:
    """A replay under way: the workers forked so far; `finish` adds the rest and collects the rows."""

    def __init__(self, dump: Dump, policies: Sequence[str], workers: int) -> None:
        self.policies = tuple(policies)
        self.workers = min(workers or os.cpu_count() or 1, len(self.policies))
        self.forked = self.workers > 1 and "fork" in multiprocessing.get_all_start_methods()
        self.procs: list[Any] = []
        if not self.forked:
            return
        ctx = multiprocessing.get_context("fork")
        self.ctx, self.out, self.mixes = ctx, ctx.Queue(), ctx.Queue()
        # the first policy (gpupack's, the longest) starts now and parses the dump itself; the others
        # start from the picture, in the processes left
        self._fork(lambda: _job_of_dump(dump), self.policies[:1])

    def _fork(self, make: Callable[[], _Job], group: Sequence[str]) -> None:
        proc = self.ctx.Process(target=_worker, args=(make, group, self.out, self.mixes), daemon=True)
        proc.start()
        self.procs.append(proc)

    def finish(self, pic: Picture, tick: Tick | None = None) -> tuple[ReplayRow, ...]:
        if not self.forked:
            job = _job_of_picture(pic)
            rows = [run_policy(job, p, pic.mix, tick) for p in self.policies]
            return (self._as_bound(pic), *rows)
        # the first policy is under way; the last runs here once the `as bound` row is done, the others
        # in forked processes on the cores left
        rest, mine = self.policies[1:-1], self.policies[-1:] if len(self.policies) > 1 else ()
        groups = min(self.workers - 1, len(rest))
        late = [rest[g::groups] for g in range(groups)]
        for group in late:
            self._fork(lambda: _job_of_picture(pic), group)
        for _ in range(1 + len(late)):  # every worker waits for the mix its stranded figure needs
            self.mixes.put(pic.mix)
        got: dict[str, ReplayRow] = {}

        def pump(wait: float) -> None:
            """Take the workers' messages: at most one blocking wait of `wait` seconds."""
            try:
                msg = self.out.get(timeout=wait) if wait else self.out.get_nowait()
                while True:
                    if msg[0] == "tick" and tick is not None:
                        tick(*msg[1:])
                    elif msg[0] == "row":
                        got[msg[1].policy] = msg[1]
                    elif msg[0] == "error":
                        raise RuntimeError(f"replay worker: {msg[1]}")
                    msg = self.out.get_nowait()
            except queue.Empty:
                return

        def here(policy: str, n: int, total: int) -> None:
            if tick is not None:
                tick(policy, n, total)
            pump(0.0)

        try:
            head = self._as_bound(pic)
            if mine:
                got[mine[0]] = run_policy(_job_of_picture(pic), mine[0], pic.mix, here)
            while len(got) < len(self.policies):
                if not any(p.is_alive() for p in self.procs) and self.out.empty():
                    raise RuntimeError("a replay worker ended without its rows")
                pump(COLLECT_WAIT_S)
        finally:
            for proc in self.procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
        return (head, *(got[p] for p in self.policies))

    @staticmethod
    def _as_bound(pic: Picture) -> ReplayRow:
        return as_bound(pic, replay_order(((p, r) for p, r, _ in pic.pods), pic.snapshot.static.index)[0])


def start(dump: Dump, policies: Sequence[str] = POLICIES, workers: int = 0) -> Running:
    """Start replaying a dump's pods (all but the first policy begin at once, in their own processes)."""
    return Running(dump, policies, workers)


def replay(pic: Picture, policies: Sequence[str] = POLICIES, tick: Tick | None = None,
           workers: int = 0) -> tuple[ReplayRow, ...]:
    """Place the cluster's pods again from empty nodes with each policy; `workers` 0: one process per
    policy up to the CPU count, 1: every policy in this process. Rows: `as bound`, then the policies."""
    return start(pic.dump, policies, workers).finish(pic, tick)
