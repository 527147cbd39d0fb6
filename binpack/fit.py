"""`fit`: for one demand, a verdict per node, vectorised over nodes.

Each node fits, or gets a reason code, a sentence a user understands, and whether evicting pods
could help (codes below RESOLVABLE never can: wrong model, too few GPUs, no such MIG profile...).
The per-node free NVLink check is memoised by (board topology, free GPU mask), so the Python work
is per distinct board state, never per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from binpack.catalog import FULL_MILLI, lookup
from binpack.snapshot import Snapshot, Static, View
from binpack.topology import largest_clique
from binpack.types import Demand, DemandKind, MigMode, Topology


class Reason(IntEnum):
    FITS = 0
    NO_GPU = 1
    WRONG_MODEL = 2
    TOO_FEW_GPUS = 3
    NO_NVLINK_SET = 4
    NO_MIG_PROFILE = 5
    TOO_FEW_MIG = 6
    SHARE_TOO_BIG = 7
    CPU_TOO_BIG = 8
    MEMORY_TOO_BIG = 9
    NO_SHARE_GPU = 10
    RESOLVABLE = 20  # codes from here on may fit after evictions
    GPUS_BUSY = 21
    NVLINK_BUSY = 22
    SHARE_BUSY = 23
    MIG_BUSY = 24
    CPU_BUSY = 25
    MEMORY_BUSY = 26


@dataclass(frozen=True, eq=False)
class FitResult:
    """Verdicts for every node of a snapshot (arrays indexed like `snapshot.names`)."""

    snapshot: Snapshot
    demand: Demand
    fits: np.ndarray  # (N,) bool
    reason: np.ndarray  # (N,) int8 Reason
    have: np.ndarray  # (N,) int64: what the node has of the missing thing (free GPUs, MiB...)

    @property
    def resolvable(self) -> np.ndarray:
        """(N,) True where evicting pods could make the demand fit."""
        return self.reason >= Reason.RESOLVABLE

    def message(self, i: int) -> str:
        """The reason for node i in words (empty when it fits)."""
        return _message(self.snapshot.static, self.demand, int(i), Reason(int(self.reason[i])), int(self.have[i]))


def _mig_tables(s: Static, profile: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per model: the memory-slice masks of the profile's legal placements and their layout bits."""
    key = ("mig", profile)
    hit = s.cache.get(key)
    if hit is None:
        j = 7
        masks = np.full((len(s.models) + 1, j), -1, np.int16)
        bits = np.zeros((len(s.models) + 1, j), np.uint32)
        me = False
        for m, name in enumerate(s.models):
            gm = lookup(name)
            if gm is None or gm.mig is None or profile not in gm.mig.profiles:
                continue
            prof = gm.mig.profiles[profile]
            me = prof.media_extension
            pb = gm.mig.placement_bits()
            for c, (mask, start) in enumerate(zip(prof.masks(), prof.starts, strict=True)):
                masks[m, c] = mask
                bits[m, c] = pb[(profile, start)]
        hit = s.cache[key] = (masks, bits, me)
    return hit


def mig_capacity(v: View, demand: Demand) -> tuple[np.ndarray, np.ndarray]:
    """(N,K) instances of the demand's profile each GPU could ever hold, and could hold now."""
    s = v.s
    masks_t, bits_t, me = _mig_tables(s, demand.mig_profile)
    masks = masks_t[s.model]  # model -1 picks the last row: no candidates
    bits = bits_t[s.model]
    mode = s.mig_mode[..., None]
    exists = (mode == MigMode.DYNAMIC) | (
        (mode == MigMode.STATIC) & (((s.layout[..., None] >> bits) & 1) == 1)
    )
    capable = (masks >= 0) & exists & s.model_ok(demand.models)[..., None]
    free = capable & ((v.mig_used[..., None].astype(np.int16) & masks) == 0)
    ever, now = capable.sum(-1), free.sum(-1)
    if me:
        ever = np.minimum(ever, 1)
        now = np.where(v.me_used, 0, np.minimum(now, 1))
    return ever, now


