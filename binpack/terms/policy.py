"""`ScorePolicy`: the weights of the scoring terms (a bad weight fails at construction), and the shape of
a term. Which terms a policy turns on: strategy.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
