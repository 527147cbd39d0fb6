"""The synthetic bench: generated clusters, all-or-nothing pod groups, link quality of placements."""

from __future__ import annotations

import pytest

from benchmarks.synthetic import Chooser, Item, book, make_cluster, make_workload, run_synthetic
from binpack import Demand, Snapshot, Topology


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
