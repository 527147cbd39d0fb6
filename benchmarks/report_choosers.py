"""The choosers `gpupack report`'s replay places pods with: `bench packing`'s own policies, driven on a
binpack snapshot, so a replay of a bench packing workload decides exactly as bench packing does.

- gpupack: bench packing's rule (benchmarks/policies/gpupack.py): the demand is observed by an
  online MixLearner when it fits somewhere, then fit -> score against the learned mix -> the first
  node with the highest score -> place, all binpack, as the extender does.
- fgd, best-fit: bench packing's policy objects themselves (benchmarks/policies/fgd.py, best_fit.py)
  on a mirror of the snapshot in bench packing's own columns (benchmarks/cluster.State and its
  FragTracker): free milli per plain GPU, free CPU and memory per node, one GPU model per node
  (its first GPU's). Feasibility is binpack's (which also knows MIG, NVLink and GPU memory); the
  policy picks the node, and the devices where its rule can name them (whole GPUs without an
  NVLink requirement: the first free ones; a compute-only share: the policy's GPU). MIG slices,
  NVLink-required sets and shares that ask for GPU memory take binpack's devices on that node,
  the only valid choice such a simulator could make. Every choice books through binpack, and the
  mirror's row is copied back from the snapshot after each booking.

FGD's "typical pods" (benchmarks/workload.target_mix) are the shapes of the pods being replayed:
`pod_table` builds the one table both this replay and a cross-check's bench packing run read them
from. The measure `fgd_frag` is bench packing's fragmentation (FragTracker.total) of a snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.cluster import Choice, State, Task
from benchmarks.frag import FragModel, FragTracker
from benchmarks.policies import Context, Factory
from benchmarks.policies.best_fit import BestFit
from benchmarks.policies.fgd import Fgd
from benchmarks.trace import FULL, NodeTable, PodTable
from benchmarks.workload import target_mix
from binpack import Demand, DemandKind, MixLearner, Placement, Snapshot, Topology, fit, place, score
from binpack.place import _place
from binpack.score import DEFAULT_POLICY

PAPER: dict[str, Factory] = {"fgd": Fgd, "best-fit": BestFit}  # bench packing's policies the mirror drives
NAMES = ("gpupack", *PAPER)


def pod_table(demands: Sequence[Demand], source: str = "replay") -> PodTable:
    """The demands as a bench packing pod list (one row each, in order): FGD's typical pods come from it.

    MIG slices are rows asking for no GPU, as binpack's mix counts them (they use none of the plain
    GPUs' free milli that FGD's measure counts); a share's size is its compute."""
    return shapes_table([(d.cpu_milli, d.host_memory_mib, *_gpu_shape(d), d.models) for d in demands], source)


def shapes_table(rows: Sequence[tuple[int, int, int, int, frozenset[str]]], source: str = "replay") -> PodTable:
    """(CPU milli, memory MiB, GPUs, per-GPU milli, models) rows as a pod list; allowed-model sets are
    numbered in order of first appearance (target_mix breaks its ties by that number)."""
    cols: dict[str, list[int]] = {"cpu": [], "mem": [], "num_gpu": [], "milli": [], "spec": []}
    specs: dict[frozenset[str], int] = {frozenset(): 0}
    for cpu, mem, num, milli, models in rows:
        cols["cpu"].append(cpu)
        cols["mem"].append(mem)
        cols["num_gpu"].append(num)
        cols["milli"].append(milli)
        cols["spec"].append(specs.setdefault(models if num else frozenset(), len(specs)))
    arr = {k: np.asarray(v, np.int64) for k, v in cols.items()}
    return PodTable(source, arr["cpu"], arr["mem"], arr["num_gpu"], arr["milli"], arr["spec"], tuple(specs))


def _gpu_shape(d: Demand) -> tuple[int, int]:
    """(GPUs, per-GPU milli) of a demand in bench packing's terms."""
    if d.kind is DemandKind.WHOLE:
        return d.count, FULL
    if d.kind is DemandKind.SHARE:
        return 1, max(d.compute_milli, 1)
    return 0, 0


def node_table(snap: Snapshot) -> NodeTable:
    """The snapshot's nodes as a bench packing node list, in the snapshot's order (its tie-break order)."""
    s = snap.static
    models: dict[str, int] = {}
    model = []
    for i in range(len(s.names)):
        ids = s.model[i][s.valid[i]]
        model.append(models.setdefault(s.models[int(ids[0])], len(models)) if len(ids) else -1)
    return NodeTable("replay", s.names, s.cpu_total.copy(), s.hmem_total.copy(), s.gpu_count.astype(np.int64),
                     np.asarray(model, np.int64), tuple(models))


