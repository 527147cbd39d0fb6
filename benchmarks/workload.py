"""The FGD paper's workload: seeded arrivals drawn from a pod list, and its target task mix.

Arrivals: tasks are drawn with replacement (uniformly over the list's rows, so by the list's mix)
from a seeded NumPy Generator until the arrived GPU request passes `stop` x the cluster's GPU
capacity; the task that passes it is the last one. The node tie-break order is a permutation drawn
from the same seed, as the paper's simulator renames nodes with a seeded random prefix.

Target mix ("typical pods", as the FGD simulator builds it): task shapes (CPU, per-GPU milli, GPU
count, allowed models) by decreasing frequency, the most frequent ones up to 95% of tasks,
renormalised. CPU-only shapes are part of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.trace import NodeTable, PodTable

STOP = 1.3  # arrivals stop once the arrived GPU request passes 130% of capacity
COVERAGE = 0.95  # the target mix keeps the most frequent shapes up to 95% of tasks


@dataclass(frozen=True, eq=False)
class Arrivals:
    """The drawn task sequence (indices into the pod table) and the node tie-break order."""

    seed: int
    pods: np.ndarray  # (T,) int64 row of the pod table, in arrival order
    node_order: np.ndarray  # (N,) int64: position p in the tie-break order holds node node_order[p]


def draw(nodes: NodeTable, pods: PodTable, seed: int, stop: float = STOP) -> Arrivals:
    """Tasks until the arrived GPU request passes `stop` x capacity (with replacement, seeded)."""
    if stop <= 0:
        raise ValueError(f"stop: must be > 0, got {stop}")
    demand = pods.gpu_milli
    if demand.sum() == 0:
        raise ValueError(f"{pods.source}: no task asks for a GPU, so arrivals would never stop")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(nodes.names))
    limit = stop * nodes.capacity_milli
    chunk = max(1024, int(limit / max(demand.mean(), 1.0) * 1.1))
    drawn: list[np.ndarray] = []
    total = 0.0
    while True:
        idx = rng.integers(0, len(demand), chunk)
        cum = total + np.cumsum(demand[idx])
        past = np.flatnonzero(cum > limit)
        if len(past):  # keep the task that passes the limit, drop the rest
            drawn.append(idx[: past[0] + 1])
            break
        drawn.append(idx)
        total = float(cum[-1])
    return Arrivals(seed, np.concatenate(drawn), order)


@dataclass(frozen=True)
class Shape:
    """One task shape of the target mix and its probability."""

    cpu: int
    milli: int  # per-GPU milli; 0 for CPU-only
    count: int  # GPUs
    spec: frozenset[str]  # allowed models, empty = any
    prob: float


def target_mix(pods: PodTable, coverage: float = COVERAGE) -> tuple[Shape, ...]:
    """The most frequent shapes covering `coverage` of the tasks, probabilities renormalised."""
    keys = np.stack([pods.cpu, pods.milli, pods.num_gpu, pods.spec], axis=1)
    uniq, counts = np.unique(keys, axis=0, return_counts=True)
    # most frequent first; among equals the larger shape first (the simulator's stable order)
    order = sorted(range(len(uniq)), key=lambda i: (-counts[i], *(-uniq[i][:3]), -uniq[i][3]))
    need = coverage * counts.sum()
    kept: list[int] = []
    cum = 0
    for i in order:
        kept.append(i)
        cum += int(counts[i])
        if cum >= need:
            break
    return tuple(
        Shape(int(uniq[i][0]), int(uniq[i][1]), int(uniq[i][2]), pods.specs[int(uniq[i][3])], counts[i] / cum)
        for i in kept
    )
