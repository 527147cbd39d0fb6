"""`score`: fragmentation-aware scores for the nodes where a demand fits.

The FGD measure (Weng et al., USENIX ATC'23): a node's fragmentation is the GPU capacity that the
workload mix's tasks could not use there, weighted by how often each task arrives; a placement is
scored by how much it increases that. Multi-GPU demands add topology quality (the best link set
left on the node relative to the board's best); MIG demands pack partly used GPUs first.
Returned as floats (higher is better) and as integers 0..10 for kube-scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from binpack.catalog import FULL_MILLI
from binpack.fit import FitResult, mig_capacity, share_gpus
from binpack.mix import Mix
from binpack.snapshot import View
from binpack.topology import best_set, set_score
from binpack.types import Demand, DemandKind, Topology

MAX_SCORE = 10


@dataclass(frozen=True, eq=False)
class Scores:
    """Per node: a float (higher is better, -inf where the demand does not fit) and an int 0..10."""

    value: np.ndarray
    integer: np.ndarray
    choice: np.ndarray  # (N,) the share's chosen GPU per node (-1 when not a share)


def frag(v: View, rows: np.ndarray, x: np.ndarray, cpu: np.ndarray, hmem: np.ndarray, mix: Mix) -> np.ndarray:
    """Expected unusable GPU milli per row given free milli x (R,K), free CPU and memory (R,)."""
    if len(mix) == 0:
        return np.zeros(len(rows))
    count, milli, tcpu, tmem = mix.arrays()
    allowed = _allowed(v, mix, rows)
    usable = x[None] >= milli[:, None, None]
    if allowed is not None:
        usable &= allowed
    host = (cpu[None] >= tcpu[:, None]) & (hmem[None] >= tmem[:, None]) & (usable.sum(-1) >= count[:, None])
    total = x.sum(-1)
    lost = np.where(host, (x[None] * ~usable).sum(-1), total[None])
    return mix.prob @ lost


def _allowed(v: View, mix: Mix, rows: np.ndarray) -> np.ndarray | None:
    if not any(c.models for c in mix.classes):
        return None
    return np.stack([v.s.model_ok(c.models)[rows] for c in mix.classes])


def score(fitted: FitResult, mix: Mix, view: View | None = None) -> Scores:
    """Scores for the nodes `fitted` says fit, against the workload mix."""
    if view is None:
        with fitted.snapshot.read() as v:
            return _score(fitted, mix, v)
    return _score(fitted, mix, view)


def _score(fitted: FitResult, mix: Mix, v: View) -> Scores:
    d = fitted.demand
    n = len(fitted.fits)
    value = np.full(n, -np.inf)
    choice = np.full(n, -1, np.int64)
    rows = np.flatnonzero(fitted.fits)
    if len(rows) == 0 or d.kind is DemandKind.NONE:
        ints = np.where(fitted.fits, MAX_SCORE // 2, 0).astype(np.int64)
        return Scores(np.where(fitted.fits, 0.0, -np.inf), ints, choice)
    if d.kind is DemandKind.MIG:
        value[rows] = _mig_value(v, d, rows)
    else:
        x = v.free_milli()[rows]
        cpu, hmem = v.cpu_free[rows], v.hmem_free[rows]
        before = frag(v, rows, x, cpu, hmem, mix)
        after_x = x.copy()
        if d.kind is DemandKind.WHOLE:
            whole = v.whole_free(d.models)[rows]
            # which k whole-free GPUs does not change fragmentation: take the first k
            taken = whole & (np.cumsum(whole, axis=1) <= d.count)
            after_x[taken] = 0
        else:
            g = _share_gpu(v, d, rows, x, mix)
            choice[rows] = g
            after_x[np.arange(len(rows)), g] -= d.compute_milli if d.compute_milli else 0
            after_x = np.maximum(after_x, 0)
        after = frag(v, rows, after_x, cpu - d.cpu_milli, hmem - d.host_memory_mib, mix)
        # FGD: smaller growth of fragmentation is better; scaled per whole GPU
        value[rows] = -(after - before) / FULL_MILLI
        if d.kind is DemandKind.WHOLE and d.count > 1:
            value[rows] += _topology_bonus(v, d, rows)
    return Scores(value, _to_int(value, rows), choice)


def _share_gpu(v: View, d: Demand, rows: np.ndarray, x: np.ndarray, mix: Mix) -> np.ndarray:
    """Per row, the GPU whose own fragmentation grows least (FGD's in-node choice), then best fit."""
    ok = share_gpus(v, d)[rows]
    take = d.compute_milli
    if len(mix):
        _, milli, _, _ = mix.arrays()
        lost_before = (x[None] * (x[None] < milli[:, None, None]))
        xa = np.maximum(x - take, 0)
        lost_after = (xa[None] * (xa[None] < milli[:, None, None]))
        growth = mix.prob @ (lost_after - lost_before).reshape(len(mix), -1)
        growth = growth.reshape(x.shape)
    else:
        growth = np.zeros(x.shape)
    # best fit breaks ties: the least free GPU that still fits
    key = np.where(ok, growth * 4096 + x, np.inf)
    return np.argmin(key, axis=1)


def _mig_value(v: View, d: Demand, rows: np.ndarray) -> np.ndarray:
    """Pack MIG slices: prefer nodes whose MIG capacity for the profile is already most used."""
    ever, now = mig_capacity(v, d)
    ever_n, now_n = ever.sum(axis=1)[rows], now.sum(axis=1)[rows]
    return -(now_n - d.count) / np.maximum(ever_n, 1)


def _topology_bonus(v: View, d: Demand, rows: np.ndarray) -> np.ndarray:
    """In [0, 0.5]: how close the best free set on the node comes to the board's best possible set."""
    s = v.s
    whole = v.whole_free(d.models)[rows]
    memo = s.cache.setdefault("bestset", {})
    masks = (whole * (1 << np.arange(s.k, dtype=np.int64))).sum(axis=1)
    keys = s.topo_id[rows].astype(np.int64) << 20 | masks
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    need = d.topology is Topology.NVLINK
    vals = np.zeros(len(uniq))
    for u, (key, r) in enumerate(zip(uniq.tolist(), first.tolist(), strict=True)):
        i = int(rows[r])
        hit = memo.get((key, d.count, need))
        if hit is None:
            free = [g for g in range(s.k) if (key >> g) & 1]
            chosen = best_set(s.pair[i], s.nvlink[i], free, d.count, need)
            ideal = best_set(s.pair[i], s.nvlink[i], list(range(int(s.gpu_count[i]))), d.count, False)
            top = set_score(s.pair[i], ideal) if ideal else 0
            hit = memo[(key, d.count, need)] = (set_score(s.pair[i], chosen) / top) if chosen and top else 0.0
        vals[u] = 0.5 * hit
    return vals[inv]


def _to_int(value: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.zeros(len(value), np.int64)
    vals = value[rows]
    lo, hi = vals.min(), vals.max()
    if hi - lo < 1e-12:
        out[rows] = MAX_SCORE
    else:
        out[rows] = np.rint((vals - lo) / (hi - lo) * MAX_SCORE).astype(np.int64)
    return out
