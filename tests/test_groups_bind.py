"""bind for group members (scheduler/groups/bind.py): a member binds only its reserved devices, on its
reserved node, and never alone."""

from __future__ import annotations

from groups_support import Sim, member, nodes


def test_a_member_binds_only_on_its_reserved_node() -> None:
    sim = Sim(nodes(3))
    pods = [member("job", i, 2, 8) for i in range(2)]
    sim.create(pods)
    sim.filter(pods[0])
    node = sim.groups.reserved()[("default", "job")][pods[0]["metadata"]["uid"]].node
    other = next(n for n in sim.names if n not in {p.node for p in sim.groups.reserved()[("default", "job")].values()})
    out = sim.filter(pods[0])
    assert out.passed_names == [node] and set(out.failed) == set(sim.names) - {node}
    assert sim.bind(pods[0], other) == (f"gpupack: pod group job: this member's devices are reserved on {node}, "
                                        f"not {other}")
    assert sim.bound(pods[0]) == "" and len(sim.groups.reserved()[("default", "job")]) == 2
