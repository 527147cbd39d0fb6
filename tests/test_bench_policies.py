"""Each packing policy's choice on small hand-made clusters, and FGD's fragmentation measure by hand."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cluster import Choice, State, Task
from benchmarks.frag import FragModel, FragTracker
from benchmarks.policies import POLICIES, Context, parse_policies
from benchmarks.policies.gpupack import binpack_nodes, demand_of
from benchmarks.trace import NodeTable, PodTable
from benchmarks.workload import Shape
from binpack import DemandKind

ANY: frozenset[str] = frozenset()
WHOLE1 = (Shape(0, 1000, 1, ANY, 1.0),)


def cluster(*nodes: tuple[int, int, str]) -> NodeTable:
    """Nodes as (cpu milli, GPUs, model), memory plenty, in tie-break order."""
    models = tuple(dict.fromkeys(m for _, _, m in nodes))
    return NodeTable("hand", tuple(f"n{i}" for i in range(len(nodes))),
                     np.asarray([c for c, _, _ in nodes]), np.full(len(nodes), 10**6),
                     np.asarray([g for _, g, _ in nodes]), np.asarray([models.index(m) for _, _, m in nodes]), models)


def task(cpu: int = 0, num_gpu: int = 1, milli: int = 1000, models: frozenset[str] = ANY) -> Task:
    return Task(0, cpu, 0, num_gpu, milli if num_gpu else 0, 0, models)


def setup(nodes: NodeTable, policy: str, shapes: tuple[Shape, ...] = WHOLE1, seed: int = 42,
          booked: tuple[tuple[int, int, int], ...] = ()) -> tuple[State, object]:
    """A state with shares (node, gpu, milli) booked first, and the named policy on it."""
    state = State(nodes, np.arange(len(nodes.names)))
    tracker = FragTracker(FragModel(shapes, nodes.models), state)
    for node, gpu, milli in booked:
        state.apply(task(milli=milli), Choice(node, (gpu,)))
        tracker.refresh(node)
    pods = PodTable("hand", *(np.zeros(1, np.int64) for _ in range(5)), (ANY,))
    return state, POLICIES[policy](Context(state, tracker, nodes, pods, seed))


def choose(state: State, policy: object, t: Task) -> Choice | None:
    rows = np.flatnonzero(state.feasible(t))
    return policy.choose(t, rows)  # type: ignore[attr-defined]


def test_best_fit_takes_the_node_with_least_left_and_the_tightest_gpu() -> None:
    nodes = cluster((32000, 4, "T4"), (32000, 2, "T4"))
    state, p = setup(nodes, "best-fit", booked=((1, 1, 300),))
    assert choose(state, p, task(cpu=1000)) == Choice(1, (0,))
    assert choose(state, p, task(cpu=1000, milli=200)) == Choice(1, (1,))  # 700 left beats 1000


def test_dot_product_prefers_the_smaller_product_even_behind_in_order() -> None:
    nodes = cluster((64000, 4, "T4"), (40000, 4, "T4"))
    state, p = setup(nodes, "dot-product")
    assert choose(state, p, task(cpu=32000)) == Choice(1, (0,))  # scores 90 vs 92


def test_gpu_packing_prefers_used_gpus_then_used_nodes() -> None:
    nodes = cluster((32000, 4, "T4"), (32000, 4, "T4"))
    state, p = setup(nodes, "gpu-packing", booked=((1, 2, 500),))
    assert choose(state, p, task(milli=300)) == Choice(1, (2,))  # 95 (shared GPU) vs 29 (idle node)
    assert choose(state, p, task()) == Choice(1, (0,))  # 49 (used node) vs 29
    assert choose(state, p, task(num_gpu=0)) == Choice(0, ())


def test_gpu_clustering_keeps_kinds_together() -> None:
    nodes = cluster((32000, 4, "T4"), (32000, 4, "T4"), (32000, 4, "T4"))
    state, p = setup(nodes, "gpu-clustering", booked=((0, 0, 500),))
    state.apply(task(), Choice(1, (0,)))
    assert choose(state, p, task()) == Choice(1, (1,))  # only 1-GPU tasks there: 90
    assert choose(state, p, task(milli=250)) == Choice(0, (0,))  # the share node, best-fit GPU
    assert choose(state, p, task(num_gpu=2)) == Choice(2, (0, 1))  # idle node (37) over mixed ones
    assert choose(state, p, task(num_gpu=0)) == Choice(0, ())


def test_random_is_seeded_and_feasible() -> None:
    nodes = cluster(*[(32000, 2, "T4")] * 6)
    picks = []
    for _ in range(2):
        state, p = setup(nodes, "random", booked=((3, 1, 900),))
        picks.append([choose(state, p, task(milli=200)) for _ in range(8)])
    assert picks[0] == picks[1] and len({c.node for c in picks[0] if c}) > 1
    state, _ = setup(nodes, "random", booked=((3, 1, 900),))
    assert all(c is not None and state.left[c.node, c.gpus[0]] >= 200 for c in picks[0])


def test_fgd_avoids_the_tight_gpu_best_fit_would_take() -> None:
    share300 = (Shape(0, 300, 1, ANY, 1.0),)
    nodes = cluster((32000, 1, "T4"), (32000, 1, "T4"))
    state, p = setup(nodes, "fgd", share300, booked=((0, 0, 700),))
    # node 0 keeps 100 that no 300-share can use (score 47); node 1 keeps 800 usable (score 50)
    assert choose(state, p, task(milli=200)) == Choice(1, (0,))
    one = cluster((32000, 2, "T4"))
    state, p = setup(one, "fgd", share300, booked=((0, 0, 700),))
    assert choose(state, p, task(milli=200)) == Choice(0, (1,))  # the GPU choice inside the node


def test_fgd_whole_gpus_prefer_the_node_they_fragment_least() -> None:
    mix = (Shape(0, 1000, 2, ANY, 1.0),)  # only 2-GPU tasks arrive
    nodes = cluster((32000, 3, "T4"), (32000, 4, "T4"))
    state, p = setup(nodes, "fgd", mix)
    # on the 3-GPU node one GPU is left that no 2-GPU task can use; on the 4-GPU node none is
    assert choose(state, p, task(num_gpu=2)) == Choice(1, (0, 1))


def test_fragmentation_by_hand() -> None:
    shapes = (Shape(0, 0, 0, ANY, 0.2), Shape(4000, 500, 1, ANY, 0.3), Shape(0, 1000, 2, frozenset({"V100"}), 0.5))
    fm = FragModel(shapes, ("T4", "V100"))
    nodes = cluster((8000, 2, "T4"), (2000, 2, "T4"), (8000, 2, "V100"), (8000, 2, "V100"))
    state = State(nodes, np.arange(4))
    for node in (0, 1, 2):
        state.apply(task(milli=500), Choice(node, (0,)))  # left [500, 1000]
    state.cpu[:] = [8000, 2000, 8000, 8000]
    frag = FragTracker(fm, state).node_frag
    # T4: CPU-only 0.2*1500 + V100-only 2-GPU shape 0.5*1500; CPU-starved share adds 0.3*1500
    # V100 [500,1000]: 2-GPU shape finds one whole GPU (0.5*1500); idle V100: only CPU-only 0.2*2000
    assert frag.tolist() == pytest.approx([1050, 1500, 1050, 400])


def test_gpupack_goes_through_binpack_and_books_its_snapshot() -> None:
    nodes = cluster((32000, 2, "G2"), (32000, 2, "V100M16"))
    state, p = setup(nodes, "gpupack")
    first = choose(state, p, task(milli=500, models=frozenset({"V100M16"})))
    assert first is not None and first.node == 1
    state.apply(task(milli=500), first)
    snap = p.snap  # type: ignore[attr-defined]
    with snap.read() as v:
        assert int(v.compute_free[1, first.gpus[0]]) == 500 and int(v.cpu_free[1]) == 32000
    second = choose(state, p, task(milli=400))
    assert second is not None and second.node == 1 and second.gpus == first.gpus  # packs the used GPU
    assert [n.gpus[0].memory_mib for n in binpack_nodes(nodes, np.arange(2))] == [16384, 16384]


def test_tasks_map_to_the_demands_the_extender_builds() -> None:
    assert demand_of(task(cpu=1, num_gpu=0)).kind is DemandKind.NONE
    whole = demand_of(task(num_gpu=4, models=frozenset({"V100M32", "T4"})))
    assert whole.kind is DemandKind.WHOLE and whole.count == 4 and whole.models == {"V100-SXM2-32GB", "T4"}
    share = demand_of(task(cpu=2000, milli=460))
    assert share.kind is DemandKind.SHARE and share.compute_milli == 460 and share.cpu_milli == 2000
    assert demand_of(task()).kind is DemandKind.WHOLE


def test_policy_names() -> None:
    assert parse_policies("fgd, gpupack") == ("fgd", "gpupack")
    with pytest.raises(ValueError, match="unknown policy nope; known: random"):
        parse_policies("fgd,nope")
