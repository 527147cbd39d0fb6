"""One run of the FGD paper's experiment: one policy, one seed, tasks scheduled online as they
arrive and never deleted; the allocation and fragmentation curves against the arrived workload.

Curves are read as the paper's analysis reads them: the value at arrived k% is the mean over the
scheduling events whose arrived GPU request, as a percent of capacity, rounds to k (falling back
to those within k +- 1, then to interpolation when a big task jumps past k).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.cluster import State, task_of
from benchmarks.frag import FragModel, FragTracker
from benchmarks.policies import ABLATIONS, POLICIES, Context
from benchmarks.trace import NodeTable, PodTable
from benchmarks.workload import STOP, Arrivals, draw, target_mix

Progress = Callable[[float], None]
Curve = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class RunResult:
    """Outcome of one (policy, seed) run; percentages are of the cluster's GPU capacity."""

    policy: str
    seed: int
    alloc_at_100: float
    alloc_at_130: float
    frag_at_100: float
    curve: Curve  # (arrived %, allocated %)
    frag_curve: Curve  # (arrived %, fragmented %)
    tasks: int
    failed: int
    seconds: float  # wall time of the scheduling loop
    cpu_seconds: float  # CPU time of the loop: what the run costs on an otherwise idle core
    # after the last arrival (not in the JSON; `gpupack report`'s replay is checked against them)
    allocated_milli: int = 0
    frag_milli: float = 0.0

    @property
    def decision_ms(self) -> float:
        """CPU milliseconds per arriving task (feasibility, the policy's choice, booking)."""
        return 1000 * self.cpu_seconds / max(self.tasks, 1)


def bin_curve(arrived: np.ndarray, value: np.ndarray, upto: int) -> Curve:
    """(k, mean value at arrived ~k%) for k = 0..upto, as the paper's analysis bins its events."""
    bins = np.rint(arrived)
    out = []
    for k in range(upto + 1):
        sel = bins == k
        if not sel.any():
            sel = np.abs(arrived - k) <= 1
        if not sel.any():
            if arrived[0] > k or arrived[-1] < k:
                continue
            out.append((float(k), round(float(np.interp(k, arrived, value)), 3)))
            continue
        out.append((float(k), round(float(value[sel].mean()), 3)))
    return tuple(out)


def at(curve: Curve, k: float) -> float:
    """The curve's value at arrived k% (interpolated between points, clamped at the ends)."""
    xs = [p[0] for p in curve]
    ys = [p[1] for p in curve]
    return float(np.interp(k, xs, ys))


def simulate(policy: str, nodes: NodeTable, pods: PodTable, arrivals: Arrivals,
             progress: Progress | None = None) -> RunResult:
    """Schedule the arrivals in order with the named policy; book each choice; record the curves."""
    state = State(nodes, arrivals.node_order)
    tracker = FragTracker(FragModel(target_mix(pods), nodes.models), state)
    chooser = {**POLICIES, **ABLATIONS}[policy](Context(state, tracker, nodes, pods, arrivals.seed))
    n = len(arrivals.pods)
    arrived = np.cumsum(pods.gpu_milli[arrivals.pods]) * (100.0 / state.capacity)
    alloc = np.zeros(n)
    frag = np.zeros(n)
    failed = 0
    step = max(n // 100, 1)
    start, cpu_start = time.perf_counter(), time.process_time()
    for j, row in enumerate(arrivals.pods.tolist()):
        t = task_of(pods, row)
        rows = np.flatnonzero(state.feasible(t))
        choice = chooser.choose(t, rows) if len(rows) else None
        if choice is None:
            failed += 1
        else:
            state.apply(t, choice)
            tracker.refresh(choice.node)
        alloc[j] = state.allocated
        frag[j] = tracker.total()
        if progress is not None and j % step == 0:
            progress(j / n)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    end_alloc, end_frag = state.allocated, tracker.total()
    if progress is not None:
        progress(1.0)
    alloc *= 100.0 / state.capacity
    frag *= 100.0 / state.capacity
    upto = round(STOP * 100)
    curve = bin_curve(arrived, alloc, upto)
    frag_curve = bin_curve(arrived, frag, upto)
    return RunResult(policy, arrivals.seed, round(at(curve, 100), 3), round(at(curve, upto), 3),
                     round(at(frag_curve, 100), 3), curve, frag_curve, n, failed, round(seconds, 3),
                     round(cpu, 3), end_alloc, end_frag)


def run(policy: str, nodes: NodeTable, pods: PodTable, seed: int, progress: Progress | None = None) -> RunResult:
    return simulate(policy, nodes, pods, draw(nodes, pods, seed), progress)
