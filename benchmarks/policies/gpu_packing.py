"""gpu-packing: prefer, in this order, a share on an already used GPU (the fuller the better),
free GPUs on an already used node (the fewer the better), then an idle node (the smaller the
better); integer scores as in the FGD paper's simulator. CPU-only tasks take the first feasible node."""

from __future__ import annotations

import numpy as np

from benchmarks.cluster import Choice, Task
from benchmarks.policies.base import Context, exclusive_or_best_fit, first_best
from benchmarks.trace import FULL


class GpuPacking:
    name = "gpu-packing"

    def __init__(self, ctx: Context) -> None:
        self.state = ctx.state

    def choose(self, t: Task, rows: np.ndarray) -> Choice:
        s = self.state
        if not t.num_gpu:
            return Choice(int(rows[0]), ())
        full, gpus = s.full[rows], s.gpus[rows]
        idle = np.maximum(33 - full, full)  # every GPU of the node is free
        if t.share:
            left = s.left[rows]
            tight = np.where(left >= t.milli, left, FULL + 1).min(axis=1)  # the GPU best fit would take
            used = np.where(tight < FULL, np.maximum(100 - (tight * 100 // FULL) // 10, 50), 49)
        else:
            used = np.maximum(50 - t.num_gpu, 33)  # must take whole free GPUs on a used node
        scores = np.where(full == gpus, idle, used)
        return exclusive_or_best_fit(s, t, first_best(rows, scores))
