"""The one interface every packing policy implements, and what a policy is built from.

A policy is built once per run from a Context (the run's state, fragmentation tracker, trace and
seed) and then, per arriving task, picks a node among the feasible rows and the GPUs there. The
simulator books the choice; policies that keep their own model of the cluster (gpupack's binpack
snapshot) book it themselves before returning it. Rows are in the seed's tie-break order, so
"first best row" is how every policy breaks ties, as kube-scheduler does over a fixed node order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from benchmarks.cluster import Choice, State, Task
from benchmarks.frag import FragTracker
from benchmarks.trace import NodeTable, PodTable


@dataclass(frozen=True, eq=False)
class Context:
    """What a policy may look at: the live state, its fragmentation tracker, the trace, the seed."""

    state: State
    tracker: FragTracker
    nodes: NodeTable
    pods: PodTable
    seed: int


class Policy(Protocol):
    name: str

    def choose(self, t: Task, rows: np.ndarray) -> Choice | None:
        """A choice among `rows` (non-empty, feasible for t), or None to leave the task unplaced."""
        ...


Factory = Callable[[Context], Policy]


def first_best(rows: np.ndarray, scores: np.ndarray) -> int:
    """The first row (in tie-break order) among those with the highest score."""
    return int(rows[int(np.argmax(scores))])


def exclusive_or_best_fit(state: State, t: Task, node: int) -> Choice:
    """The simulators' default device rule: a share on the best-fitting GPU, whole GPUs first free by index."""
    if t.share:
        return Choice(node, (state.best_fit_gpu(node, t.milli),))
    return Choice(node, state.first_free(node, t.num_gpu))
