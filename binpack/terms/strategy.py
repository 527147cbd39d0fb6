"""The terms a ScorePolicy turns on, chosen once per policy (as kube-scheduler's
getScoringStrategyFunction picks a scorer once): score.py calls what these return, never a term with
weight 0."""

from __future__ import annotations

import functools

from binpack.terms import consolidate, contention, pairing, topology
from binpack.terms.policy import BonusTerm, GrowthTerm, ScorePolicy


@functools.cache
def growth_terms(policy: ScorePolicy) -> tuple[GrowthTerm, ...]:
    """The terms added to FGD's growth, in the order they are added (the sum's bits depend on it)."""
    out: list[GrowthTerm] = []
    if policy.pairing:
        out.append(pairing.term)
    if policy.contention:
        out.append(contention.term)
    return tuple(out)


@functools.cache
def bonus_terms(policy: ScorePolicy) -> tuple[BonusTerm, ...]:
    """The bonuses added to the bucketed value, in order."""
    return (consolidate.term, topology.term) if policy.prefer_used else (topology.term,)
