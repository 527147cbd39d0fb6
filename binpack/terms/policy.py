"""`ScorePolicy` and the terms it turns on, chosen once per policy (a bad weight fails at construction)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from binpack.terms import consolidate, contention, pairing, topology
from binpack.terms.move import Move

# a term added to the fragmentation growth (milli), or None where it does not apply to the demand
GrowthTerm = Callable[[Move, "ScorePolicy"], "np.ndarray | None"]
# a bonus added in place to the bucketed values (rows `Move.idx`)
BonusTerm = Callable[[Move, "ScorePolicy", np.ndarray], None]


@dataclass(frozen=True, slots=True)
class ScorePolicy:
    """How growth of fragmentation becomes a node score.

    bucket_milli: the sigmoid scale of FGD's integer score (FGD uses 1000); 0 scores the exact float
    growth. prefer_used: among equal buckets, a node already hosting work before an empty one.
    balance, contention, pairing: weights of the terms beyond FGD (score.py's docstring); 0 turns one off."""

    bucket_milli: float = 2000.0
    prefer_used: bool = False
    balance: float = 1.0
    contention: float = 1.0
    pairing: float = 10.0

    def __post_init__(self) -> None:
        for name in ("bucket_milli", "balance", "contention", "pairing"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


DEFAULT_POLICY = ScorePolicy()


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
