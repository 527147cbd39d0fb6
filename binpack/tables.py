"""Lookup tables built once per cluster (snapshot Static) and demand shape, read by every fit.

- NVLink cliques: per board topology, the largest all-linked subset of every GPU bit set (2^K
  entries, dynamic programming), so "largest free NVLink set" is one array lookup per node.
- MIG: per (profile, models), the GPUs that could ever host the profile and, per GPU class (model,
  mode, static layout), how many free instances each occupied-slot mask leaves; counting the free
  instances on every node is a gather, a lookup and a bincount over the MIG GPUs only.
- `per_demand`: a bounded store (LayoutMemo.per_demand, typed keys from memo.py) for work that
  depends on the cluster and the demand, never on the generation (the static part of a verdict).
Every table is a field of the layout's LayoutMemo (binpack/memo.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from binpack.catalog import lookup
from binpack.memo import MigKey
from binpack.snapshot import Static
from binpack.types import MigMode

T = TypeVar("T")


def per_demand(s: Static, key: Hashable, build: Callable[[], T]) -> T:
    """build() once per (cluster, key: one of memo's typed keys); the oldest entries go first when the
    store is full (memo.PER_DEMAND_ENTRIES)."""
    hit: T = s.memo.per_demand.get_or_build(key, build)
    return hit


def _clique_table(nvlink: np.ndarray, k: int) -> np.ndarray:
    """(2^k,) int8: largest all-NVLinked subset of each bit set, by w(S) = max(w(S-g), 1 + w(S & adj(g)))
    with g the highest GPU of S; one vectorised pass per GPU."""
    adj = [int(sum(1 << h for h in range(k) if h != g and nvlink[g, h] > 0)) for g in range(k)]
    table = np.zeros(1 << k, np.int8)
    for g in range(k):
        rest = np.arange(1 << g, dtype=np.int64)  # the sets whose highest GPU is g, without g
        table[(1 << g) + rest] = np.maximum(table[rest], 1 + table[rest & adj[g]])
    return table


def cliques(s: Static, bits: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(N,) largest all-NVLinked subset of each node's bit set (only `rows` are computed; others 0)."""
    out = np.bitwise_count(bits).astype(np.int64)  # NVSwitch-like boards: every subset is linked
    groups = s.memo.incomplete
    if groups is None:
        rows_inc = np.flatnonzero(~s.complete)
        topo = s.topo_id[rows_inc]
        groups = s.memo.incomplete = [(int(t), rows_inc[topo == t]) for t in np.unique(topo)]
    tables = s.memo.clique_tables
    for t, members in groups:
        if rows is not None:
            members = members[rows[members]]
            if not len(members):
                continue
        table = tables.get(t)
        if table is None:
            g = int(s.gpu_count[members[0]])
            table = tables[t] = _clique_table(s.nvlink[members[0]], g)
        out[members] = table[bits[members] & (len(table) - 1)]
    return out if rows is None else np.where(rows, out, 0)


def _offsets(s: Static) -> tuple[np.ndarray, int]:
    """Per node, where its board's 2^gpus entries start in a flat per-board table; and the table size."""
    hit = s.memo.offsets
    if hit is None:
        start: dict[int, int] = {}
        size = 0
        off = np.zeros(len(s.names), np.int64)
        for i, t in enumerate(s.topo_id.tolist()):
            if t not in start:
                start[t] = size
                size += 1 << int(s.gpu_count[i])
            off[i] = start[t]
        hit = s.memo.offsets = (off, size)
    return hit


def per_board(s: Static, name: Hashable, rows: np.ndarray, bits: np.ndarray,
              compute: Callable[[int, int], float]) -> np.ndarray:
    """(R,) compute(node, bit set) for each row, memoised per (board, bit set) in a flat table that is
    filled lazily: after the first calls on a cluster a lookup is one gather, no Python per node."""
    off, size = _offsets(s)
    table = s.memo.per_board.get(name)
    if table is None:
        table = s.memo.per_board[name] = np.full(size, np.nan)
    at = np.take(off, rows) + bits
    vals = table[at]
    missing = np.isnan(vals)
    if missing.any():
        where, first = np.unique(at[missing], return_index=True)
        for flat, r in zip(where.tolist(), np.flatnonzero(missing)[first].tolist(), strict=True):
            table[flat] = compute(int(rows[r]), int(bits[r]))
        vals = table[at]
    return vals


@dataclass(frozen=True, eq=False)
class MigTable:
    """The GPUs that can host one MIG profile (of the allowed models) and their free-instance lookup."""

    flat: np.ndarray  # (M,) flat (node * K + slot) index of each such GPU
    node: np.ndarray  # (M,) its node
    cls: np.ndarray  # (M,) its row in `free`
    free: np.ndarray  # (classes, 256) int8: free instances of the profile given the occupied-slot mask
    ever: np.ndarray  # (N,) instances each node could ever hold
    media_extension: bool


def mig_table(s: Static, profile: str, models: frozenset[str]) -> MigTable:
    return per_demand(s, MigKey(profile, models), lambda: _mig_table(s, profile, models))


def _mig_table(s: Static, profile: str, models: frozenset[str]) -> MigTable:
    ok = s.model_ok(models) & (s.mig_mode != MigMode.NONE)
    classes: dict[tuple[int, int, int], int] = {}
    flat: list[int] = []
    node: list[int] = []
    cls: list[int] = []
    rows: list[np.ndarray] = []
    me = False
    for i, g in zip(*np.nonzero(ok), strict=True):
        m, mode, layout = int(s.model[i, g]), int(s.mig_mode[i, g]), int(s.layout[i, g])
        gm = lookup(s.models[m])
        if gm is None or gm.mig is None or profile not in gm.mig.profiles:
            continue
        prof = gm.mig.profiles[profile]
        me = prof.media_extension
        key = (m, mode, layout if mode == MigMode.STATIC else -1)
        if key not in classes:
            bits = gm.mig.placement_bits()
            masks = [mask for start, mask in zip(prof.starts, prof.masks(), strict=True)
                     if mode == MigMode.DYNAMIC or (layout >> bits[(profile, start)]) & 1]
            used = np.arange(256)
            row = sum((((used & mask) == 0).astype(np.int8) for mask in masks), np.zeros(256, np.int8))
            classes[key] = len(rows) if masks else -1  # a static layout without the profile: never
            if masks:
                rows.append(np.minimum(row, 1) if me else row)  # one +me instance per GPU at most
        if classes[key] < 0:
            continue
        flat.append(int(i) * s.k + int(g))
        node.append(int(i))
        cls.append(classes[key])
    free = np.asarray(rows, np.int8).reshape(len(rows), 256)
    node_a = np.asarray(node, np.int64)
    cls_a = np.asarray(cls, np.int64)
    ever = np.bincount(node_a, weights=free[cls_a, 0] if len(cls_a) else None, minlength=len(s.names))
    return MigTable(np.asarray(flat, np.int64), node_a, cls_a, free, ever.astype(np.int64), me)


def mig_now(t: MigTable, mig_used: np.ndarray, me_used: np.ndarray, n: int) -> np.ndarray:
    """(N,) free instances of the table's profile on each node now."""
    if not len(t.flat):
        return np.zeros(n, np.int64)
    used = np.take(mig_used.reshape(-1), t.flat)
    now = t.free[t.cls, used]
    if t.media_extension:
        now = np.where(np.take(me_used.reshape(-1), t.flat), 0, now)
    return np.bincount(t.node, weights=now, minlength=n).astype(np.int64)
