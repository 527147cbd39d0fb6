"""`Move`: what placing a demand does to each scored row, the one input every scoring term reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from binpack.fit import FitResult
from binpack.mix import Mix
from binpack.snapshot import View
from binpack.types import Demand


@dataclass(frozen=True, eq=False)
class Move:
    """Per row `at` of the view (None: every row; `idx` the row numbers either way): the GPUs taken and
    the free milli they go from (`old`) and to (`new`), `gone` milli in all. Scalars where every row
    moves the same (whole GPUs), so a term adds a column rather than a (U, R) block."""

    fitted: FitResult
    mix: Mix
    v: View
    rows: np.ndarray  # the fitting rows
    at: np.ndarray | None
    idx: np.ndarray
    con: np.ndarray | None  # (M + 1,) contention per model (None: the term is off or not needed)
    taken: np.ndarray | None = None  # (R,) bit sets of the whole GPUs taken
    bits: np.ndarray | None = None  # (R,) the whole-free GPUs of the demand's models
    slot_model: np.ndarray | None = None  # (R,) the share's chosen GPU's model
    old: np.ndarray | int = 0
    new: np.ndarray | int = 0
    gone: np.ndarray | int = 0
    allowed: np.ndarray | int | None = None  # per threshold row, see frag.moved

    @property
    def demand(self) -> Demand:
        return self.fitted.demand


def sel(a: np.ndarray, at: np.ndarray | None) -> np.ndarray:
    """a's rows `at` (all of a when None), through np.take: several times faster than fancy indexing."""
    return a if at is None else a.take(at, axis=0)
