"""Pairing: a share that leaves its GPU with a gap no pattern of the mix's pairing plan passes through
(plan.py: the configuration LP of the mix's share sizes) is charged that gap, x `policy.pairing`:
such a gap is stranded whatever arrives next, while FGD's measure still counts it usable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from binpack.plan import planned_gaps
from binpack.terms.move import Move
from binpack.types import DemandKind

if TYPE_CHECKING:
    from binpack.terms.policy import ScorePolicy


def term(m: Move, policy: ScorePolicy) -> np.ndarray | None:
    """The gap each row's share leaves, where it is off plan, times the weight."""
    d = m.demand
    # the plan is in compute milli: a share that also asks for GPU memory leaves a gap that depends
    # on the GPU's memory size, which the plan does not describe
    if d.kind is not DemandKind.SHARE or d.memory_mib:
        return None
    left = np.asarray(m.new)
    out: np.ndarray = policy.pairing * (~planned_gaps(m.mix).take(left)) * left
    return out
