"""Consolidation (`policy.prefer_used`): among equal buckets, a node already hosting work first.
Multi-GPU demands weigh link quality instead (topology.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from binpack import rows as fast
from binpack.catalog import FULL_MILLI
from binpack.terms.move import Move, sel
from binpack.types import DemandKind

if TYPE_CHECKING:
    from binpack.terms.policy import ScorePolicy


def term(m: Move, policy: ScorePolicy, vals: np.ndarray) -> None:
    """+0.25 where some non-MIG GPU milli of the node is in use."""
    d = m.demand
    if d.kind is DemandKind.WHOLE and d.count > 1:
        return
    v, at = m.v, m.at
    cap = fast.count(sel(v.s.plain, at)) * FULL_MILLI  # non-MIG GPUs
    vals += 0.25 * (fast.total(sel(v.milli, at).astype(np.int64)) < cap)
