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

from benchmarks.cluster import State, Task
from benchmarks.frag import FragModel, FragTracker
from benchmarks.policies import Context, Factory
from benchmarks.policies.best_fit import BestFit
from benchmarks.policies.fgd import Fgd
from benchmarks.trace import FULL, NodeTable, PodTable
from benchmarks.workload import target_mix
from binpack import Demand, DemandKind, FitResult, MixLearner, Placement, Snapshot, Topology, fit, place, score
from binpack.mix import EMPTY_MIX
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
        k = self.state.k
        with snap.read() as v:  # per GPU: what binpack derives free milli from (book() redoes it)
            self.comp = v.compute_free[:, :k].astype(np.int64)
            self.memf = v.mem_free[:, :k].astype(np.int64)
            self.memt = v.s.mem_total[:, :k].astype(np.int64)
            self.plain = v.s.plain[:, :k].copy()
        self.sync(snap)
        self.tracker = None if pods is None else FragTracker(FragModel(target_mix(pods), self.table.models),
                                                             self.state)

    def sync(self, snap: Snapshot) -> None:
        """Copy the snapshot's free capacity into the State, every row."""
        st = self.state
        with snap.read() as v:
            st.left[:] = v.milli[:, : st.k]  # 0 on MIG-mode GPUs and padding: neither takes a plain task
            st.cpu[:] = v.cpu_free
            st.mem[:] = v.hmem_free
        st.full[:] = (st.left == FULL).sum(axis=1)
        st.maxleft[:] = st.left.max(axis=1)
        st.total[:] = st.left.sum(axis=1)
        for r in range(len(st.names)):
            self.kind[r] = self._ids.setdefault(self._key(r), len(self._ids))

    def _key(self, r: int) -> tuple[int, int, bytes, int]:
        st = self.state
        return int(st.gpus[r]), int(st.model[r]), st.left[r].tobytes(), int(st.cpu[r])

    def book(self, i: int, p: Placement) -> None:
        """Row i after binpack booked p there, without reading the snapshot back: binpack's own
        arithmetic (alloc._changes, snapshot.derived_row) on the GPUs p takes. A MIG slice changes no
        plain GPU's free milli (MIG-mode GPUs have none), only CPU and memory."""
        st = self.state
        st.cpu[i] -= p.cpu_milli
        st.mem[i] -= p.host_memory_mib
        if p.gpus and p.kind in (DemandKind.WHOLE, DemandKind.SHARE):
            for g in p.gpus:
                if p.kind is DemandKind.WHOLE:
                    self.comp[i, g] = self.memf[i, g] = 0
                else:
                    self.comp[i, g] -= p.compute_milli
                    self.memf[i, g] -= p.memory_mib
                c, m, t = int(self.comp[i, g]), int(self.memf[i, g]), int(self.memt[i, g])
                st.left[i, g] = min(c, m * FULL // max(t, 1)) if self.plain[i, g] else 0
            left = st.left[i]
            st.full[i] = int((left == FULL).sum())
            st.maxleft[i] = int(left.max())
            st.total[i] = int(left.sum())
        self.kind[i] = self._ids.setdefault(self._key(i), len(self._ids))
        if self.tracker is not None:
            self.tracker.refresh(i)

    def distinct(self, rows: np.ndarray) -> np.ndarray:
        """The rows (in order) that are the first of their kind: a policy that takes the first best row
        picks among these what it would pick among all (equal columns, equal scores, the first wins)."""
        kinds = self.kind[rows]
        at = np.arange(len(rows))
        first = np.empty(len(self._ids), np.int64)
        first[kinds[::-1]] = at[::-1]  # repeated indices: the last write wins, i.e. the first row of a kind
        return rows[first[kinds] == at]

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
        s = snap.static
        # one GPU model per node: the mirror's per-node model then says what binpack's per-GPU models say
        self.one_model = bool(((s.model == s.model[:, :1]) | ~s.valid).all())
        self.memory_shares = False  # once a share took GPU memory, free milli no longer says free compute
        self.dedup = name == "fgd"  # FGD scores every node and GPU: equal nodes are worth skipping

    def feasible(self, snap: Snapshot, d: Demand) -> tuple[np.ndarray, FitResult | None]:
        """Rows where the demand fits: bench packing's own State.feasible where the mirror's free milli
        decides it (no GPU; whole GPUs; compute-only shares while no share holds GPU memory), the same
        test per GPU on free compute and memory for other shares (binpack's share_gpus: a plain GPU of
        an allowed model with both free; a replay starts from empty nodes, so no foreign pod holds
        any), all with one GPU model per node; binpack's fit otherwise (MIG, NVLink sets, mixed models)."""
        m, st = self.mirror, self.mirror.state
        if d.kind is DemandKind.NONE or (self.one_model and (
                (d.kind is DemandKind.WHOLE and d.topology is not Topology.NVLINK)
                or (d.kind is DemandKind.SHARE and not d.memory_mib and not self.memory_shares))):
            return np.flatnonzero(st.feasible(task_of(d))), None
        if d.kind is DemandKind.SHARE and self.one_model:
            gpu = m.plain & (m.comp >= d.compute_milli) & (m.memf >= d.memory_mib)
            ok = (st.cpu >= d.cpu_milli) & (st.mem >= d.host_memory_mib) & st.model_ok(d.models) & gpu.any(axis=1)
            return np.flatnonzero(ok), None
        verdict = fit(snap, d)
        return np.flatnonzero(verdict.fits), verdict

    def place(self, snap: Snapshot, d: Demand) -> Placement | None:
        rows, verdict = self.feasible(snap, d)
        if not len(rows):
            return None
        if self.dedup:
            rows = self.mirror.distinct(rows)
        t = task_of(d)
        common = {"cpu_milli": d.cpu_milli, "host_memory_mib": d.host_memory_mib, "kind": d.kind}
        if t.share and verdict is None:
            # the policy sees free milli (the scarcer of compute and memory): a node whose GPUs fit the
            # share's memory and compute may show none with the compute's milli free
            fits = rows[self.mirror.state.maxleft[rows] >= t.milli]
            c = self.policy.choose(t, fits) if len(fits) else None
            i = int(fits[0] if c is None else c.node) if len(fits) else int(rows[0])
            g = c.gpus[0] if c is not None else -1
            if not self._share_fits(i, g, d):
                g = self._best_fit_gpu(i, d)  # the simulators' rule for a share: the fullest GPU it fits
            return Placement(snap.names[i], (g,), memory_mib=d.memory_mib, compute_milli=d.compute_milli,
                             **common)  # type: ignore[arg-type]
        c = self.policy.choose(t, rows)
        if c is None:  # (FGD and best-fit always choose among feasible rows)
            return None
        name = snap.names[c.node]
        if d.kind is DemandKind.NONE:
            return Placement(name, **common)  # type: ignore[arg-type]
        if d.kind is DemandKind.WHOLE and verdict is None:
            return Placement(name, c.gpus, **common)  # type: ignore[arg-type]
        return self._binpack(snap, d, verdict, c.node)  # MIG, NVLink sets, mixed models

    def _share_fits(self, i: int, g: int, d: Demand) -> bool:
        m = self.mirror
        return g >= 0 and bool(m.plain[i, g]) and m.comp[i, g] >= d.compute_milli and m.memf[i, g] >= d.memory_mib

    def _best_fit_gpu(self, i: int, d: Demand) -> int:
        """The GPU of node i with the least free milli among those with the share's compute and memory free
        (the lowest index among equals)."""
        m = self.mirror
        ok = m.plain[i] & (m.comp[i] >= d.compute_milli) & (m.memf[i] >= d.memory_mib)
        return int(np.argmin(np.where(ok, m.state.left[i], FULL + 1)))

    @staticmethod
    def _binpack(snap: Snapshot, d: Demand, verdict: FitResult | None, i: int) -> Placement | None:
        """binpack's devices for the demand on node i (what place() picks, without fitting every node again)."""
        if verdict is None:
            return place(snap, d, snap.names[i])
        if not verdict.fits[i]:
            return None
        with snap.read() as v:
            return _place(v, d, i, EMPTY_MIX)

    def booked(self, snap: Snapshot, p: Placement) -> None:
        self.memory_shares |= p.kind is DemandKind.SHARE and p.memory_mib > 0
        self.mirror.book(snap.node_index(p.node), p)


def chooser(name: str, snap: Snapshot, pods: PodTable) -> GpupackChooser | PaperChooser:
    """The replay's chooser for a policy name (NAMES), on the empty snapshot it starts from."""
    if name == "gpupack":
        return GpupackChooser()
    if name in PAPER:
        return PaperChooser(name, snap, pods)
    raise ValueError(f"policy {name!r}: the replay knows {', '.join(NAMES)}")
