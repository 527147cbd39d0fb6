"""What `gpupack report` says of one picture of a cluster: GPUs allocated, stranded and free per model,
MIG slices free, and why each pending GPU pod fits nowhere.

The cluster is read exactly as the extender reads it: the objects go through ClusterState (node
inventories or GFD labels, `gpupack.io/devices` records, foreign pods counted as whole GPUs), so
the report and the scheduler cannot disagree about what is free. Stranded GPUs are FGD's measure
(binpack/frag.py): the free GPU milli that the cluster's own workload mix, learned from its pods,
could not use where it lies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from binpack import DemandKind, Mix, Placement, Snapshot, allocate, fit, set_foreign
from binpack.catalog import FULL_MILLI, lookup
from binpack.frag import current
from binpack.snapshot import Static
from binpack.types import MigMode
from scheduler.report.dump import Dump, Obj
from scheduler.state.cluster import TERMINAL, ClusterState, StateView
from scheduler.translate.pod import InvalidPod, PodRequest, read_pod


@dataclass(frozen=True)
class ModelRow:
    """One GPU model across the cluster; GPU figures are in GPUs (shares count their fraction)."""

    model: str
    nodes: int
    gpus: int
    allocated: float
    free: float
    stranded: float  # of the free: what the mix could not use where it lies (FGD's measure)
    whole_free: int  # GPUs with nothing on them
    mig_gpus: int
    mig_slices_free: int
    mig_slices: int


@dataclass(frozen=True)
class PendingPod:
    """A GPU pod not bound to a node, and why it fits nowhere now (or where it could go)."""

    namespace: str
    name: str
    asks: str
    fits_on: int  # nodes it fits on now (0: none)
    reason: str


@dataclass(frozen=True)
class Picture:
    """The cluster as read: its snapshot, learned mix, the pods that hold or want GPUs."""

    dump: Dump
    state: ClusterState
    view: StateView
    pods: tuple[tuple[Obj, PodRequest | None, str], ...]  # (object, request or None, parse error)

    @property
    def snapshot(self) -> Snapshot:
        return self.view.snapshot

    @property
    def mix(self) -> Mix:
        return self.view.mix


def read(dump: Dump) -> Picture:
    """Feed the objects to a ClusterState (as a fresh list/watch would) and read one view."""
    state = ClusterState(mix_refresh_s=0.0)
    state.replace("nodes", list(dump.nodes))
    state.replace("pods", list(dump.pods))
    parsed: list[tuple[Obj, PodRequest | None, str]] = []
    for p in dump.pods:
        entry = state.pod(str((p.get("metadata") or {}).get("uid") or ""))
        if entry is not None and entry.request is not None:  # parsed once already, by the state
            parsed.append((p, entry.request, ""))
            continue
        try:
            parsed.append((p, read_pod(p), ""))
        except InvalidPod as e:
            parsed.append((p, None, str(e)))
    return Picture(dump, state, state.view(), tuple(parsed))


def describe(req: PodRequest) -> str:
    """A pod's GPU ask in a few words."""
    d = req.demand
    models = f" of {'|'.join(sorted(d.models))}" if d.models else ""
    if d.kind is DemandKind.WHOLE:
        return f"{d.count} GPU{'s' if d.count > 1 else ''}{models}" + (" NVLinked" if d.topology.value == "nvlink"
                                                                          else "")
    if d.kind is DemandKind.SHARE:
        return f"share {d.memory_mib} MiB, {d.compute_milli / 10:.0f}% SMs{models}"
    if d.kind is DemandKind.MIG:
        return f"{d.count} x MIG {d.mig_profile}"
    return "no GPU"


def node_models(snap: Snapshot) -> list[str]:
    """Per node, the model of its first GPU ("" for a node without GPUs)."""
    s = snap.static
    out = []
    for i in range(len(s.names)):
        ids = s.model[i][s.valid[i]]
        out.append(s.models[int(ids[0])] if len(ids) else "")
    return out


