"""The configuration-LP bound and the offline best-fit-decreasing packing on hand-made task sets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bound import _knapsack, arrived_at, best_fit_decreasing, lp_bound
from benchmarks.trace import load_nodes, load_pods
from benchmarks.workload import Arrivals


def _tables(tmp_path: Path, nodes: str, pods: list[str]) -> tuple:
    (tmp_path / "n.csv").write_text("sn,cpu_milli,memory_mib,gpu,model\n" + nodes)
    (tmp_path / "p.csv").write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n" + "\n".join(pods) + "\n")
    n, p = load_nodes(tmp_path / "n.csv"), load_pods(tmp_path / "p.csv")
    return n, p, np.arange(len(p.cpu))


@pytest.mark.parametrize(("pods", "milli"), [
    (["a,1,1,1,600,"] * 3, 1200),  # one 600-share per GPU: patterns cannot split tasks
    (["a,1,1,1,500,"] * 3, 1500),  # {500, 500} fills a GPU: 1.5 GPUs' worth
    (["a,1,1,1,600,", "b,1,1,1,400,", "c,1,1,1,700,", "d,1,1,1,300,"], 2000),
    (["a,1,1,2,1000,", "b,1,1,1,300,"], 2000),  # whole GPUs are the full pattern
])
def test_lp_bound_on_two_gpus(tmp_path: Path, pods: list[str], milli: int) -> None:
    nodes, table, rows = _tables(tmp_path, "n0,8000,8192,2,T4\n", pods)
    value, columns = lp_bound(nodes, table, rows)
    assert value == pytest.approx(milli) and columns >= 1


def test_lp_bound_respects_models(tmp_path: Path) -> None:
    nodes, table, rows = _tables(tmp_path, "t,8000,8192,1,T4\nv,8000,8192,1,V100\n",
                                 ["a,1,1,1,700,V100", "b,1,1,1,700,V100", "c,1,1,1,300,T4", "d,1,1,1,300,"])
    # V100 takes one 700 (+ the unconstrained 300); T4 can only take the 300s
    assert lp_bound(nodes, table, rows)[0] == pytest.approx(700 + 300 + 300)


def test_knapsack_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = rng.integers(100, 700, 4)
        profit = rng.random(4) * sizes
        bound = rng.integers(0, 4, 4)
        value, counts = _knapsack(sizes, profit, bound)
        best = max(float(np.dot(c, profit)) for c in itertools.product(*(range(b + 1) for b in bound))
                   if np.dot(c, sizes) <= 1000)
        assert value == pytest.approx(best)
        assert np.dot(counts, sizes) <= 1000 and (counts <= bound).all()
        assert float(np.dot(counts, profit)) == pytest.approx(value)


def test_bfd_packs_largest_first_and_stays_below_the_bound(tmp_path: Path) -> None:
    nodes, table, rows = _tables(tmp_path, "n0,8000,8192,2,T4\nn1,8000,8192,2,T4\n",
                                 ["a,1,1,1,600,", "b,1,1,1,600,", "c,1,1,1,400,", "d,1,1,1,400,", "e,1,1,2,1000,",
                                  "f,1,1,1,700,"])
    packed = best_fit_decreasing(nodes, table, rows)
    assert packed == 3700  # 2 whole GPUs, the 700 alone on a GPU (300 stranded), 600 + 400 on the other
    assert packed <= lp_bound(nodes, table, rows)[0] + 1e-6
    starved = _tables(tmp_path, "n0,1000,8192,2,T4\n", ["a,800,1,1,500,", "b,800,1,1,500,"])
    assert best_fit_decreasing(*starved) == 500  # the CPU of the node runs out first


def test_arrived_at_takes_the_tasks_up_to_the_percentage(tmp_path: Path) -> None:
    nodes, table, _ = _tables(tmp_path, "n0,8000,8192,2,T4\n", ["a,1,1,1,500,", "b,1,1,1,1000,", "c,1,1,0,0,"])
    arrivals = Arrivals(1, np.asarray([0, 2, 1, 0, 1]), np.arange(1))
    assert arrived_at(nodes, table, arrivals).tolist() == [0, 2, 1, 0]  # 2000 <= 2000 < 3000
    assert arrived_at(nodes, table, arrivals, 25).tolist() == [0, 2]
