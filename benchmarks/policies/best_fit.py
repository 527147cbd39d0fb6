"""best-fit: the node with the least CPU and GPU left after the task (each normalised by the
largest node spec, 128 cores and 8 GPUs, weighted 1/2), scored as integers 0..100 as in the FGD
paper's simulator; the share goes to the best-fitting GPU."""

from __future__ import annotations

import numpy as np

from benchmarks.cluster import Choice, Task
from benchmarks.policies.base import Context, exclusive_or_best_fit, first_best

MAX_CPU, MAX_GPU = 128_000, 8_000


class BestFit:
    name = "best-fit"

    def __init__(self, ctx: Context) -> None:
        self.state = ctx.state

    def choose(self, t: Task, rows: np.ndarray) -> Choice:
        s = self.state
        slack = 0.5 * (s.cpu[rows] - t.cpu) / MAX_CPU + 0.5 * (s.total[rows] - t.gpu_milli) / MAX_GPU
        scores = np.trunc((1.0 - slack) * 100)  # min-max normalisation keeps the order and the ties
        return exclusive_or_best_fit(s, t, first_best(rows, scores))
