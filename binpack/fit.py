"""`fit`: for one demand, a verdict per node, vectorised over nodes.

Each node fits, or gets a reason code, a sentence a user understands, and whether evicting pods
could help (codes below RESOLVABLE never can: wrong model, too few GPUs, no such MIG profile...).
Those static reasons are computed once per (cluster, demand) and cached; a call then only checks
what is free now, from the bit sets and lookup tables of snapshot.py and tables.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from binpack import rows
from binpack.catalog import FULL_MILLI, lookup
from binpack.snapshot import Snapshot, Static, View, _frozen
from binpack.tables import cliques, mig_now, mig_table, per_demand
from binpack.types import Demand, DemandKind, Topology


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
    # what fit computed on the way that score needs too (same snapshot): never part of the verdict
    aux: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

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


def mig_counts(v: View, demand: Demand) -> tuple[np.ndarray, np.ndarray]:
    """(N,) instances of the demand's profile each node could ever hold, and could hold now."""
    t = mig_table(v.s, demand.mig_profile, demand.models)
    return t.ever, mig_now(t, v.mig_used, v.me_used, len(v.s.names))


def share_gpus(v: View, demand: Demand) -> np.ndarray:
    """(N,K) GPUs that can take the share now (foreign pods may hold unknown whole GPUs)."""
    s = v.s
    ok = per_demand(s, ("share_ok", demand.models), lambda: _frozen(s.model_ok(demand.models) & s.plain))
    if demand.memory_mib:
        ok = ok & (v.mem_free >= demand.memory_mib)
    if demand.compute_milli:
        ok = ok & (v.compute_free >= demand.compute_milli)
    spare = (np.bitwise_count(v.whole_bits) - v.foreign) > 0
    if spare.all():
        return ok
    return ok & ((v.milli != FULL_MILLI) | spare[:, None])


def fit(snapshot: Snapshot, demand: Demand) -> FitResult:
    """A verdict for every node of the snapshot."""
    with snapshot.read() as v:
        return _fit(snapshot, v, demand)


# A condition per node, its reason, and what the node has of the thing (an array or one number).
Check = tuple[np.ndarray, Reason, "np.ndarray | int"]


def _static_checks(s: Static, d: Demand) -> tuple[np.ndarray, np.ndarray]:
    """The reasons that no eviction can change (codes below RESOLVABLE), first failing one per node."""
    checks: list[Check] = []
    if d.kind is not DemandKind.NONE:  # a CPU-only demand needs no GPU, only CPU and memory
        checks.append((rows.count(s.valid & s.healthy) == 0, Reason.NO_GPU, 0))
        checks.append((rows.count(s.model_ok(d.models)) == 0, Reason.WRONG_MODEL, 0))
    checks.append((s.cpu_total < d.cpu_milli, Reason.CPU_TOO_BIG, s.cpu_total))
    checks.append((s.hmem_total < d.host_memory_mib, Reason.MEMORY_TOO_BIG, s.hmem_total))
    if d.kind is DemandKind.WHOLE:
        bits = s.model_bits(d.models)
        plain = np.bitwise_count(bits).astype(np.int64)
        checks.append((plain < d.count, Reason.TOO_FEW_GPUS, plain))
        if d.topology is Topology.NVLINK and d.count > 1:
            ever = cliques(s, bits)
            checks.append((ever < d.count, Reason.NO_NVLINK_SET, ever))
    elif d.kind is DemandKind.SHARE:
        ok = s.model_ok(d.models) & s.plain
        checks.append((~rows.any_(ok), Reason.NO_SHARE_GPU, 0))  # only MIG GPUs qualify: never fits
        biggest = np.where(ok, s.mem_total, 0).max(axis=1).astype(np.int64)
        checks.append((biggest < d.memory_mib, Reason.SHARE_TOO_BIG, biggest))
    elif d.kind is DemandKind.MIG:
        ever = mig_table(s, d.mig_profile, d.models).ever
        checks.append((ever == 0, Reason.NO_MIG_PROFILE, 0))
        checks.append((ever < d.count, Reason.TOO_FEW_MIG, ever))
    return _first(checks, len(s.names))


def _first(checks: list[Check], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per node, the first failing check's reason and what the node has (0 and 0 where all pass)."""
    reason = np.zeros(n, np.int8)
    have = np.zeros(n, np.int64)
    for cond, code, what in reversed(checks):  # the earliest check wins: write it last
        if cond.any():
            reason = np.where(cond, np.int8(code), reason)
            have = np.where(cond, what, have)
    return _frozen(reason), _frozen(have)


def _fit(snapshot: Snapshot, v: View, d: Demand) -> FitResult:
    s = v.s
    n = len(s.names)
    static_reason, static_have = per_demand(s, ("static", d), lambda: _static_checks(s, d))
    ok = static_reason == 0
    aux: dict[str, np.ndarray] = {}
    busy: list[Check] = []
    if d.kind is DemandKind.WHOLE:
        wb = v.whole_bits
        wm = wb & s.model_bits(d.models) if d.models else wb
        aux["whole_bits"] = wm
        # foreign pods hold unknown GPUs of any model: count them against the node, not the model
        spare = np.bitwise_count(wb).astype(np.int64) - v.foreign
        free = np.minimum(np.bitwise_count(wm), spare) if d.models else spare
        busy.append((free < d.count, Reason.GPUS_BUSY, free))
        if d.topology is Topology.NVLINK and d.count > 1:
            now = cliques(s, wm, ok & (free >= d.count))
            busy.append((now < d.count, Reason.NVLINK_BUSY, now))
    elif d.kind is DemandKind.SHARE:
        can = share_gpus(v, d)
        aux["share_gpus"] = can
        busy.append((~rows.any_(can), Reason.SHARE_BUSY, 0))
    elif d.kind is DemandKind.MIG:
        t = mig_table(s, d.mig_profile, d.models)
        now = mig_now(t, v.mig_used, v.me_used, n)
        aux["mig_ever"], aux["mig_now"] = t.ever, now
        busy.append((now < d.count, Reason.MIG_BUSY, now))
    if d.cpu_milli:
        busy.append((v.cpu_free < d.cpu_milli, Reason.CPU_BUSY, v.cpu_free))
    if d.host_memory_mib:
        busy.append((v.hmem_free < d.host_memory_mib, Reason.MEMORY_BUSY, v.hmem_free))
    reason, have = _first(busy, n)
    reason = np.where(ok, reason, static_reason)
    have = np.where(ok, have, static_have)
    return FitResult(snapshot, d, reason == 0, reason, have, aux)


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
