"""MIG demands' scorer: pack slices, preferring nodes whose MIG capacity for the profile is most used."""

from __future__ import annotations

import numpy as np

from binpack import rows as fast
from binpack.fit import FitResult, mig_counts
from binpack.snapshot import View


def value(v: View, fitted: FitResult, rows: np.ndarray) -> np.ndarray:
    """Per fitting row: minus the share of the node's instances of the profile left free after the placement."""
    ever, now = fitted.aux.mig_ever, fitted.aux.mig_now
    if ever is None or now is None:
        ever, now = mig_counts(v, fitted.demand)
    return -(fast.take(now, rows) - fitted.demand.count) / np.maximum(fast.take(ever, rows), 1)
