"""FGD's fragmentation measure (Weng et al., ATC'23), vectorised over nodes and candidate GPUs.

A node's fragmentation against the target mix is the expected GPU milli that a task drawn from
the mix could not use there: for each shape with probability f, if the shape cannot run on the
node at all (CPU-only shape, wrong GPU model, too few GPUs with enough free milli, too little free
CPU) all free milli counts; otherwise the free milli of the GPUs too small for it counts.

Shapes are grouped by (per-GPU milli, GPU count, the node models they accept); inside a group the
only difference is the CPU they need, so a step function of the node's free CPU (P) says how much
of the group's probability is satisfied. Per node the tracker keeps, for every distinct milli m,
the number of GPUs with >= m free and the free milli on GPUs with < m free, updated on placement.
"""

from __future__ import annotations

import numpy as np

from benchmarks.cluster import State
from benchmarks.workload import Shape


class FragModel:
    """The target mix compiled against one cluster's GPU models."""

    def __init__(self, shapes: tuple[Shape, ...], models: tuple[str, ...]) -> None:
        self.cpu_only = sum(s.prob for s in shapes if s.count == 0)  # these count all free milli
        groups: dict[tuple[int, int, tuple[bool, ...]], list[Shape]] = {}
        for s in shapes:
            if s.count:
                acc = tuple(not s.spec or m in s.spec for m in models)
                groups.setdefault((s.milli, s.count, acc), []).append(s)
        keys = list(groups)
        self.millis = np.asarray(sorted({k[0] for k in keys}), np.int64)  # (M,)
        self.gm = np.asarray([int(np.searchsorted(self.millis, k[0])) for k in keys], np.int64)  # (G,) -> m
        self.gn = np.asarray([k[1] for k in keys], np.int64)  # (G,)
        self.acc = np.asarray([k[2] for k in keys], bool).reshape(len(keys), len(models))  # (G, models)
        self.weight = np.asarray([sum(s.prob for s in groups[k]) for k in keys])  # (G,)
        # one step table for all groups: column j = free CPU in [thresholds[j-1], thresholds[j])
        self.thresholds = np.asarray(sorted({s.cpu for k in keys for s in groups[k]}), np.int64)
        self.table = np.zeros((len(keys), len(self.thresholds) + 1))
        for g, k in enumerate(keys):
            for s in groups[k]:
                self.table[g, int(np.searchsorted(self.thresholds, s.cpu)) + 1:] += s.prob

    def satisfied(self, cpu: np.ndarray) -> np.ndarray:
        """(G, R) probability of each group's shapes whose CPU fits in `cpu` (R,)."""
        return self.table[:, np.searchsorted(self.thresholds, cpu, side="right")]

    def stats(self, left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per distinct milli m: GPUs with >= m free, free milli on GPUs with < m free; (M, ...)."""
        big = left[None] >= self.millis.reshape(-1, *([1] * left.ndim))
        return big.sum(-1), np.where(big, 0, left[None]).sum(-1)

    def frag(self, cnt: np.ndarray, small: np.ndarray, total: np.ndarray, cpu: np.ndarray,
             acc: np.ndarray) -> np.ndarray:
        """Fragmentation (milli) per row; cnt/small are (M, R, ...), total (R, ...), cpu (R,), acc (G, R)."""
        if not len(self.gn):  # a mix of CPU-only shapes: every free milli is lost
            return self.cpu_only * total
        tail = (1,) * (total.ndim - 1)
        p = self.satisfied(cpu).reshape(len(self.gn), -1, *tail)  # (G,R,1..)
        w = self.weight.reshape(-1, 1, *tail)
        runs = acc.reshape(*acc.shape, *tail) & (cnt[self.gm] >= self.gn.reshape(-1, 1, *tail))
        per = np.where(runs, small[self.gm] * p + total[None] * (w - p), total[None] * w)
        return per.sum(0) + self.cpu_only * total


class FragTracker:
    """Per-node statistics and fragmentation of a State, refreshed for the one node a placement changes."""

    def __init__(self, model: FragModel, state: State) -> None:
        self.model = model
        self.state = state
        models = np.maximum(state.model, 0)
        self.acc = model.acc[:, models] & (state.gpus > 0)[None]  # (G, N)
        self.cnt, self.small = model.stats(state.left)  # (M, N)
        self.node_frag = model.frag(self.cnt, self.small, state.total.astype(float), state.cpu, self.acc)

    def refresh(self, i: int) -> None:
        s = self.state
        cnt, small = self.model.stats(s.left[i:i + 1])
        self.cnt[:, i], self.small[:, i] = cnt[:, 0], small[:, 0]
        self.node_frag[i] = self.model.frag(cnt, small, s.total[i:i + 1].astype(float), s.cpu[i:i + 1],
                                            self.acc[:, i:i + 1])[0]

    def total(self) -> float:
        return float(self.node_frag.sum())
