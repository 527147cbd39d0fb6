"""place_group: all or nothing, valid, and on small instances as good as exhaustive search.

The brute force tries every assignment of members to nodes and, per node, every choice of devices
(validate decides); its objective is the documented one, recomputed here from `score`:
    (MAX_SCORE * members + 1) * nodes used + sum over members of (MAX_SCORE - score of its node).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_binpack_gen import FAST, clusters, demands, examples, node_feasible, states

from binpack import (
    EMPTY_MIX,
    Demand,
    Gpu,
    GroupStatus,
    Node,
    Placement,
    Snapshot,
    Topology,
    allocate,
    fit,
    place_group,
    score,
    validate,
)
from binpack.group_node import pack_node
from binpack.score import MAX_SCORE
from binpack.topology import dgx1_v100, nvswitch


def costs(snap: Snapshot, members: Sequence[Demand]) -> list[list[int]]:
    return [[MAX_SCORE - int(x) for x in score(fit(snap, d), EMPTY_MIX).integer] for d in members]


def objective(snap: Snapshot, members: Sequence[Demand], nodes: Sequence[str]) -> int:
    cost = costs(snap, members)
    used = len(set(nodes))
    return (MAX_SCORE * len(members) + 1) * used + sum(cost[m][snap.node_index(n)] for m, n in enumerate(nodes))


def brute(snap: Snapshot, members: Sequence[Demand]) -> int | None:
    """The best objective over every feasible assignment, or None when none is feasible."""
    memo: dict[tuple[str, tuple[int, ...]], bool] = {}
    best = None
    for nodes in itertools.product(snap.names, repeat=len(members)):
        ok = True
        for name in set(nodes):
            ms = tuple(m for m, n in enumerate(nodes) if n == name)
            key = (name, ms)
            if key not in memo:
                memo[key] = node_feasible(snap, [members[m] for m in ms], name)
            ok = ok and memo[key]
        if ok:
            val = objective(snap, members, nodes)
            best = val if best is None else min(best, val)
    return best


@st.composite
def groups(draw: st.DrawFn) -> list[Demand]:
    kinds = draw(st.lists(demands(max_count=3), min_size=1, max_size=2))
    return [kinds[i] for i in draw(st.lists(st.integers(0, len(kinds) - 1), min_size=1, max_size=4))]


@examples(100)
@given(data=st.data())
def test_place_group_matches_brute_force(data: st.DataObject) -> None:
    snap = data.draw(states(data.draw(clusters(max_nodes=3, max_gpus=3))))
    members = data.draw(groups())
    r = place_group(snap, members, time_limit_s=10, workers=1, seed=0)
    expect = brute(snap, members)
    assert r.exhaustive
    assert r.placed == (expect is not None), (r.status, expect)
    if expect is None:
        assert r.status is GroupStatus.INFEASIBLE and r.placements == ()
        return
    assert r.status is GroupStatus.OPTIMAL
    assert validate(snap, list(zip(members, r.placements, strict=True))) == []
    assert r.objective == objective(snap, members, [p.node for p in r.placements]) == expect


@FAST
@given(data=st.data())
def test_pack_node_is_exact(data: st.DataObject) -> None:
    snap = data.draw(states(data.draw(clusters(max_nodes=1, max_gpus=4))))
    members = data.draw(groups())
    got = pack_node(snap, snap.names[0], members)
    assert not got.exhausted
    assert (got.placements is not None) == node_feasible(snap, members, snap.names[0])
    if got.placements is not None:
        assert validate(snap, list(zip(members, got.placements, strict=True))) == []


def test_greedy_dead_end_is_solved_by_cp_sat() -> None:
    # greedy puts the small-CPU pair on the first node; the big-CPU pair then fits nowhere
    a = Node("a", (Gpu(0, "T4"), Gpu(1, "T4")), 100, 1000)
    b = Node("b", (Gpu(0, "T4"), Gpu(1, "T4")), 10, 1000)
    snap = Snapshot.build([a, b])
    members = [Demand.whole(2, cpu_milli=1), Demand.whole(2, cpu_milli=50)]
    assert place_group(snap, members, time_limit_s=0).status is GroupStatus.TIMED_OUT
    r = place_group(snap, members, time_limit_s=5)
    assert r.status is GroupStatus.OPTIMAL and [p.node for p in r.placements] == ["b", "a"]


def test_cp_sat_uses_fewer_nodes_than_greedy() -> None:
    small = Node("small", tuple(Gpu(g, "T4") for g in range(4)), 10_000, 10_000)
    big = Node("big", tuple(Gpu(g, "T4") for g in range(8)), 10_000, 10_000)
    snap = Snapshot.build([small, big])
    members = [Demand.whole(4), Demand.whole(4)]
    greedy = place_group(snap, members, time_limit_s=0)
    assert greedy.status is GroupStatus.TIMED_OUT_GREEDY and greedy.nodes == ("big", "small")
    r = place_group(snap, members, time_limit_s=5)
    assert r.status is GroupStatus.OPTIMAL and r.nodes == ("big",)
    assert r.objective is not None and greedy.objective is not None and r.objective < greedy.objective


def test_all_or_nothing() -> None:
    nv, pc = dgx1_v100()
    snap = Snapshot.build([Node(f"v{i}", tuple(Gpu(g, "V100-SXM2-32GB") for g in range(8)), 10**6, 10**7, nv, pc)
                           for i in range(2)])
    four = Demand.whole(4, topology=Topology.NVLINK)
    assert place_group(snap, [four] * 4).status is GroupStatus.OPTIMAL
    r = place_group(snap, [four] * 5)  # only two NVLink quads per DGX-1
    assert r.status is GroupStatus.INFEASIBLE and r.placements == () and not r.placed and r.exhaustive
    r = place_group(snap, [four, Demand.whole(1, models=frozenset({"H100"}))])  # one member fits nowhere
    assert r.status is GroupStatus.INFEASIBLE and r.placements == ()
    assert place_group(snap, []).status is GroupStatus.OPTIMAL


def test_nvlink_quality_breaks_ties_between_equal_node_counts() -> None:
    # one DGX-1 with GPU 0 busy (no NVLink quad left on 0-3) and one empty: a 4-GPU member goes
    # where its set scores best relative to the board
    nv, pc = dgx1_v100()
    v = tuple(Gpu(g, "V100-SXM2-32GB") for g in range(8))
    snap = Snapshot.build([Node("busy", v, 10**6, 10**7, nv, pc), Node("empty", v, 10**6, 10**7, nv, pc)])
    snap = allocate(snap, Placement("busy", (0, 4)))
    r = place_group(snap, [Demand.whole(4)], time_limit_s=5)
    assert r.status is GroupStatus.OPTIMAL and r.nodes == ("empty",)


def test_pod_group_of_32_eight_gpu_members_at_scale() -> None:
    nv, pc = nvswitch(8, 18)
    h100 = tuple(Gpu(g, "H100") for g in range(8))
    nodes = [Node(f"h{i:03d}", h100, 224_000, 2_000_000, nv, pc) for i in range(200)]
    snap = Snapshot.build(nodes)
    for i in range(0, 200, 2):  # every other node has one GPU busy
        snap = allocate(snap, Placement(f"h{i:03d}", (i % 8,)))
    member = Demand.whole(8, topology=Topology.NVLINK, cpu_milli=64_000, host_memory_mib=512_000)
    r = place_group(snap, [member] * 32, time_limit_s=5, max_candidates=64)
    assert r.status is GroupStatus.OPTIMAL and len(r.nodes) == 32
    assert validate(snap, list(zip([member] * 32, r.placements, strict=True))) == []
    again = place_group(snap, [member] * 32, time_limit_s=5, max_candidates=64)
    assert again.placements == r.placements  # fixed seed, one worker: deterministic
    mixed = [member] * 8 + [Demand.whole(2)] * 8 + [Demand.share(10_000, 250)] * 8
    r = place_group(snap, mixed, time_limit_s=5)
    assert r.placed and validate(snap, list(zip(mixed, r.placements, strict=True))) == []


def test_pack_node_reports_an_exhausted_budget() -> None:
    nv, pc = dgx1_v100()
    snap = Snapshot.build([Node("v", tuple(Gpu(g, "V100-SXM2-32GB") for g in range(8)), 10**6, 10**7, nv, pc)])
    three = Demand.whole(3, topology=Topology.NVLINK)
    got = pack_node(snap, "v", [three] * 3, budget=5)
    assert got.placements is None and got.exhausted
    assert pack_node(snap, "v", [three] * 3).placements is None  # 9 GPUs: proven impossible
    assert pack_node(snap, "v", [three] * 2).placements is not None


@pytest.mark.parametrize("bad", [{"time_limit_s": -1}, {"workers": 0}, {"max_candidates": 0}, {"search_budget": 0}])
def test_bad_parameters(bad: dict) -> None:
    with pytest.raises(ValueError, match="place_group"):
        place_group(Snapshot.build([Node("n", (Gpu(0, "T4"),), 1, 1)]), [Demand.whole(1)], **bad)
