"""FGD (Weng et al., ATC'23): the node, and for a share the GPU in it, whose fragmentation against
the target mix grows least.

As the paper's simulator scores it: per candidate, score = int(100 * sigmoid((before - after) /
1000)), with before/after the node's fragmentation (frag.py) without and with the task; for a
share every GPU that fits is a candidate and the node's score is its best GPU's (the first GPU
among equals). Whole GPUs are the first free ones by index. The highest integer score wins, ties
to the first node in the tie-break order, exactly as kube-scheduler with one score plugin.
"""

from __future__ import annotations

import numpy as np

from benchmarks.cluster import Choice, Task
from benchmarks.policies.base import Context, first_best
from benchmarks.trace import FULL


def _score(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.floor(100.0 / (1.0 + np.exp(-(before - after) / 1000.0)))


class Fgd:
    name = "fgd"

    def __init__(self, ctx: Context) -> None:
        self.state = ctx.state
        self.tracker = ctx.tracker
        self.model = ctx.tracker.model

    def choose(self, t: Task, rows: np.ndarray) -> Choice:
        s, tr, fm = self.state, self.tracker, self.model
        before = tr.node_frag[rows]
        cpu_after = s.cpu[rows] - t.cpu
        if t.share:
            return self._share(t, rows, before, cpu_after)
        # whole GPUs (or none): n full GPUs leave, which count for every milli threshold
        cnt = tr.cnt[:, rows] - t.num_gpu
        total = (s.total[rows] - t.num_gpu * FULL).astype(float)
        after = fm.frag(cnt, tr.small[:, rows], total, cpu_after, tr.acc[:, rows])
        node = first_best(rows, _score(before, after))
        return Choice(node, s.first_free(node, t.num_gpu))

    def _share(self, t: Task, rows: np.ndarray, before: np.ndarray, cpu_after: np.ndarray) -> Choice:
        """Score every (node, GPU) candidate; GPUs of one node with equal free milli are one candidate."""
        s, tr, fm = self.state, self.tracker, self.model
        left = s.left[rows]  # (R,K)
        ok = left >= t.milli
        for g in range(1, left.shape[1]):  # the first GPU of equal free milli stands for the others
            ok[:, g] &= ~(left[:, :g] == left[:, g:g + 1]).any(axis=1)
        r, gpu = np.nonzero(ok)  # row-major: the first best candidate is the first node, then first GPU
        node = rows[r]
        was = left[r, gpu]
        new = was - t.milli
        m = fm.millis[:, None]
        # only the chosen GPU's contribution to the node's statistics changes
        cnt = tr.cnt[:, node] - (was >= m) + (new >= m)
        small = tr.small[:, node] - np.where(was >= m, 0, was) + np.where(new >= m, 0, new)
        total = (s.total[node] - t.milli).astype(float)
        after = fm.frag(cnt, small, total, cpu_after[r], tr.acc[:, node])
        best = int(np.argmax(_score(before[r], after)))
        return Choice(int(node[best]), (int(gpu[best]),))
