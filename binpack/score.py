"""`score`: fragmentation-aware scores for the nodes where a demand fits.

The FGD measure (frag.py; Weng et al., USENIX ATC'23): a node's fragmentation is the GPU capacity that the
workload mix's tasks could not use there, weighted by how often each task arrives; a placement is
scored by how much it increases that. Multi-GPU demands add topology quality (the best link set
left on the node relative to the board's best); MIG demands pack partly used GPUs first.
Returned as floats (higher is better) and as integers 0..10 for kube-scheduler.

Three terms beyond FGD, in milli of GPU and added to the growth (README, packing quality):
- balance: GPU milli a node can no longer feed with CPU or host memory, at the mix's CPU (memory)
  per GPU milli. FGD only asks whether one task still fits, so it lets CPU-heavy pods drain a
  GPU-dense node's CPU and strand its GPUs; this keeps each node's CPU in step with its GPUs.
- contention: GPU milli taken from a model that restricted pods need, weighted by that model's
  share of restricted demand over its share of the free capacity, so pods that may run anywhere
  leave scarce models to the pods that may not. Restricted: by gpu-model selectors, or by shape (a
  multi-GPU class that only a small part of the cluster's nodes are big enough for, e.g. 8 GPUs
  with 120 cores).
- pairing: a share that leaves its GPU with a gap no pattern of the mix's pairing plan passes
  through (plan.py: the configuration LP of the mix's share sizes) is charged that gap, x10: such a
  gap is stranded whatever arrives next, while FGD's measure still counts it usable by small shares.
Pods asking for no GPU are scored too: their CPU and memory strand GPUs like anyone's.

The policy (ScorePolicy, ablations in `gpupack bench packing`): fragmentation growth is bucketed
coarsely (FGD's sigmoid integer score, with a wider scale) so that near-equal placements tie; ties
go to the earliest node in the snapshot's order (optionally first to a node already in use). That consolidation
is what makes FGD strong; exact float growth alone packs worse (see README, packing quality).
The integer answer keeps the best node alone at 10, so kube-scheduler (which breaks ties at random)
picks exactly the node the float score prefers.

Layout: the terms are one module each in binpack/terms/ (growth, pairing, contention, consolidate,
topology, mig; share_choice picks a share's GPU), chosen once per ScorePolicy (terms/strategy.py);
this module composes them. A node's value depends only on its own columns (and the contention
vector), so each demand's values are remembered per node and a later call redoes only the nodes
changed since (score_memo.py); `forget(static)` drops them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from binpack.fit import FitResult
from binpack.mix import Mix
from binpack.score_memo import forget, remembered
from binpack.snapshot import View
from binpack.terms import contention, growth, mig
from binpack.terms.policy import DEFAULT_POLICY, ScorePolicy
from binpack.terms.strategy import bonus_terms, growth_terms
from binpack.types import DemandKind

__all__ = ["DEFAULT_POLICY", "MAX_SCORE", "ScorePolicy", "Scores", "forget", "integer_scores", "score"]

MAX_SCORE = 10


@dataclass(frozen=True, eq=False)
class Scores:
    """Per node: a float (higher is better, -inf where the demand does not fit) and an int 0..10."""

    value: np.ndarray
    integer: np.ndarray
    choice: np.ndarray  # (N,) the share's chosen GPU per node (-1 when not a share)


def score(fitted: FitResult, mix: Mix, view: View | None = None, policy: ScorePolicy = DEFAULT_POLICY) -> Scores:
    """Scores for the nodes `fitted` says fit, against the workload mix."""
    if view is None:
        with fitted.snapshot.read() as v:
            return _score(fitted, mix, v, policy)
    return _score(fitted, mix, view, policy)


def _score(fitted: FitResult, mix: Mix, v: View, policy: ScorePolicy) -> Scores:
    d = fitted.demand
    n = len(fitted.fits)
    rows = fitted.fits.nonzero()[0]
    if len(rows) == 0 or (d.kind is DemandKind.NONE and not len(mix)):
        ints = np.where(fitted.fits, MAX_SCORE // 2, 0).astype(np.int64)
        return Scores(np.where(fitted.fits, 0.0, -np.inf), ints, np.full(n, -1, np.int64))
    if d.kind is DemandKind.MIG:
        value = np.zeros(n)
        value[rows] = mig.value(v, fitted, rows)
        return _scores(fitted.fits, rows, value, np.full(n, -1, np.int64))
    # the one term that is not per node: refreshed every CONTENTION_REFRESH calls, read once here
    con = contention.wanted(v, mix, policy, d.kind)
    vals, choice = remembered(fitted, mix, v, (d, policy), con,
                              lambda rows, at: _values(fitted, mix, v, policy, rows, at, con))
    return _scores(fitted.fits, rows, vals, choice)


def _values(fitted: FitResult, mix: Mix, v: View, policy: ScorePolicy, rows: np.ndarray, at: np.ndarray | None,
            con: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The float value and chosen GPU (-1: not a share) of rows `at` (None: every row; only the
    fitting `rows` count): FGD's bucketed growth plus the policy's growth terms, then its bonuses,
    then the tie-break. When most nodes fit it works on every row: no gathers."""
    n = len(fitted.fits)
    m, choice = growth.move(fitted, mix, v, rows, at, con)
    if len(mix):
        grown = growth.growth(m, policy)
        for term in growth_terms(policy):
            add = term(m, policy)
            if add is not None:
                grown += add
        vals = growth.bucket(grown, policy)
    else:
        vals = np.zeros(len(m.idx))
    for bonus in bonus_terms(policy):
        bonus(m, policy, vals)
    # equal scores go to the earliest node of the snapshot, in the float as in the integer answer
    vals -= m.idx * (1e-6 / max(n, 1))
    return vals, choice


def _scores(fits: np.ndarray, rows: np.ndarray, vals: np.ndarray, choice: np.ndarray) -> Scores:
    """Scores from float values of every row, of which only the fitting `rows` count (every other
    node: -inf and 0)."""
    value = np.where(fits, vals, -np.inf)
    return Scores(value, _ints(value, rows), choice)


def integer_scores(value: np.ndarray) -> np.ndarray:
    """0..10 for float scores (-inf where the demand does not fit, which gets 0): the best alone at 10."""
    rows = np.isfinite(value).nonzero()[0]
    return _ints(value, rows) if len(rows) else np.zeros(len(value), np.int64)


def _ints(value: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """0..10 with the best node alone at 10 (kube-scheduler picks at random among equal totals),
    the others scaled into 0..9 by their float score; value is -inf except at `rows` (those get 0)."""
    top = int(value.argmax())
    lo, hi = float(value.take(rows).min()), float(value[top])
    if hi - lo > 1e-12:  # truncation = floor, never negative; -inf becomes 0
        out = np.maximum((value - lo) * ((MAX_SCORE - 1) / (hi - lo)), 0.0).astype(np.int64)
    else:
        out = np.zeros(len(value), np.int64)
        out[rows] = MAX_SCORE - 1
    out[top] = MAX_SCORE
    return out
