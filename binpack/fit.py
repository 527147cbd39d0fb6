"""`fit`: for one demand, a verdict per node, vectorised over nodes.

Each node fits, or gets a reason code, a sentence a user understands, and whether evicting pods
could help (codes below RESOLVABLE never can: wrong model, too few GPUs, no such MIG profile...).
Those static reasons are computed once per (cluster, demand) and cached; a call then only checks
what is free now, from the bit sets and lookup tables of snapshot.py and tables.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from binpack import rows
from binpack.catalog import FULL_MILLI, lookup
from binpack.memo import ShareOkKey, VerdictKey
from binpack.reasons import Insufficient, Reason, requested
from binpack.snapshot import Snapshot, Static, View, _frozen
from binpack.tables import cliques, mig_now, mig_table, per_demand
from binpack.types import Demand, DemandKind, Topology


@dataclass(frozen=True, slots=True, eq=False)
class FitAux:
    """Per-node arrays fit computed for its checks that score reads again (same view), by demand kind."""

    whole_bits: np.ndarray | None = None  # (N,) whole-free GPUs of the demand's models, as bit sets
    share_gpus: np.ndarray | None = None  # (N, K) GPUs that can take the share now
    mig_ever: np.ndarray | None = None  # (N,) instances of the profile each node could ever hold
    mig_now: np.ndarray | None = None  # (N,) and could hold now


@dataclass(frozen=True, eq=False)
class FitResult:
    """Verdicts for every node of a snapshot (arrays indexed like `snapshot.names`)."""

    snapshot: Snapshot
    demand: Demand
    fits: np.ndarray  # (N,) bool
    reason: np.ndarray  # (N,) int8 Reason
    have: np.ndarray  # (N,) int64: what the node has of the missing thing (free GPUs, MiB...)
    # what fit computed on the way that score needs too (same snapshot): never part of the verdict
    aux: FitAux = field(default_factory=FitAux, repr=False)

    @property
    def resolvable(self) -> np.ndarray:
        """(N,) True where evicting pods could make the demand fit."""
        return self.reason >= Reason.RESOLVABLE

    def insufficient(self, i: int) -> Insufficient:
        """Node i's failed check with what was requested, what the node has and its capacity."""
        s = self.snapshot.static
        r = Reason(int(self.reason[i]))
        have = int(self.have[i])
        cap = _CAPACITY.get(r)
        return Insufficient(
            r, self.demand, requested(r, self.demand), max(have, 0) if r is Reason.GPUS_BUSY else have,
            None if cap is None else int(cap(s)[i]),
            tuple(sorted({g.model for g in s.nodes[i].gpus})) if r is Reason.WRONG_MODEL else ())

    def message(self, i: int) -> str:
        """The reason for node i in words (empty when it fits)."""
        return self.insufficient(int(i)).message


# the node's capacity of the amount a reason is about, where it has one: (N,) per reason
_CAPACITY: dict[Reason, Callable[[Static], np.ndarray]] = {
    Reason.CPU_TOO_BIG: lambda s: s.cpu_total,
    Reason.CPU_BUSY: lambda s: s.cpu_total,
    Reason.MEMORY_TOO_BIG: lambda s: s.hmem_total,
    Reason.MEMORY_BUSY: lambda s: s.hmem_total,
    Reason.TOO_FEW_GPUS: lambda s: s.gpu_count,
    Reason.GPUS_BUSY: lambda s: s.gpu_count,
}


def _mig_tables(s: Static, profile: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per model: the memory-slice masks of the profile's legal placements and their layout bits."""
    hit = s.memo.mig_placements.get(profile)
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
        hit = s.memo.mig_placements[profile] = (masks, bits, me)
    return hit


def model_sets(s: Static) -> np.ndarray:
    """(N,) an id per distinct set of GPU models on a node (the wrong-model sentence names the set)."""
    hit = s.memo.model_sets
    if hit is None:
        ids: dict[frozenset[str], int] = {}
        hit = s.memo.model_sets = _frozen(np.asarray(
            [ids.setdefault(frozenset(g.model for g in n.gpus), len(ids)) for n in s.nodes], np.int64))
    return hit


def mig_counts(v: View, demand: Demand) -> tuple[np.ndarray, np.ndarray]:
    """(N,) instances of the demand's profile each node could ever hold, and could hold now."""
    t = mig_table(v.s, demand.mig_profile, demand.models)
    return t.ever, mig_now(t, v.mig_used, v.me_used, len(v.s.names))


def share_gpus(v: View, demand: Demand) -> np.ndarray:
    """(N,K) GPUs that can take the share now (foreign pods may hold unknown whole GPUs)."""
    s = v.s
    ok = per_demand(s, ShareOkKey(demand.models), lambda: _frozen(s.model_ok(demand.models) & s.plain))
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
    static_reason, static_have = per_demand(s, VerdictKey(d), lambda: _static_checks(s, d))
    ok = static_reason == 0
    aux = FitAux()
    busy: list[Check] = []
    if d.kind is DemandKind.WHOLE:
        wb = v.whole_bits
        wm = wb & s.model_bits(d.models) if d.models else wb
        aux = FitAux(whole_bits=wm)
        # foreign pods hold unknown GPUs of any model: count them against the node, not the model
        spare = np.bitwise_count(wb).astype(np.int64) - v.foreign
        free = np.minimum(np.bitwise_count(wm), spare) if d.models else spare
        busy.append((free < d.count, Reason.GPUS_BUSY, free))
        if d.topology is Topology.NVLINK and d.count > 1:
            now = cliques(s, wm, ok & (free >= d.count))
            busy.append((now < d.count, Reason.NVLINK_BUSY, now))
    elif d.kind is DemandKind.SHARE:
        can = share_gpus(v, d)
        aux = FitAux(share_gpus=can)
        busy.append((~rows.any_(can), Reason.SHARE_BUSY, 0))
    elif d.kind is DemandKind.MIG:
        t = mig_table(s, d.mig_profile, d.models)
        now = mig_now(t, v.mig_used, v.me_used, n)
        aux = FitAux(mig_ever=t.ever, mig_now=now)
        busy.append((now < d.count, Reason.MIG_BUSY, now))
    if d.cpu_milli:
        busy.append((v.cpu_free < d.cpu_milli, Reason.CPU_BUSY, v.cpu_free))
    if d.host_memory_mib:
        busy.append((v.hmem_free < d.host_memory_mib, Reason.MEMORY_BUSY, v.hmem_free))
    reason, have = _first(busy, n)
    reason = np.where(ok, reason, static_reason)
    have = np.where(ok, have, static_have)
    return FitResult(snapshot, d, reason == 0, reason, have, aux)
