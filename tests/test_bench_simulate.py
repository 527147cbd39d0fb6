"""Arrivals (the inflation stop rule, seeding), the target mix, runs' determinism and the curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.packing import run_packing
from benchmarks.simulate import at, bin_curve, run
from benchmarks.trace import load_nodes, load_pods, load_trace
from benchmarks.workload import draw, target_mix

NODES = """sn,cpu_milli,memory_mib,gpu,model
g0,96000,393216,8,G2
g1,96000,393216,8,G2
t0,32000,131072,2,T4
t1,32000,131072,2,T4
v0,48000,262144,4,V100M16
v1,48000,262144,4,V100M16
"""
PODS = """name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec
a,8000,16384,1,1000,
b,4000,8192,1,500,
c,4000,8192,1,250,T4
d,6000,12288,1,460,
e,16000,65536,2,1000,
f,32000,131072,4,1000,V100M16|G2
g,2000,4096,0,0,
h,4000,8192,1,1000,
i,2000,4096,1,160,
j,64000,262144,8,1000,
"""


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "nodes.csv").write_text(NODES)
    (tmp_path / "pods.csv").write_text(PODS)
    return str(tmp_path / "nodes.csv"), str(tmp_path / "pods.csv")


def test_arrivals_stop_right_after_passing_130_percent(tiny: tuple[str, str]) -> None:
    nodes, pods = load_trace(*tiny)
    for seed in (1, 2, 3):
        a = draw(nodes, pods, seed)
        cum = np.cumsum(pods.gpu_milli[a.pods])
        limit = 1.3 * nodes.capacity_milli
        assert cum[-1] > limit and cum[-2] <= limit
        assert sorted(a.node_order.tolist()) == list(range(6))
    short = draw(nodes, pods, 1, stop=0.5)
    assert np.cumsum(pods.gpu_milli[short.pods])[-1] > 0.5 * nodes.capacity_milli
    with pytest.raises(ValueError, match="stop"):
        draw(nodes, pods, 1, stop=0)


def test_arrivals_are_seeded(tiny: tuple[str, str]) -> None:
    nodes, pods = load_trace(*tiny)
    a, b, c = draw(nodes, pods, 7), draw(nodes, pods, 7), draw(nodes, pods, 8)
    assert np.array_equal(a.pods, b.pods) and np.array_equal(a.node_order, b.node_order)
    assert not np.array_equal(a.pods[: len(c.pods)], c.pods[: len(a.pods)])


def test_a_pod_list_without_gpu_tasks_never_stops(tmp_path: Path, tiny: tuple[str, str]) -> None:
    (tmp_path / "cpu.csv").write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1,1,0,0\n")
    with pytest.raises(ValueError, match="no task asks for a GPU"):
        draw(load_nodes(Path(tiny[0])), load_pods(tmp_path / "cpu.csv"), 1)


def test_target_mix_is_the_most_frequent_shapes(tmp_path: Path) -> None:
    rows = ["a,1000,1,1,500,"] * 6 + ["b,2000,1,1,1000,"] * 3 + ["c,1,1,0,0,"]
    (tmp_path / "p.csv").write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n" + "\n".join(rows))
    mix = target_mix(load_pods(tmp_path / "p.csv"), coverage=0.9)
    assert [(s.cpu, s.milli, s.count) for s in mix] == [(1000, 500, 1), (2000, 1000, 1)]
    assert [s.prob for s in mix] == pytest.approx([6 / 9, 3 / 9])
    assert len(target_mix(load_pods(tmp_path / "p.csv"), coverage=1.0)) == 3


def test_same_seed_same_result(tiny: tuple[str, str]) -> None:
    nodes, pods = load_trace(*tiny)
    for policy in ("random", "fgd", "gpupack"):
        a, b = run(policy, nodes, pods, 5), run(policy, nodes, pods, 5)
        assert (a.curve, a.frag_curve, a.failed, a.alloc_at_100) == (b.curve, b.frag_curve, b.failed, b.alloc_at_100)
        assert 0 < a.alloc_at_100 <= 100 and a.curve[-1][0] == 130
    assert run("random", nodes, pods, 5).curve != run("random", nodes, pods, 6).curve


def test_worker_count_changes_no_number(tiny: tuple[str, str]) -> None:
    seen: list[tuple[str, int]] = []
    one = run_packing(*tiny, ["best-fit", "fgd"], [42, 43], 1, True, lambda k, f: seen.append(k))
    two = run_packing(*tiny, ["best-fit", "fgd"], [42, 43], 2, True)
    assert [(r.policy, r.seed, r.curve) for r in one.results] == [(r.policy, r.seed, r.curve) for r in two.results]
    assert one.bounds == two.bounds and len(one.bounds) == 2
    assert set(seen) == {(p, s) for p in ("best-fit", "fgd", "bound") for s in (42, 43)}


def test_curves_bin_like_the_papers_analysis() -> None:
    arrived = np.asarray([0.2, 0.6, 1.4, 2.6, 5.0])
    value = np.asarray([0.0, 1.0, 2.0, 3.0, 4.0])
    curve = bin_curve(arrived, value, 6)
    # k=2 and k=4 have no event rounding to them: the events within +-1 stand in, as in the paper
    assert curve == ((0.0, 0.0), (1.0, 1.5), (2.0, 2.5), (3.0, 3.0), (4.0, 4.0), (5.0, 4.0), (6.0, 4.0))
    assert at(curve, 1.5) == pytest.approx(2.0) and at(curve, 99) == 4.0