def share_gpus(v: View, demand: Demand) -> np.ndarray:
    """(N,K) GPUs that can take the share now (foreign pods may hold unknown whole GPUs)."""
    s = v.s
    ok = s.model_ok(demand.models) & (s.mig_mode == MigMode.NONE)
    gpu_fit = ok & (v.mem_free >= demand.memory_mib) & (v.compute_free >= demand.compute_milli)
    whole = v.whole_free()
    spare = (whole.sum(axis=1) - v.foreign) > 0
    return gpu_fit & (~whole | spare[:, None])


def fit(snapshot: Snapshot, demand: Demand) -> FitResult:
    """A verdict for every node of the snapshot."""
    with snapshot.read() as v:
        return _fit(snapshot, v, demand)


def _fit(snapshot: Snapshot, v: View, d: Demand) -> FitResult:
    s = v.s
    n = len(s.names)
    reason = np.zeros(n, np.int8)
    have = np.zeros(n, np.int64)

    def mark(cond: np.ndarray, code: Reason, what: np.ndarray | int) -> None:
        sel = cond & (reason == 0)
        reason[sel] = code
        have[sel] = what if isinstance(what, int) else what[sel]

    model_ok = s.model_ok(d.models)
    if d.kind is not DemandKind.NONE:  # a CPU-only demand needs no GPU, only CPU and memory
        mark((s.valid & s.healthy).sum(axis=1) == 0, Reason.NO_GPU, 0)
        mark(model_ok.sum(axis=1) == 0, Reason.WRONG_MODEL, 0)
    mark(s.cpu_total < d.cpu_milli, Reason.CPU_TOO_BIG, s.cpu_total)
    mark(s.hmem_total < d.host_memory_mib, Reason.MEMORY_TOO_BIG, s.hmem_total)
    busy: list[tuple[np.ndarray, Reason, np.ndarray]] = []
    if d.kind is DemandKind.NONE:
        pass
    elif d.kind is DemandKind.WHOLE:
        plain = (model_ok & (s.mig_mode == MigMode.NONE)).sum(axis=1)
        mark(plain < d.count, Reason.TOO_FEW_GPUS, plain)
        whole = v.whole_free(d.models)
        # foreign pods hold unknown GPUs of any model: count them against the node, not the model
        free = np.minimum(whole.sum(axis=1), v.whole_free().sum(axis=1) - v.foreign)
        if d.topology is Topology.NVLINK and d.count > 1:
            ever = _cliques(s, model_ok & (s.mig_mode == MigMode.NONE), np.ones(n, bool))
            mark(ever < d.count, Reason.NO_NVLINK_SET, ever)
            now = _cliques(s, whole, (reason == 0) & (free >= d.count))
            busy.append((free < d.count, Reason.GPUS_BUSY, free))
            busy.append((now < d.count, Reason.NVLINK_BUSY, now))
        else:
            busy.append((free < d.count, Reason.GPUS_BUSY, free))
    elif d.kind is DemandKind.SHARE:
        ok = model_ok & (s.mig_mode == MigMode.NONE)
        mark(~ok.any(axis=1), Reason.NO_SHARE_GPU, 0)  # only MIG GPUs qualify: a share never fits
        biggest = np.where(ok, s.mem_total, 0).max(axis=1)
        mark(biggest < d.memory_mib, Reason.SHARE_TOO_BIG, biggest)
        can = share_gpus(v, d).any(axis=1)
        busy.append((np.asarray(~can), Reason.SHARE_BUSY, np.zeros(n, np.int64)))
    else:
        ever, now = mig_capacity(v, d)
        ever_n, now_n = ever.sum(axis=1), now.sum(axis=1)
        mark(ever_n == 0, Reason.NO_MIG_PROFILE, 0)
        mark(ever_n < d.count, Reason.TOO_FEW_MIG, ever_n)
        busy.append((now_n < d.count, Reason.MIG_BUSY, now_n))
    for cond, code, what in busy:
        mark(cond, code, what)
    mark(v.cpu_free < d.cpu_milli, Reason.CPU_BUSY, v.cpu_free)
    mark(v.hmem_free < d.host_memory_mib, Reason.MEMORY_BUSY, v.hmem_free)
    return FitResult(snapshot, d, reason == 0, reason, have)


