"""Which GPU of a node a share takes: the one whose own fragmentation grows least (FGD's in-node
choice), then best fit; one table lookup and one min over the node's slots."""

from __future__ import annotations

import numpy as np

from binpack import rows as fast
from binpack.catalog import FULL_MILLI
from binpack.fit import share_gpus
from binpack.mix import Mix
from binpack.snapshot import View
from binpack.types import Demand

CANNOT = 1 << 10  # added to a GPU's free milli (at most FULL_MILLI) when it cannot take the share


def rank_table(mix: Mix, take: int, k: int) -> np.ndarray:
    """(2 * CANNOT,) int32, indexed by a GPU's free milli y (+ CANNOT when it cannot take the share):
    the rank of the GPU's key, times k. Key = 4096 * (growth of y * P(y)) + y, where P(y) is the
    mix's probability of a task needing more than y (FGD's in-node choice, then best fit). Kept in
    Mix.tables (not for the empty mix: its table is the plain best fit, cheap)."""
    per_mix = mix.tables.ranks if len(mix) else {}
    hit = per_mix.get((take, k))
    if hit is None:
        y = np.arange(FULL_MILLI + 1, dtype=np.float64)
        key = y.copy()
        if len(mix):
            _, milli, _, _ = mix.arrays()
            after = np.maximum(y - take, 0)
            for m in np.unique(milli).tolist():
                p = float(mix.prob[milli == m].sum()) * 4096
                key += p * (after * (after < m) - y * (y < m))
        rank = np.full(2 * CANNOT, FULL_MILLI + 2, np.int64)
        rank[: FULL_MILLI + 1] = np.unique(key, return_inverse=True)[1]
        hit = (rank * k).astype(np.int32)  # equal keys, equal ranks: the lower slot wins
        per_mix[(take, k)] = hit
    return hit


def share_gpu(v: View, d: Demand, rows: np.ndarray, x: np.ndarray, mix: Mix,
              ok: np.ndarray | None = None) -> np.ndarray:
    """Per row, the GPU whose own fragmentation grows least (FGD's in-node choice), then best fit."""
    okt = np.ascontiguousarray(fast.take(share_gpus(v, d) if ok is None else ok, rows).T)
    return pick_share(x.T.astype(np.int16, order="C"), okt, mix, d.compute_milli)


def pick_share(xi: np.ndarray, okt: np.ndarray, mix: Mix, take: int) -> np.ndarray:
    """The smallest of rank(key of the GPU's free milli) * K + slot over xi (K, R) int16 free milli:
    one lookup and one min over K."""
    k = len(xi)
    cannot = (~okt).view(np.int8).astype(np.int16) * np.int16(CANNOT)  # cheaper than np.where
    packed = rank_table(mix, take, k).take(xi | cannot)
    packed += np.arange(k, dtype=packed.dtype)[:, None]
    return packed.min(axis=0) % k