def gpu_use(snap: Snapshot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per node: GPUs counted (valid and healthy), allocated (in GPUs) and whole GPUs free."""
    s = snap.static
    with snap.read() as v:
        ok = s.valid & s.healthy
        plain = ok & (s.mig_mode == MigMode.NONE)
        used = np.where(plain, FULL_MILLI - v.milli.astype(np.int64), 0).sum(axis=1) / FULL_MILLI
        mig = ok & (s.mig_mode != MigMode.NONE)
        slices = _slices(s)
        taken = np.bitwise_count(v.mig_used.astype(np.uint8)).astype(np.int64)
        used = used + np.where(mig, taken / np.maximum(slices, 1), 0.0).sum(axis=1)
        whole = np.bitwise_count(v.whole_bits).astype(np.int64)
        foreign = v.foreign.astype(np.int64)
    # foreign pods hold whole GPUs gpupack cannot name: they count as taken on their node
    return ok.sum(axis=1), used + np.minimum(foreign, whole), np.maximum(whole - foreign, 0)


def _slices(s: Static) -> np.ndarray:
    """(N,K) memory slices of each GPU's model (0 for models without MIG)."""
    per = np.asarray([(g.mig.memory_slices if (g := lookup(m)) and g.mig else 0) for m in s.models] or [0])
    return np.where(s.model >= 0, per[np.maximum(s.model, 0)], 0)


def materialize(snap: Snapshot) -> Snapshot:
    """The snapshot with foreign pods' GPUs booked on the node's last idle GPUs, so a measure that
    reads free milli per GPU does not count them free (which GPUs they hold is unknown; the count is
    what matters to how much of the node is left)."""
    with snap.read() as v:
        held = [(i, int(n)) for i, n in enumerate(v.foreign.tolist()) if n > 0]
        idle = {i: np.flatnonzero(v.whole_free()[i]).tolist() for i, _ in held}
    for i, n in held:
        name = snap.names[i]
        gpus = tuple(idle[i][-n:]) if n <= len(idle[i]) else tuple(idle[i])
        snap = set_foreign(snap, name, 0)
        if gpus:
            snap = allocate(snap, Placement(name, gpus=gpus))
    return snap


def stranded(snap: Snapshot, mix: Mix) -> np.ndarray:
    """Per node, free GPUs (milli / 1000) the mix could not use there: FGD's fragmentation."""
    if len(mix) == 0:
        return np.zeros(len(snap.names))
    snap = materialize(snap)
    with snap.read() as v:
        _, lost = current(v, None, mix, 0.0)
        return np.maximum(np.asarray(lost, float), 0.0) / FULL_MILLI


def per_model(snap: Snapshot, mix: Mix) -> tuple[ModelRow, ...]:
    s = snap.static
    gpus, used, whole = gpu_use(snap)
    lost = stranded(snap, mix)
    with snap.read() as v:
        mig = s.valid & s.healthy & (s.mig_mode != MigMode.NONE)
        slices = _slices(s)
        free_slices = np.where(mig, slices - np.bitwise_count(v.mig_used.astype(np.uint8)), 0).sum(axis=1)
        all_slices = np.where(mig, slices, 0).sum(axis=1)
    rows = []
    models = np.asarray(node_models(snap), dtype=object)
    for m in sorted({m for m in models if m}):
        at = models == m
        rows.append(ModelRow(m, int(at.sum()), int(gpus[at].sum()), round(float(used[at].sum()), 2),
                             round(float(gpus[at].sum() - used[at].sum()), 2), round(float(lost[at].sum()), 2),
                             int(whole[at].sum()), int(mig[at].sum()), int(free_slices[at].sum()),
                             int(all_slices[at].sum())))
    return tuple(rows)


def _is_pending(p: Obj) -> bool:
    return not (p.get("spec") or {}).get("nodeName") and (p.get("status") or {}).get("phase") not in TERMINAL


def why_not(snap: Snapshot, req: PodRequest) -> tuple[int, str]:
    """(nodes it fits on now, the reasons it does not elsewhere, most frequent first)."""
    verdict = fit(snap, req.demand)
    n_fit = int(verdict.fits.sum())
    if n_fit:
        return n_fit, f"fits on {n_fit} node(s) now: not scheduled yet, or held by something gpupack does not read"
    if not len(snap.names):
        return 0, "the cluster has no node gpupack can read"
    counts = Counter(verdict.reason.tolist())
    parts = []
    for code, n in counts.most_common(2):
        i = int(np.flatnonzero(verdict.reason == code)[0])
        parts.append(f"{n} node(s), e.g. {snap.names[i]}: {verdict.message(i)}")
    more = len(counts) - 2
    return 0, "; ".join(parts) + (f"; {more} other reason(s)" if more > 0 else "")


def pending(pic: Picture) -> tuple[PendingPod, ...]:
    out = []
    for p, req, err in pic.pods:
        if not _is_pending(p):
            continue
        meta = p.get("metadata") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if req is None:
            out.append(PendingPod(ns, name, "invalid", 0, f"gpupack cannot read its GPU request: {err}"))
        elif req.managed:
            n_fit, why = why_not(pic.snapshot, req)
            out.append(PendingPod(ns, name, describe(req), n_fit, why))
    return tuple(sorted(out, key=lambda w: w.fits_on > 0))  # those that fit nowhere first
