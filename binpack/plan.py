"""`plan`: the free-milli gaps that the mix's GPU shares can pack into full GPUs.

The configuration LP of the mix's share sizes (as the benchmark's bound, but over the learned
frequencies instead of a finished trace): cover each size's frequency with GPU patterns (multisets
of sizes summing to at most one GPU) using the fewest GPUs. A GPU filled online passes through the
gaps 1000 - sum(part of a pattern); those of patterns the LP uses are "on plan". A share that
leaves an off-plan gap (470 next to a 320 leaves 210: no planned pattern holds 470 + 320) will
strand it, whatever comes next; score.py charges that gap (README, packing quality).
"""

from __future__ import annotations

import itertools

import numpy as np
from ortools.linear_solver import pywraplp

from binpack.catalog import FULL_MILLI
from binpack.mix import Mix

MAX_PATTERNS = 20_000  # enumeration bound: beyond it no plan (every gap on plan), never a slow answer

# the plans of recent share frequencies, whichever mix asked: a learned mix is replaced often while
# its rounded frequencies stay put, and the LP is what costs (a pure function's memo, bounded)
_BY_KEY: dict[tuple[tuple[int, float], ...], np.ndarray] = {}


def share_sizes(mix: Mix) -> tuple[tuple[int, float], ...]:
    """(milli, frequency) of every share size the mix has seen (Mix.shares: not cut to the frequent
    classes, a rare small share is what fills a gap), smallest first, frequencies rounded to 0.005
    so that a slowly moving mix keeps its plan; sizes rarer than that still count as fillers."""
    return tuple((m, max(round(f * 200) / 200, 0.001)) for m, f in mix.shares if 0 < m < FULL_MILLI)


def patterns(sizes: list[int], limit: int = MAX_PATTERNS) -> list[tuple[int, ...]] | None:
    """Every non-empty multiset of `sizes` (any counts) summing to at most one GPU, largest sizes
    first; None if there are more than `limit`."""
    out: list[tuple[int, ...]] = []
    desc = sorted(sizes, reverse=True)

    def walk(start: int, room: int, acc: tuple[int, ...]) -> bool:
        if acc:
            out.append(acc)
            if len(out) > limit:
                return False
        for i in range(start, len(desc)):
            if desc[i] <= room and not walk(i, room - desc[i], (*acc, desc[i])):
                return False
        return True

    return out if walk(0, FULL_MILLI, ()) else None


def solve(freq: tuple[tuple[int, float], ...]) -> np.ndarray:
    """(FULL_MILLI + 1,) bool: the gaps on plan for these (milli, frequency) shares."""
    ok = np.ones(FULL_MILLI + 1, bool)
    sizes = [m for m, _ in freq]
    pats = patterns(sizes) if sizes else None
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if not pats or solver is None:
        return ok  # no shares, too many patterns, or no LP: nothing is off plan
    x = [solver.NumVar(0, solver.infinity(), "") for _ in pats]
    for m, f in freq:  # cover each size's frequency
        row = solver.Constraint(f, solver.infinity())
        for var, p in zip(x, pats, strict=True):
            if m in p:
                row.SetCoefficient(var, p.count(m))
    obj = solver.Objective()
    for var in x:
        obj.SetCoefficient(var, 1.0)
    obj.SetMinimization()
    solver.SetTimeLimit(2000)
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return ok
    ok[:] = False
    ok[: min(sizes)] = True  # a gap smaller than every share is dead whatever is planned
    ok[FULL_MILLI] = True
    for var, p in zip(x, pats, strict=True):
        if var.solution_value() > 1e-9:
            for k in range(len(p) + 1):
                for part in itertools.combinations(p, k):
                    ok[FULL_MILLI - sum(part)] = True
    return ok


def planned_gaps(mix: Mix) -> np.ndarray:
    """(FULL_MILLI + 1,) bool per free milli: on plan for the mix (cached per mix and per rounded
    share frequencies: the LP runs when the share sizes or their frequencies move)."""
    hit = mix.tables.plan
    if hit is None:
        key = share_sizes(mix)
        hit = _BY_KEY.get(key)
        if hit is None:
            if len(_BY_KEY) > 256:
                _BY_KEY.clear()
            hit = _BY_KEY[key] = solve(key)
            hit.flags.writeable = False
        mix.tables.plan = hit
    return hit
