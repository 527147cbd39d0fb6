"""`gpupack explain POD`: every node's verdict for one pod, and the node and devices gpupack would pick.

The pod is judged as if it were pending now: if it is bound, its own devices are handed back first
(a bound pod would otherwise be refused for the GPUs it holds itself). The verdicts, scores and the
choice come from the extender's own calls (fit, score, place) on the same snapshot and mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from binpack import Placement, fit, place, release, score, set_foreign
from scheduler.report.analyze import Picture, describe
from scheduler.report.dump import DumpError, Obj
from scheduler.translate.pod import read_pod


@dataclass(frozen=True)
class NodeVerdict:
    node: str
    fits: bool
    score: int | None  # kube-scheduler's 0..10 from gpupack, where it fits
    reason: str  # why not, where it does not
    preemption_may_help: bool


@dataclass(frozen=True)
class Explanation:
    namespace: str
    name: str
    asks: str
    bound_to: str  # "" when pending; a bound pod is judged with its own devices handed back
    verdicts: tuple[NodeVerdict, ...]  # fitting nodes first, best score first
    choice: str  # node gpupack would pick ("" when none fits)
    devices: str
    choice_score: int | None


def find(pic: Picture, ref: str) -> Obj:
    """The pod named `namespace/name`, or `name` when that is unique across namespaces."""
    ns, _, name = ref.rpartition("/")
    hits = [p for p in pic.dump.pods if (p.get("metadata") or {}).get("name") == name
            and (not ns or (p.get("metadata") or {}).get("namespace") == ns)]
    if not hits:
        raise DumpError(f"no pod {ref!r} in {pic.dump.source}")
    if len(hits) > 1:
        spaces = sorted(str((p.get("metadata") or {}).get("namespace")) for p in hits)
        raise DumpError(f"pod {name!r} is in several namespaces ({', '.join(spaces)}): write NAMESPACE/{name}")
    return hits[0]


def _devices(p: Placement) -> str:
    if p.mig:
        return ", ".join(f"MIG {m.profile} on GPU {m.gpu} at slot {m.start}" for m in p.mig)
    if p.memory_mib or p.compute_milli:
        return f"GPU {p.gpus[0]} ({p.memory_mib} MiB, {p.compute_milli / 10:.0f}% SMs)"
    return "GPUs " + ", ".join(str(g) for g in p.gpus) if p.gpus else "no GPU (CPU and memory only)"


def explain(pic: Picture, ref: str) -> Explanation:
    pod = find(pic, ref)
    meta = pod.get("metadata") or {}
    req = read_pod(pod)  # InvalidPod says what is wrong with its GPU request
    snap = pic.snapshot
    entry = pic.state.pod(str(meta.get("uid") or ""))
    bound = entry.node if entry is not None and entry.active else ""
    if entry is not None and entry.active:
        if entry.placement is not None:
            snap = release(snap, entry.placement)
        elif entry.foreign and entry.node in snap.static.index:
            with snap.read() as v:
                held = int(v.foreign[snap.node_index(entry.node)])
            snap = set_foreign(snap, entry.node, max(held - entry.foreign, 0))
    verdict = fit(snap, req.demand)
    scores = score(verdict, pic.mix) if verdict.fits.any() else None
    out = []
    for i, name in enumerate(snap.names):
        ok = bool(verdict.fits[i])
        out.append(NodeVerdict(name, ok, int(scores.integer[i]) if ok and scores is not None else None,
                               "" if ok else verdict.message(i), bool(verdict.resolvable[i]) and not ok))
    out.sort(key=lambda v: (not v.fits, -(v.score or 0), v.node))
    choice, devices, best_score = "", "", None
    if scores is not None:
        best = int(np.argmax(np.where(verdict.fits, scores.value, -np.inf)))
        p = place(snap, req.demand, snap.names[best], pic.mix)
        if p is not None:
            choice, devices, best_score = p.node, _devices(p), int(scores.integer[best])
    return Explanation(str(meta.get("namespace") or ""), str(meta.get("name") or ""), describe(req), bound,
                       tuple(out), choice, devices, best_score)
