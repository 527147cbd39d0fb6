"""Each demand's score values per node, remembered across snapshot generations and brought up to date
from the columns' change log (persist.Columns): a node's value depends only on its own columns (and
the contention vector), so after a bind only the bound node is scored again.

Kept per (layout, mix) in LayoutMemo.of_mix(...).values, least recently used first, MEMO_SIZE demands:
kube-scheduler asks again for the same demand after every bind (a Deployment's or a Job's pods).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from binpack.fit import FitResult
from binpack.memo import MEMO_SIZE
from binpack.mix import Mix
from binpack.snapshot import Static, View

# the float value and chosen GPU of rows `at` (None: every row) given the fitting rows
Values = Callable[[np.ndarray, "np.ndarray | None"], tuple[np.ndarray, np.ndarray]]


@dataclass(eq=False)
class DemandValues:
    """One demand's values per node (-inf where it does not fit) and chosen GPUs, as of an epoch of
    the cluster's columns and the contention they were computed with."""

    epoch: int
    con: np.ndarray | None
    fits: np.ndarray  # (N,) bool
    vals: np.ndarray  # (N,)
    choice: np.ndarray  # (N,) int64


def remembered(fitted: FitResult, mix: Mix, v: View, key: Hashable, con: np.ndarray | None,
               values: Values) -> tuple[np.ndarray, np.ndarray]:
    """(N,) values and a copy of the chosen GPUs of every node for `fitted`, from memory where the
    node did not change since (bit for bit what a full pass gives, see frag.lost)."""
    n = len(fitted.fits)
    rows = fitted.fits.nonzero()[0]
    mem = v.s.memo.of_mix(mix)
    with mem.values_lock:
        per = mem.values
        memo = per.get(key)
        stale = None
        if memo is not None and (memo.con is con or (
                memo.con is not None and con is not None and np.array_equal(memo.con, con))):
            stale = v.changed_since(memo.epoch)
        if memo is None or stale is None:
            at = None if 2 * len(rows) >= n else rows  # the rows worked on (None: every row)
            vals, choice = values(rows, at)
            if at is None:
                full, picked = np.where(fitted.fits, vals, -np.inf), np.where(fitted.fits, choice, -1)
            else:
                full, picked = np.full(n, -np.inf), np.full(n, -1, np.int64)
                full[rows], picked[rows] = vals, choice
            memo = DemandValues(v.epoch or 0, con, fitted.fits.copy(), full, picked)
            if v.epoch is not None:
                per[key] = memo
                while len(per) > MEMO_SIZE:
                    per.popitem(last=False)
        else:
            # redo the nodes that changed (and any whose verdict changed), keep the rest
            moved_rows = fitted.fits != memo.fits
            moved_rows[stale] = True
            stale = np.flatnonzero(moved_rows)
            if len(stale):
                redo = stale[fitted.fits.take(stale)]
                memo.vals[stale], memo.choice[stale] = -np.inf, -1
                if len(redo):
                    memo.vals[redo], memo.choice[redo] = values(redo, redo)
                memo.fits = fitted.fits.copy()
            memo.epoch, memo.con = v.epoch or 0, con  # con: equal values, and `is` holds next time
            per.move_to_end(key)
        return memo.vals, memo.choice.copy()


def forget(s: Static) -> None:
    """Drop every remembered value of this layout: the next score of each demand is a full pass
    (benchmarks, tests)."""
    for mem in list(s.memo.per_mix.values()):
        with mem.values_lock:
            mem.values.clear()
