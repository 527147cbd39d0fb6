"""The synthetic bench: generated clusters, all-or-nothing pod groups, link quality of placements."""

from __future__ import annotations

import pytest

from benchmarks import synthetic
from benchmarks.synthetic import POLICIES, Chooser, Item, book, make_cluster, make_workload, run_synthetic
from binpack import Demand, Gpu, Node, Snapshot, Topology
from binpack.topology import pcie_only


def test_cluster_mixes_the_five_kinds() -> None:
    nodes = make_cluster(10)
    assert len(nodes) == 10
    assert {n.name.rsplit("-", 1)[0] for n in nodes} == {"dgx-h100", "dgx1-v100", "a100-mig", "t4", "l4"}
    with pytest.raises(ValueError, match="nodes"):
        make_cluster(0)


def test_workload_is_seeded_and_reaches_the_load() -> None:
    nodes = make_cluster(5)
    a, b = make_workload(nodes, 1), make_workload(nodes, 1)
    assert [i.name for i in a] == [i.name for i in b] and a != make_workload(nodes, 2)
    assert any(len(i.members) > 1 for i in make_workload(make_cluster(50), 3))


def test_a_group_that_does_not_fit_leaves_nothing_behind() -> None:
    t4 = [n for n in make_cluster(5) if n.name.startswith("t4")]  # one node, 4 GPUs
    snap = Snapshot.build(t4)
    group = Item("g", (Demand.whole(3), Demand.whole(3)))
    after, booked, links = book(Chooser("gpupack", 1), snap, group)
    assert booked == [] and links == [] and after.same_state(snap)
    pair = Item("p", (Demand.whole(2), Demand.whole(2)))
    after, booked, _ = book(Chooser("first-fit", 1), snap, pair)
    assert len(booked) == 2 and not after.same_state(snap)


def test_gpupack_takes_the_best_links_of_a_cube_mesh() -> None:
    v100 = [n for n in make_cluster(5) if n.name.startswith("dgx1")]
    snap = Snapshot.build(v100)
    job = Item("j", (Demand.whole(2, topology=Topology.BEST_EFFORT),))
    for policy, best in (("gpupack", True), ("first-fit", False)):
        _, booked, links = book(Chooser(policy, 1), snap, job)
        assert len(booked) == 1 and links[0][0] is best
    # GPUs 0 and 1 (first-fit's pick) share one NVLink; gpupack takes a double-linked pair


def test_run_reports_percentages() -> None:
    r = run_synthetic("gpupack", make_cluster(10), 42)
    assert 0 < r.allocated_pct <= 100 and 0 <= r.group_success_pct <= 100 and r.best_links_pct > 0
    with pytest.raises(ValueError, match="policy"):
        run_synthetic("nope", make_cluster(5), 1)
    for ablation in synthetic.ABLATIONS:
        assert run_synthetic(ablation, make_cluster(10), 42).allocated_pct > 0
    assert Chooser("fgd", 1).learner.keep_multi is False and Chooser("gpupack", 1).learner.keep_multi


def test_refusals_with_room_are_told_from_refusals_for_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 4-GPU nodes: two 3-GPU jobs leave one free GPU on each. A 2-GPU job is then refused
    although 2 GPUs are free (fragmentation); a 4-GPU group after it is refused for capacity."""
    nv, pc = pcie_only(4)
    nodes = [Node(n, tuple(Gpu(g, "T4") for g in range(4)), 48_000, 192_000, nv, pc) for n in ("a", "b")]
    items = [Item("train-0", (Demand.whole(3),)), Item("train-1", (Demand.whole(3),)),
             Item("train-2", (Demand.whole(2),)), Item("group-3", (Demand.whole(2), Demand.whole(2)))]
    monkeypatch.setattr(synthetic, "make_workload", lambda *_: items)
    for policy in POLICIES:
        r = synthetic.run_synthetic(policy, nodes, 1)
        assert r.room_refused_pct == round(100 * 2 / 12, 2) and r.groups_room_refused_pct == 0
        assert r.group_success_pct == 0 and r.allocated_pct == 75 and r.nvlink_placed_pct == 0
