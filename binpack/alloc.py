"""`allocate` / `release`: a new snapshot with one placement booked or freed, in O(GPUs of a node).

Both re-check capacity against the snapshot they are given and raise Conflict rather than book a
device twice or free what was not booked; callers (bind) treat Conflict as "re-plan", never crash.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from binpack.catalog import FULL_MILLI, lookup
from binpack.persist import Diff
from binpack.snapshot import Snapshot, Static, View, derived_row, node_row
from binpack.types import DemandKind, MigMode, MigSlot, Placement


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


@cache
def _mig_geometry(model: str, profile: str, start: int) -> tuple[int, bool, int] | None:
    """(memory-slice mask, +me, static-layout bit) of a MIG placement on a model; None if illegal."""
    gm = lookup(model)
    prof = gm.mig.profiles.get(profile) if gm is not None and gm.mig is not None else None
    if gm is None or gm.mig is None or prof is None or start not in prof.starts:
        return None
    return ((1 << prof.memory_slices) - 1) << start, prof.media_extension, gm.mig.placement_bits()[(profile, start)]


_WHOLE, _SHARE, _MIG = DemandKind.WHOLE, DemandKind.SHARE, DemandKind.MIG  # enum lookups cost per call
_NONE = int(MigMode.NONE)


def _changes(v: View, i: int, p: Placement, sign: int) -> Diff:
    """The rows that change, checked; plain Python ints on one node's row (NumPy scalars cost more)."""
    s = v.s
    r = node_row(s, i)
    mem = v.mem_free[i].tolist()
    comp = v.compute_free[i].tolist()
    for g in p.gpus:
        if not 0 <= g < r.gpus:
            raise Conflict(f"node {p.node}: no GPU {g}")
        if r.mig_mode[g] != _NONE:
            raise Conflict(f"node {p.node}: GPU {g} is in MIG mode")
    if p.kind is _WHOLE:
        for g in p.gpus:
            total = r.mem_total[g]
            full = mem[g] == total and comp[g] == FULL_MILLI
            empty = mem[g] == 0 and comp[g] == 0
            if (sign > 0 and not full) or (sign < 0 and not empty):
                raise Conflict(f"node {p.node}: GPU {g} is {'busy' if sign > 0 else 'not booked whole'}")
            mem[g], comp[g] = (0, 0) if sign > 0 else (total, FULL_MILLI)
    elif p.kind is _SHARE:
        if len(p.gpus) != 1:
            raise Conflict("a share takes exactly one GPU")
        g = p.gpus[0]
        nm, nc = mem[g] - sign * p.memory_mib, comp[g] - sign * p.compute_milli
        if nm < 0 or nc < 0 or nm > r.mem_total[g] or nc > FULL_MILLI:
            raise Conflict(f"node {p.node}: GPU {g} cannot {'take' if sign > 0 else 'return'} this share")
        mem[g], comp[g] = nm, nc
    out: Diff = []
    if p.kind is _MIG and p.mig:
        used = v.mig_used[i].tolist()
        me = v.me_used[i].tolist()
        for slot in p.mig:
            if not 0 <= slot.gpu < r.gpus:
                raise Conflict(f"node {p.node}: no GPU {slot.gpu}")
            _mig_slot(s, i, p.node, slot, sign, used, me)
        out += [("mig_used", i, np.asarray(used, np.uint8)), ("me_used", i, np.asarray(me, bool))]
    cpu = int(v.cpu_free[i]) - sign * p.cpu_milli
    hmem = int(v.hmem_free[i]) - sign * p.host_memory_mib
    if cpu < 0 or hmem < 0 or cpu > s.cpu_total[i] or hmem > s.hmem_total[i]:
        raise Conflict(f"node {p.node}: CPU or memory {'exhausted' if sign > 0 else 'over-returned'}")
    if p.gpus and p.kind in (_WHOLE, _SHARE):
        milli, bits = derived_row(r, mem, comp)
        out += [("mem_free", i, np.asarray(mem, np.int32)), ("compute_free", i, np.asarray(comp, np.int16)),
                ("free_milli", i, milli), ("whole_bits", i, np.int64(bits))]
    if p.cpu_milli:
        out.append(("cpu_free", i, np.int64(cpu)))
    if p.host_memory_mib:
        out.append(("hmem_free", i, np.int64(hmem)))
    return out


def _mig_slot(s: Static, i: int, node: str, slot: MigSlot, sign: int, used: list[int], me: list[bool]) -> None:
    g = slot.gpu
    mode = int(s.mig_mode[i, g])
    if mode == _NONE:
        raise Conflict(f"node {node}: GPU {g} is not in MIG mode")
    model = s.models[s.model[i, g]]
    geom = _mig_geometry(model, slot.profile, slot.start)
    if geom is None:
        raise Conflict(f"gpu {g}: {slot.profile}@{slot.start} is not a legal placement on {model}")
    mask, is_me, bit = geom
    if mode == MigMode.STATIC and not (int(s.layout[i, g]) >> bit) & 1:
        raise Conflict(f"node {node}: GPU {g} has no {slot.profile} instance at {slot.start}")
    cur = used[g]
    if sign > 0:
        if cur & mask or (is_me and me[g]):
            raise Conflict(f"node {node}: GPU {g} slots of {slot.profile}@{slot.start} are taken")
        used[g] = cur | mask
        me[g] = me[g] or is_me
    else:
        if cur & mask != mask:
            raise Conflict(f"node {node}: GPU {g} {slot.profile}@{slot.start} is not booked")
        used[g] = cur & ~mask
        if is_me:
            me[g] = False
