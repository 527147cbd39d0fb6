"""Link quality for multi-GPU demands: how close the best free set on a node comes to the board's best
possible set (0..0.5, x2), memoised per (board, free set) in tables.per_board."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from binpack.memo import SetQualityKey
from binpack.tables import per_board
from binpack.terms.move import Move
from binpack.topology import best_set, set_score
from binpack.types import Demand, DemandKind, Topology

if TYPE_CHECKING:
    from binpack.snapshot import View
    from binpack.terms.policy import ScorePolicy


def term(m: Move, policy: ScorePolicy, vals: np.ndarray) -> None:
    """Adds the bonus at the fitting rows (every scored row when only those are scored)."""
    d = m.demand
    if not (d.kind is DemandKind.WHOLE and d.count > 1):
        return
    assert m.bits is not None  # a whole-GPU move carries its free bit sets
    bonus = 2.0 * bonus_of(m.v, d, m.rows, m.bits if m.at is not None else m.bits.take(m.rows))
    if m.at is None:
        vals[m.rows] += bonus
    else:
        vals += bonus


def bonus_of(v: View, d: Demand, rows: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """In [0, 0.5]: how close the best free set on the node comes to the board's best possible set."""
    s = v.s
    need = d.topology is Topology.NVLINK

    def quality(i: int, free_bits: int) -> float:
        free = [g for g in range(s.k) if (free_bits >> g) & 1]
        chosen = best_set(s.pair[i], s.nvlink[i], free, d.count, need)
        ideal = best_set(s.pair[i], s.nvlink[i], list(range(int(s.gpu_count[i]))), d.count, False)
        top = set_score(s.pair[i], ideal) if ideal else 0
        return (set_score(s.pair[i], chosen) / top) if chosen and top else 0.0

    return 0.5 * per_board(s, SetQualityKey(d.count, need), rows, bits, quality)
