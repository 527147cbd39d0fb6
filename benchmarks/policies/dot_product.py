"""dot-product (Tetris, as the FGD paper runs it): score 1 - <free, request>/2 with CPU and GPU each
normalised by the largest node spec, so the node whose free vector aligns least with the request
(the fuller node) wins; integers 0..100; the share goes to the best-fitting GPU."""

from __future__ import annotations

import numpy as np

from benchmarks.cluster import Choice, Task
from benchmarks.policies.base import Context, exclusive_or_best_fit, first_best

MAX_CPU, MAX_GPU = 128_000, 8_000


class DotProduct:
    name = "dot-product"

    def __init__(self, ctx: Context) -> None:
        self.state = ctx.state

    def choose(self, t: Task, rows: np.ndarray) -> Choice:
        s = self.state
        dot = (s.cpu[rows] / MAX_CPU) * (t.cpu / MAX_CPU) + (s.total[rows] / MAX_GPU) * (t.gpu_milli / MAX_GPU)
        scores = np.trunc((1.0 - dot / 2) * 100)
        return exclusive_or_best_fit(s, t, first_best(rows, scores))
