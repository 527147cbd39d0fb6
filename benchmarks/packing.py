"""`gpupack bench packing`'s engine: every (policy, seed) run and every seed's bound, across processes.

Each run depends only on (trace, policy, seed), so the worker count changes the wall time, never
a number. Workers load the trace once; they report progress through a queue that the caller
turns into one progress bar per (policy, seed). The slowest policies start first.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import Manager
from typing import Any

from benchmarks.bound import Bound, bound
from benchmarks.simulate import RunResult, run
from benchmarks.trace import NodeTable, PodTable, load_trace
from benchmarks.workload import draw

FIRST_SEED = 42  # the paper's seeds are 42, 43, ...
SLOW_FIRST = ("gpupack", "fgd")
Key = tuple[str, int]  # (policy or "bound", seed)
OnProgress = Callable[[Key, float], None]


@dataclass(frozen=True)
class Packing:
    """Everything one `bench packing` produced."""

    nodes: str
    pods: str
    gpus: int
    node_count: int
    seeds: tuple[int, ...]
    policies: tuple[str, ...]
    results: tuple[RunResult, ...]
    bounds: tuple[tuple[int, Bound], ...]
    workers: int
    seconds: float


def seeds_from(count: int) -> tuple[int, ...]:
    if count < 1:
        raise ValueError(f"seeds: must be >= 1, got {count}")
    return tuple(range(FIRST_SEED, FIRST_SEED + count))


_trace: tuple[NodeTable, PodTable] | None = None
_queue: Any = None


def _init(nodes: str, pods: str, q: Any) -> None:
    global _trace, _queue
    _trace = load_trace(nodes, pods)
    _queue = q


def _job(kind: str, seed: int) -> RunResult | Bound:
    assert _trace is not None, "worker not initialised"
    nodes, pods = _trace
    q = _queue

    def report(frac: float) -> None:
        if q is not None:
            q.put(((kind, seed), frac))

    report(0.0)  # this run starts now: its progress bar's clock starts here
    if kind == "bound":
        out = bound(nodes, pods, draw(nodes, pods, seed))
        report(1.0)
        return out
    return run(kind, nodes, pods, seed, report)


def run_packing(nodes: str, pods: str, policies: Sequence[str], seeds: Sequence[int], workers: int = 0,
                with_bound: bool = True, on_progress: OnProgress | None = None) -> Packing:
    """All runs; `workers` 0 means one per CPU, 1 runs everything in this process."""
    workers = workers or os.cpu_count() or 1
    table = load_trace(nodes, pods)  # fail fast, in this process, on a bad file
    rank = {p: i for i, p in enumerate(SLOW_FIRST)}
    jobs: list[Key] = sorted(((p, s) for p in policies for s in seeds), key=lambda k: rank.get(k[0], len(rank)))
    if with_bound:
        jobs += [("bound", s) for s in seeds]
    start = time.perf_counter()
    done: dict[Key, RunResult | Bound] = {}
    if workers == 1:
        global _trace, _queue
        _trace, _queue = table, None
        for key in jobs:
            done[key] = _job(*key) if on_progress is None else _inline(key, on_progress)
    else:
        with Manager() as manager:
            q = manager.Queue()
            with ProcessPoolExecutor(workers, initializer=_init, initargs=(nodes, pods, q)) as pool:
                futures: dict[Key, Future[RunResult | Bound]] = {k: pool.submit(_job, *k) for k in jobs}
                while any(not f.done() for f in futures.values()):
                    _drain(q, on_progress, 0.2)
                _drain(q, on_progress, 0.0)
                done = {k: f.result() for k, f in futures.items()}
    results = tuple(r for p in policies for s in seeds if isinstance(r := done[(p, s)], RunResult))
    bounds = tuple((s, b) for s in seeds if isinstance(b := done.get(("bound", s)), Bound))
    return Packing(nodes, pods, table[0].capacity_milli // 1000, len(table[0].names), tuple(seeds),
                   tuple(policies), results, bounds, workers, round(time.perf_counter() - start, 1))


def _inline(key: Key, on_progress: OnProgress) -> RunResult | Bound:
    assert _trace is not None
    nodes, pods = _trace
    on_progress(key, 0.0)  # this run starts now
    if key[0] == "bound":
        out = bound(nodes, pods, draw(nodes, pods, key[1]))
        on_progress(key, 1.0)
        return out
    return run(key[0], nodes, pods, key[1], lambda f: on_progress(key, f))


def _drain(q: Any, on_progress: OnProgress | None, wait: float) -> None:
    try:
        item = q.get(timeout=wait) if wait else q.get_nowait()
        while True:
            if on_progress is not None:
                on_progress(*item)
            item = q.get_nowait()
    except queue.Empty:
        return
