"""preempt for group members (scheduler/groups/preempt.py): nothing is evicted for a group short of members or
for a group that would still not fit; otherwise each member gets its planned node with the fewest victims the
plan needs there, victims holding nothing gpupack counts are kept in the answer, and a member already reserved
only gets its reserved node's proposal back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from groups_support import Sim, member, nodes, plain

from scheduler.state.plugin import Answer


@dataclass(frozen=True)
class V:
    uid: str


def _full(n_nodes: int) -> tuple[Sim, dict[str, list[str]]]:
    """Nodes of 8 GPUs, each full with two 4-GPU pods; node -> the UIDs of its pods."""
    sim = Sim(nodes(n_nodes))
    on: dict[str, list[str]] = {n: [] for n in sim.names}
    for i in range(2 * n_nodes):
        p = plain(f"low{i}", 4)
        sim.create([p])
        node = sim.names[i // 2]
        assert sim.schedule(p, [node]) == node
        on[node].append(p["metadata"]["uid"])
    return sim, on


def _preempt(sim: Sim, p: dict[str, Any], proposal: dict[str, list[str]]) -> Answer | None:
    req = sim.state.request(sim.current(p))
    return sim.groups.preempt(req, sim.state.view(), {n: ([V(u) for u in us], 1) for n, us in proposal.items()})


def test_nothing_is_evicted_for_a_group_short_of_members_or_short_of_room() -> None:
    sim, on = _full(2)
    a, b = member("hi", 0, 2, priority=10), member("hi", 1, 2, priority=10)
    sim.create([a])
    assert _preempt(sim, a, on) == {}  # one of two members exists: evicting cannot help yet
    sim.create([b])
    assert _preempt(sim, a, {sim.names[0]: on[sim.names[0]]}) == {}  # one node freed is not room for the group


def test_each_member_gets_its_planned_node_with_the_victims_the_plan_needs() -> None:
    sim, on = _full(2)
    a, b = member("hi", 0, 2, priority=10), member("hi", 1, 2, priority=10)
    sim.create([a, b])
    first, second = _preempt(sim, a, on), _preempt(sim, b, on)
    assert first is not None and second is not None
    assert len(first) == 1 and len(second) == 1 and set(first) | set(second) == set(sim.names)
    for node, (victims, pdb) in {**first, **second}.items():
        assert sorted(victims) == sorted(on[node]) and pdb == 1


def test_victims_holding_nothing_gpupack_counts_are_kept_and_plain_pods_are_not_its_business() -> None:
    sim, on = _full(1)
    node = sim.names[0]
    a = member("hi", 0, 1, priority=10)
    sim.create([a])
    got = _preempt(sim, a, {node: [*on[node], "uid-cpu-only"]})
    assert got == {node: ([*on[node], "uid-cpu-only"], 1)}
    other = plain("other", 8)
    sim.create([other])
    assert _preempt(sim, other, on) is None  # not a group member: the per-node check answers


def test_a_reserved_member_gets_only_its_reserved_nodes_proposal() -> None:
    sim = Sim(nodes(2))
    a, b = member("job", 0, 2, 4), member("job", 1, 2, 4)
    sim.create([a, b])
    sim.filter(a)
    mine = sim.groups.reserved()[("default", "job")]["uid-job-0"].node
    other = next(n for n in sim.names if n != mine)
    assert _preempt(sim, a, {mine: ["v1"], other: ["v2"]}) == {mine: (["v1"], 1)}
    assert _preempt(sim, a, {other: ["v2"]}) == {}
