"""gpu-clustering: keep tasks of one kind (share, 1, 2, 4, 8 GPUs) together: a node running only
that kind, then a node running that kind among others, then an idle node, then any; inside each
band the node with less free GPU wins (integer scores as in the FGD paper's simulator)."""

from __future__ import annotations

import numpy as np

from benchmarks.cluster import Choice, Task
from benchmarks.policies.base import Context, exclusive_or_best_fit, first_best

MAX_GPU = 8_000


class GpuClustering:
    name = "gpu-clustering"

    def __init__(self, ctx: Context) -> None:
        self.state = ctx.state

    def choose(self, t: Task, rows: np.ndarray) -> Choice:
        s = self.state
        if not t.num_gpu:
            return Choice(int(rows[0]), ())
        tags = s.tags[rows]
        kinds = (tags > 0).sum(axis=1)
        same = tags[:, t.tag] > 0
        band = np.where(same, np.where(kinds == 1, 75, 50), np.where(kinds == 0, 25, 0))
        scores = band + 25 * (MAX_GPU - s.total[rows]) // MAX_GPU
        return exclusive_or_best_fit(s, t, first_best(rows, scores))