class Mirror:
    """bench packing's State (and FGD's tracker when typical pods are given) kept equal to a snapshot."""

    def __init__(self, snap: Snapshot, pods: PodTable | None) -> None:
        self.table = node_table(snap)
        self.state = State(self.table, np.arange(len(self.table.names)))
        # nodes whose columns are equal score equal under every policy here: one id per distinct
        # (GPUs, model, free milli per GPU, free CPU), so a policy need see only the first of each
        self._ids: dict[tuple[int, int, bytes, int], int] = {}
        self.kind = np.zeros(len(self.table.names), np.int64)
        self.sync(snap, None)
        self.tracker = None if pods is None else FragTracker(FragModel(target_mix(pods), self.table.models),
                                                             self.state)

    def sync(self, snap: Snapshot, i: int | None) -> None:
        """Copy row i (None: every row) of the snapshot's free capacity into the State."""
        st = self.state
        rows = slice(None) if i is None else slice(i, i + 1)
        with snap.read() as v:
            st.left[rows] = v.milli[rows, : st.k]  # 0 on MIG-mode GPUs and padding: neither takes a plain task
            st.cpu[rows] = v.cpu_free[rows]
            st.mem[rows] = v.hmem_free[rows]
        left = st.left[rows]
        st.full[rows] = (left == FULL).sum(axis=1)
        st.maxleft[rows] = left.max(axis=1)
        st.total[rows] = left.sum(axis=1)
        for r in range(len(st.names)) if i is None else (i,):
            key = (int(st.gpus[r]), int(st.model[r]), st.left[r].tobytes(), int(st.cpu[r]))
            self.kind[r] = self._ids.setdefault(key, len(self._ids))
        if i is not None and self.tracker is not None:
            self.tracker.refresh(i)

    def distinct(self, rows: np.ndarray) -> np.ndarray:
        """The rows (in order) that are the first of their kind: a policy that takes the first best row
        picks among these what it would pick among all (equal columns, equal scores, the first wins)."""
        _, first = np.unique(self.kind[rows], return_index=True)
        return rows[np.sort(first)]

    def frag_milli(self) -> float:
        assert self.tracker is not None
        return self.tracker.total()


def fgd_frag(snap: Snapshot, pods: PodTable) -> float:
    """bench packing's fragmentation of a snapshot (milli): FGD's measure with the pod list's typical pods."""
    return Mirror(snap, pods).frag_milli()


def task_of(d: Demand) -> Task:
    """The demand as the task bench packing's policies score (a MIG slice scores as a CPU-only task)."""
    num, milli = _gpu_shape(d)
    return Task(0, d.cpu_milli, d.host_memory_mib, num, milli, 0, d.models if num else frozenset())


class GpupackChooser:
    """bench packing's gpupack rule (benchmarks/policies/gpupack.Gpupack) on the caller's snapshot."""

    name = "gpupack"

    def __init__(self) -> None:
        self.learner = MixLearner()

    def place(self, snap: Snapshot, d: Demand) -> Placement | None:
        verdict = fit(snap, d)
        if not verdict.fits.any():  # bench packing asks its policy only when the task fits somewhere
            return None
        self.learner.observe(d)
        mix = self.learner.mix()
        best = int(np.argmax(score(verdict, mix, policy=DEFAULT_POLICY).value))
        if not verdict.fits[best]:
            return None
        with snap.read() as v:  # binpack's place() on this verdict's node, without fitting every node again
            return _place(v, d, best, mix)

    def booked(self, snap: Snapshot, p: Placement) -> None:
        """Nothing to mirror: this rule reads the snapshot itself."""


class PaperChooser:
    """FGD or best-fit exactly as bench packing runs them, on a mirror of the caller's snapshot."""

    def __init__(self, name: str, snap: Snapshot, pods: PodTable) -> None:
        self.name = name
        self.mirror = Mirror(snap, pods if name == "fgd" else None)
        st = self.mirror.state
        tracker = self.mirror.tracker or FragTracker(FragModel((), self.mirror.table.models), st)  # best-fit reads none
        self.policy = PAPER[name](Context(st, tracker, self.mirror.table, pods, 0))

    def place(self, snap: Snapshot, d: Demand) -> Placement | None:
        rows = np.flatnonzero(fit(snap, d).fits)
        if not len(rows):
            return None
        rows = self.mirror.distinct(rows)
        t = task_of(d)
        if t.share:  # a share asking for GPU memory too: binpack may fit it where the mirror's milli cannot
            rows = rows[self.mirror.state.maxleft[rows] >= t.milli]
            if not len(rows):
                return place(snap, d, snap.names[int(np.flatnonzero(fit(snap, d).fits)[0])])
        c = self.policy.choose(t, rows)
        if c is None:  # (FGD and best-fit always choose among feasible rows)
            return None
        name = snap.names[c.node]
        common = {"cpu_milli": d.cpu_milli, "host_memory_mib": d.host_memory_mib, "kind": d.kind}
        if d.kind is DemandKind.NONE:
            return Placement(name, **common)  # type: ignore[arg-type]
        if d.kind is DemandKind.WHOLE and d.topology is not Topology.NVLINK and self._whole_ok(snap, d, c):
            return Placement(name, c.gpus, **common)  # type: ignore[arg-type]
        if d.kind is DemandKind.SHARE and d.memory_mib == 0:
            return Placement(name, c.gpus, compute_milli=d.compute_milli, **common)  # type: ignore[arg-type]
        return place(snap, d, name)  # MIG, NVLink sets, memory shares: binpack's devices on that node

    @staticmethod
    def _whole_ok(snap: Snapshot, d: Demand, c: Choice) -> bool:
        """Whether the policy's first free GPUs are whole-free GPUs of an allowed model (a node mixing
        models may offer the policy, which sees one model per node, a GPU of another)."""
        with snap.read() as v:
            bits = int(v.whole_bits[c.node]) & (int(v.s.model_bits(d.models)[c.node]) if d.models else -1)
        return all((bits >> g) & 1 for g in c.gpus)

    def booked(self, snap: Snapshot, p: Placement) -> None:
        self.mirror.sync(snap, snap.node_index(p.node))


def chooser(name: str, snap: Snapshot, pods: PodTable) -> GpupackChooser | PaperChooser:
    """The replay's chooser for a policy name (NAMES), on the empty snapshot it starts from."""
    if name == "gpupack":
        return GpupackChooser()
    if name in PAPER:
        return PaperChooser(name, snap, pods)
    raise ValueError(f"policy {name!r}: the replay knows {', '.join(NAMES)}")
