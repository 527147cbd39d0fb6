"""Exact packing of several demands onto one node: depth-first search over every device choice.

The pod-group model (group_model.py) decides how many members of each kind go to each node from
aggregate capacities; this module answers whether those members really fit there together, and
with which devices. It works on a plain-int copy of the node's free state, tries whole-GPU members
first (NVLink and large first, best-scored sets first), then shares, then MIG instances one at a
time, and remembers dead ends so interchangeable choices are explored once. A step budget bounds
the search; running out is reported, never mistaken for "does not fit".
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from binpack.catalog import FULL_MILLI, lookup
from binpack.snapshot import Snapshot
from binpack.types import Demand, DemandKind, MigMode, MigSlot, Placement, Topology

# One choice of devices for one step: whole GPUs, a share's GPU, or one MIG slot.
Choice = tuple[int, ...] | MigSlot


@dataclass(frozen=True)
class NodePack:
    """The outcome for one node: placements in the order of the demands, or None; `exhausted` when
    the step budget ran out before the search could say either way."""

    placements: tuple[Placement, ...] | None
    exhausted: bool = False


class _Row:
    """The node's free state as plain ints, changed in place while searching and undone on the way back."""

    def __init__(self, snap: Snapshot, i: int) -> None:
        s = snap.static
        self.node = s.nodes[i]
        k = len(self.node.gpus)
        with snap.read() as v:
            self.mem = [int(x) for x in v.mem_free[i, :k]]
            self.comp = [int(x) for x in v.compute_free[i, :k]]
            self.used = [int(x) for x in v.mig_used[i, :k]]
            self.me = [bool(x) for x in v.me_used[i, :k]]
            self.cpu, self.hmem, self.foreign = int(v.cpu_free[i]), int(v.hmem_free[i]), int(v.foreign[i])
        self.pair = s.pair[i]
        self.nvlink = s.nvlink[i]

    def whole_free(self, g: int) -> bool:
        gpu = self.node.gpus[g]
        return (gpu.healthy and gpu.mig_mode is MigMode.NONE and self.mem[g] == gpu.memory_mib
                and self.comp[g] == FULL_MILLI)

    def slack(self) -> int:
        """Whole-free GPUs that foreign pods (devices unknown) do not account for."""
        return sum(self.whole_free(g) for g in range(len(self.mem))) - self.foreign

    def key(self) -> tuple:
        return tuple(self.mem), tuple(self.comp), tuple(self.used), tuple(self.me)


def _model_ok(row: _Row, d: Demand, g: int) -> bool:
    gpu = row.node.gpus[g]
    return gpu.healthy and (not d.models or gpu.model in d.models)


def _whole_options(row: _Row, d: Demand) -> list[Choice]:
    if d.count > row.slack():
        return []
    free = [g for g in range(len(row.mem)) if row.whole_free(g) and _model_ok(row, d, g)]
    need = d.topology is Topology.NVLINK
    options = [c for c in itertools.combinations(free, d.count)
               if not need or all(row.nvlink[a, b] > 0 for a, b in itertools.combinations(c, 2))]

    def rank(c: tuple[int, ...]) -> tuple[int, int]:  # best_set's order: set score, then the leftover's
        rest = [g for g in free if g not in c]
        return (-_set_score(row.pair, c), -_set_score(row.pair, rest))

    return sorted(options, key=rank)  # type: ignore[arg-type]


def _set_score(pair: np.ndarray, gpus: Sequence[int]) -> int:
    return sum(int(pair[a, b]) for a, b in itertools.combinations(gpus, 2))


def _share_options(row: _Row, d: Demand) -> list[Choice]:
    spare = row.slack() > 0
    seen: set[tuple] = set()
    options: list[tuple[tuple[int, int], int]] = []
    for g, gpu in enumerate(row.node.gpus):
        if not _model_ok(row, d, g) or gpu.mig_mode is not MigMode.NONE:
            continue
        if row.mem[g] < d.memory_mib or row.comp[g] < d.compute_milli or (row.whole_free(g) and not spare):
            continue
        state = (gpu.model, gpu.memory_mib, row.mem[g], row.comp[g])
        if state not in seen:  # GPUs in the same state are interchangeable for the shares that follow
            seen.add(state)
            options.append(((row.comp[g], row.mem[g]), g))
    return [(g,) for _, g in sorted(options)]  # best fit first


