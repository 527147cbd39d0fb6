"""`allocate` / `release`: a new snapshot with one placement booked or freed, in O(GPUs of a node).

Both re-check capacity against the snapshot they are given and raise Conflict rather than book a
device twice or free what was not booked; callers (bind) treat Conflict as "re-plan", never crash.
"""

from __future__ import annotations

import numpy as np

from binpack.catalog import FULL_MILLI, lookup
from binpack.persist import Diff
from binpack.snapshot import Snapshot, View
from binpack.types import DemandKind, MigMode, Placement


class Conflict(ValueError):
    """The placement does not fit (allocate) or is not booked (release) in this snapshot."""


def allocate(snapshot: Snapshot, placement: Placement) -> Snapshot:
    """A new snapshot with the placement booked."""
    with snapshot.read() as v:
        changes = _changes(v, snapshot.node_index(placement.node), placement, +1)
    return snapshot.derive(changes)


def release(snapshot: Snapshot, placement: Placement) -> Snapshot:
    """A new snapshot with the placement freed again."""
    with snapshot.read() as v:
        changes = _changes(v, snapshot.node_index(placement.node), placement, -1)
    return snapshot.derive(changes)


def set_foreign(snapshot: Snapshot, node: str, gpus: int) -> Snapshot:
    """Record that pods gpupack did not place hold `gpus` whole GPUs on the node (devices unknown)."""
    if gpus < 0:
        raise ValueError(f"foreign gpus: must be >= 0, got {gpus}")
    return snapshot.derive([("foreign", snapshot.node_index(node), np.int16(gpus))])


def _mig_mask(model: str, profile: str, start: int, gpu: int) -> tuple[int, bool]:
    gm = lookup(model)
    if gm is None or gm.mig is None:
        raise Conflict(f"gpu {gpu}: model {model} has no MIG")
    prof = gm.mig.profiles.get(profile)
    if prof is None or start not in prof.starts:
        raise Conflict(f"gpu {gpu}: {profile}@{start} is not a legal placement on {model}")
    return ((1 << prof.memory_slices) - 1) << start, prof.media_extension


def _changes(v: View, i: int, p: Placement, sign: int) -> Diff:
    s = v.s
    k = s.k
    mem = v.mem_free[i].copy()
    comp = v.compute_free[i].copy()
    used = v.mig_used[i].copy()
    me = v.me_used[i].copy()
    for g in p.gpus + tuple(m.gpu for m in p.mig):
        if not 0 <= g < k or not s.valid[i, g]:
            raise Conflict(f"node {p.node}: no GPU {g}")
    if p.kind is DemandKind.WHOLE:
        for g in p.gpus:
            if s.mig_mode[i, g] != MigMode.NONE:
                raise Conflict(f"node {p.node}: GPU {g} is in MIG mode")
            full = mem[g] == s.mem_total[i, g] and comp[g] == FULL_MILLI
            empty = mem[g] == 0 and comp[g] == 0
            if (sign > 0 and not full) or (sign < 0 and not empty):
                raise Conflict(f"node {p.node}: GPU {g} is {'busy' if sign > 0 else 'not booked whole'}")
            mem[g], comp[g] = (0, 0) if sign > 0 else (s.mem_total[i, g], FULL_MILLI)
    elif p.kind is DemandKind.SHARE:
        if len(p.gpus) != 1:
            raise Conflict("a share takes exactly one GPU")
        g = p.gpus[0]
        if s.mig_mode[i, g] != MigMode.NONE:
            raise Conflict(f"node {p.node}: GPU {g} is in MIG mode")
        nm, nc = int(mem[g]) - sign * p.memory_mib, int(comp[g]) - sign * p.compute_milli
        if nm < 0 or nc < 0 or nm > s.mem_total[i, g] or nc > FULL_MILLI:
            raise Conflict(f"node {p.node}: GPU {g} cannot {'take' if sign > 0 else 'return'} this share")
        mem[g], comp[g] = nm, nc
    elif p.kind is DemandKind.MIG:
        for slot in p.mig:
            g = slot.gpu
            mode = s.mig_mode[i, g]
            if mode == MigMode.NONE:
                raise Conflict(f"node {p.node}: GPU {g} is not in MIG mode")
            model = s.models[s.model[i, g]]
            mask, is_me = _mig_mask(model, slot.profile, slot.start, g)
            if mode == MigMode.STATIC:
                geom = lookup(model).mig  # type: ignore[union-attr]
                bit = geom.placement_bits()[(slot.profile, slot.start)]  # type: ignore[union-attr]
                if not (int(s.layout[i, g]) >> bit) & 1:
                    raise Conflict(f"node {p.node}: GPU {g} has no {slot.profile} instance at {slot.start}")
            cur = int(used[g])
            if sign > 0:
                if cur & mask or (is_me and me[g]):
                    raise Conflict(f"node {p.node}: GPU {g} slots of {slot.profile}@{slot.start} are taken")
                used[g] = cur | mask
                me[g] = me[g] or is_me
            else:
                if cur & mask != mask:
                    raise Conflict(f"node {p.node}: GPU {g} {slot.profile}@{slot.start} is not booked")
                used[g] = cur & ~mask
                if is_me:
                    me[g] = False
    cpu = int(v.cpu_free[i]) - sign * p.cpu_milli
    hmem = int(v.hmem_free[i]) - sign * p.host_memory_mib
    if cpu < 0 or hmem < 0 or cpu > s.cpu_total[i] or hmem > s.hmem_total[i]:
        raise Conflict(f"node {p.node}: CPU or memory {'exhausted' if sign > 0 else 'over-returned'}")
    out: Diff = []
    for name, new, old in (("mem_free", mem, v.mem_free[i]), ("compute_free", comp, v.compute_free[i]),
                           ("mig_used", used, v.mig_used[i]), ("me_used", me, v.me_used[i])):
        if not np.array_equal(new, old):
            out.append((name, i, new))
    if p.cpu_milli:
        out.append(("cpu_free", i, np.int64(cpu)))
    if p.host_memory_mib:
        out.append(("hmem_free", i, np.int64(hmem)))
    return out
