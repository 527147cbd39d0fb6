"""`place`: the exact devices on a chosen node.

Whole GPUs: the free set with the best links (maximum total pair score; among equals the one that
leaves the best set behind). A share: the GPU whose fragmentation grows least, then best fit. MIG:
the free instance (static layout) or legal start slot (dynamic) whose use keeps the most large
profiles placeable on that GPU. `place` finds a placement exactly when `fit` says the node fits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from binpack.catalog import lookup
from binpack.fit import _fit, _mig_tables
from binpack.mix import EMPTY_MIX, Mix
from binpack.snapshot import Snapshot, View
from binpack.terms.share_choice import share_gpu
from binpack.topology import best_set
from binpack.types import Demand, DemandKind, MigMode, MigSlot, Placement, Topology


def place(snapshot: Snapshot, demand: Demand, node: str, mix: Mix = EMPTY_MIX) -> Placement | None:
    """The devices for the demand on the node, or None when it does not fit there."""
    i = snapshot.node_index(node)
    with snapshot.read() as v:
        verdict = _fit(snapshot, v, demand)
        if not verdict.fits[i]:
            return None
        return _place(v, demand, i, mix)


def _place(v: View, d: Demand, i: int, mix: Mix) -> Placement:
    s = v.s
    name = s.names[i]
    common = {"node": name, "cpu_milli": d.cpu_milli, "host_memory_mib": d.host_memory_mib, "kind": d.kind}
    if d.kind is DemandKind.NONE:
        return Placement(**common)  # type: ignore[arg-type]
    if d.kind is DemandKind.WHOLE:
        bits = int(v.whole_bits[i]) & (int(s.model_bits(d.models)[i]) if d.models else -1)
        free = [g for g in range(s.k) if (bits >> g) & 1]
        need = d.topology is Topology.NVLINK and d.count > 1
        memo = s.memo.place_whole
        key = (int(s.topo_id[i]), tuple(free), d.count, need)
        chosen = memo.get(key)
        if chosen is None:
            chosen = memo[key] = best_set(s.pair[i], s.nvlink[i], free, d.count, need)
        assert chosen is not None, "fit said the node fits"
        return Placement(gpus=tuple(chosen), **common)  # type: ignore[arg-type]
    if d.kind is DemandKind.SHARE:
        rows = np.asarray([i])
        g = int(share_gpu(v, d, rows, v.free_milli()[rows], mix)[0])
        return Placement(gpus=(g,), memory_mib=d.memory_mib, compute_milli=d.compute_milli, **common)  # type: ignore[arg-type]
    return Placement(mig=_place_mig(v, d, i), **common)  # type: ignore[arg-type]


def _place_mig(v: View, d: Demand, i: int) -> tuple[MigSlot, ...]:
    s = v.s
    masks_t, bits_t, is_me = _mig_tables(s, d.mig_profile)
    used = [int(u) for u in v.mig_used[i]]
    me = [bool(x) for x in v.me_used[i]]
    ok = s.model_ok(d.models)[i]
    slots: list[MigSlot] = []
    for _ in range(d.count):
        best: tuple[tuple[int, int, int, int], int, int, int] | None = None
        for g in range(s.k):
            mode = int(s.mig_mode[i, g])
            if not ok[g] or mode == MigMode.NONE or (is_me and me[g]):
                continue
            m = int(s.model[i, g])
            geom = lookup(s.models[m]).mig  # type: ignore[union-attr]
            assert geom is not None
            for c in range(masks_t.shape[1]):
                mask = int(masks_t[m, c])
                if mask < 0 or used[g] & mask:
                    continue
                if mode == MigMode.STATIC and not (int(s.layout[i, g]) >> int(bits_t[m, c])) & 1:
                    continue
                start = (mask & -mask).bit_length() - 1
                layout = int(s.layout[i, g]) if mode == MigMode.STATIC else -1
                loss = _value(s.models[m], used[g], layout) - _value(s.models[m], used[g] | mask, layout)
                # least loss of placeable capacity, then a GPU already in use, then low index
                key = (loss, 0 if used[g] else 1, g, start)
                if best is None or key < best[0]:
                    best = (key, g, mask, start)
        assert best is not None, "fit said the node fits"
        _, g, mask, start = best
        used[g] |= mask
        me[g] = me[g] or is_me
        slots.append(MigSlot(g, d.mig_profile, start))
    return tuple(slots)


@lru_cache(maxsize=65536)
def _value(model: str, used: int, layout: int) -> int:
    """How much MIG capacity stays placeable on a GPU: for every profile, the instances that still
    fit (static: existing free ones; dynamic: disjoint legal placements) times their size."""
    geom = lookup(model).mig  # type: ignore[union-attr]
    assert geom is not None
    bits = geom.placement_bits()
    total = 0
    for prof in geom.profiles.values():
        fits = 0
        for start, mask in zip(prof.starts, prof.masks(), strict=True):
            if used & mask:
                continue
            if layout >= 0 and not (layout >> bits[(prof.name, start)]) & 1:
                continue
            fits += 1
        total += min(fits, prof.max_count) * prof.memory_slices * prof.memory_slices
    return total