def _cliques(s: Static, gpus: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N,) largest all-NVLinked subset of the marked GPUs, for the selected rows (else 0)."""
    count = gpus.sum(axis=1)
    out = np.where(s.complete, np.where(count > 1, count, np.minimum(count, 1)), 0).astype(np.int64)
    todo = rows & ~s.complete
    if not todo.any():
        return np.where(rows, out, 0)
    weights = (1 << np.arange(s.k, dtype=np.int64))
    masks = (gpus[todo] * weights).sum(axis=1)
    keys = s.topo_id[todo].astype(np.int64) << 20 | masks
    uniq, inv = np.unique(keys, return_inverse=True)
    memo = s.cache.setdefault("cliques", {})
    idx_rows = np.flatnonzero(todo)
    vals = np.empty(len(uniq), np.int64)
    for u, key in enumerate(uniq.tolist()):
        hit = memo.get(key)
        if hit is None:
            row = idx_rows[np.flatnonzero(inv == u)[0]]
            members = [g for g in range(s.k) if (key >> g) & 1]
            hit = memo[key] = largest_clique(s.nvlink[row], members)
        vals[u] = hit
    out[todo] = vals[inv]
    return np.where(rows, out, 0)


def _message(s: Static, d: Demand, i: int, r: Reason, have: int) -> str:
    n = d.count
    if r is Reason.FITS:
        return ""
    if r is Reason.NO_GPU:
        return "node has no usable GPU"
    if r is Reason.WRONG_MODEL:
        models = sorted({g.model for g in s.nodes[i].gpus})
        return f"needs GPU model {'|'.join(sorted(d.models))}; node has {', '.join(models)}"
    if r is Reason.TOO_FEW_GPUS:
        return f"needs {n} GPUs; node has {have} that qualify"
    if r is Reason.NO_NVLINK_SET:
        return f"needs {n} GPUs linked by NVLink; node's largest NVLink set is {have}"
    if r is Reason.NO_MIG_PROFILE:
        return f"needs MIG {d.mig_profile}; no GPU on node offers that profile"
    if r is Reason.TOO_FEW_MIG:
        return f"needs {n} MIG {d.mig_profile}; node can hold at most {have}"
    if r is Reason.NO_SHARE_GPU:
        return "needs a share of one GPU; every GPU that qualifies is in MIG mode (ask for a MIG profile)"
    if r is Reason.SHARE_TOO_BIG:
        return f"needs {d.memory_mib} MiB on one GPU; node's largest GPU has {have} MiB"
    if r in (Reason.CPU_TOO_BIG, Reason.CPU_BUSY):
        word = "allocatable" if r is Reason.CPU_TOO_BIG else "free"
        return f"needs {d.cpu_milli}m CPU; node has {have}m {word}"
    if r in (Reason.MEMORY_TOO_BIG, Reason.MEMORY_BUSY):
        word = "allocatable" if r is Reason.MEMORY_TOO_BIG else "free"
        return f"needs {d.host_memory_mib} MiB memory; node has {have} MiB {word}"
    if r is Reason.GPUS_BUSY:
        return f"needs {n} free GPUs; {max(have, 0)} free"
    if r is Reason.NVLINK_BUSY:
        return f"needs {n} GPUs linked by NVLink; largest free NVLink set has {have}"
    if r is Reason.SHARE_BUSY:
        pct = f" and {d.compute_milli * 100 // FULL_MILLI}% compute" if d.compute_milli else ""
        return f"needs {d.memory_mib} MiB{pct} on one GPU; no GPU has that much free"
    if r is Reason.MIG_BUSY:
        return f"needs {n} free MIG {d.mig_profile}; {have} free"
    return r.name.lower()