def _mig_options(row: _Row, d: Demand) -> list[Choice]:
    seen: set[tuple] = set()
    options: list[Choice] = []
    for g, gpu in enumerate(row.node.gpus):
        gm = lookup(gpu.model)
        prof = gm.mig.profiles.get(d.mig_profile) if gm is not None and gm.mig is not None else None
        if prof is None or gpu.mig_mode is MigMode.NONE or not _model_ok(row, d, g):
            continue
        if prof.media_extension and row.me[g]:
            continue
        for start, mask in zip(prof.starts, prof.masks(), strict=True):
            if row.used[g] & mask:
                continue
            if gpu.mig_mode is MigMode.STATIC and not any(
                x.profile == d.mig_profile and x.start == start for x in gpu.mig_instances
            ):
                continue
            state = (gpu.model, gpu.mig_mode, gpu.mig_instances, row.used[g], row.me[g], start)
            if state not in seen:
                seen.add(state)
                options.append(MigSlot(g, d.mig_profile, start))
    return options


def _apply(row: _Row, d: Demand, c: Choice, sign: int) -> None:
    if isinstance(c, MigSlot):
        gm = lookup(row.node.gpus[c.gpu].model)
        assert gm is not None and gm.mig is not None
        prof = gm.mig.profiles[c.profile]
        row.used[c.gpu] ^= ((1 << prof.memory_slices) - 1) << c.start
        if prof.media_extension:
            row.me[c.gpu] = sign > 0
        return
    for g in c:
        if d.kind is DemandKind.WHOLE:
            row.mem[g] -= sign * row.node.gpus[g].memory_mib
            row.comp[g] -= sign * FULL_MILLI
        else:
            row.mem[g] -= sign * d.memory_mib
            row.comp[g] -= sign * d.compute_milli


def hardness(d: Demand) -> tuple:
    """Sort key, hardest first: whole GPUs (NVLink, then more GPUs), then shares (larger), then MIG."""
    if d.kind is DemandKind.WHOLE:
        return (0, d.topology is not Topology.NVLINK, -d.count)
    if d.kind is DemandKind.SHARE:
        return (1, -d.memory_mib, -d.compute_milli)
    if d.kind is DemandKind.MIG:
        return (2, -int(d.mig_profile.split("g", 1)[0]), d.mig_profile, -d.count)  # "3g.40gb": 3 compute slices
    return (3,)


def _steps(demands: Sequence[Demand]) -> list[int]:
    """Member index per search step (MIG members take one step per instance), hardest first."""
    order = sorted((m for m, d in enumerate(demands) if d.kind is not DemandKind.NONE),
                   key=lambda m: (hardness(demands[m]), m))
    return [m for m in order for _ in range(demands[m].count if demands[m].kind is DemandKind.MIG else 1)]


def pack_node(snap: Snapshot, name: str, demands: Sequence[Demand], budget: int = 20_000) -> NodePack:
    """Devices for all the demands together on the node, or None when no choice of devices works."""
    row = _Row(snap, snap.node_index(name))
    if sum(d.cpu_milli for d in demands) > row.cpu or sum(d.host_memory_mib for d in demands) > row.hmem:
        return NodePack(None)  # CPU and memory are plain sums: no search needed
    steps = _steps(demands)
    chosen: list[Choice] = []
    dead: set[tuple] = set()
    left = budget

    def search(k: int) -> bool | None:
        nonlocal left
        if k == len(steps):
            return True
        key = (k, row.key())
        if key in dead:
            return False
        d = demands[steps[k]]
        opts = (_whole_options if d.kind is DemandKind.WHOLE else
                _share_options if d.kind is DemandKind.SHARE else _mig_options)(row, d)
        for c in opts:
            left -= 1
            if left < 0:
                return None
            _apply(row, d, c, +1)
            chosen.append(c)
            found = search(k + 1)
            if found is not False:
                return found
            chosen.pop()
            _apply(row, d, c, -1)
        dead.add(key)
        return False

    found = search(0)
    if found is None:
        return NodePack(None, exhausted=True)
    if not found:
        return NodePack(None)
    return NodePack(tuple(_assemble(name, demands, steps, chosen)))


def _assemble(name: str, demands: Sequence[Demand], steps: list[int], chosen: list[Choice]) -> list[Placement]:
    gpus: dict[int, tuple[int, ...]] = {}
    slots: dict[int, list[MigSlot]] = {}
    for m, c in zip(steps, chosen, strict=True):
        if isinstance(c, MigSlot):
            slots.setdefault(m, []).append(c)
        else:
            gpus[m] = c
    out = []
    for m, d in enumerate(demands):
        common = {"node": name, "cpu_milli": d.cpu_milli, "host_memory_mib": d.host_memory_mib, "kind": d.kind}
        if d.kind is DemandKind.SHARE:
            out.append(Placement(gpus=gpus[m], memory_mib=d.memory_mib, compute_milli=d.compute_milli, **common))  # type: ignore[arg-type]
        else:
            out.append(Placement(gpus=gpus.get(m, ()), mig=tuple(slots.get(m, ())), **common))  # type: ignore[arg-type]
    return out
