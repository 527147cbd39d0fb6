"""random: a uniformly random feasible node, and a random GPU among those that fit a share."""

from __future__ import annotations

import numpy as np

from benchmarks.cluster import Choice, Task
from benchmarks.policies.base import Context


class RandomFit:
    name = "random"

    def __init__(self, ctx: Context) -> None:
        self.state = ctx.state
        self.rng = np.random.default_rng([ctx.seed, 1])  # its own stream: arrivals stay the same

    def choose(self, t: Task, rows: np.ndarray) -> Choice:
        node = int(rows[self.rng.integers(len(rows))])
        if t.share:
            fits = np.flatnonzero(self.state.left[node] >= t.milli)
            return Choice(node, (int(fits[self.rng.integers(len(fits))]),))
        return Choice(node, self.state.first_free(node, t.num_gpu))
