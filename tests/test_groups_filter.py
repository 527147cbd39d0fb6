"""filter for group members (scheduler/groups/filter.py): each member passes only its planned node, other pods
cannot take reserved devices, a node kube-scheduler refused is planned around, members beyond N and pods of no
group are filtered like any pod (and keep the answer cache)."""

from __future__ import annotations

import orjson
from groups_support import Sim, member, nodes, plain


def test_other_pods_cannot_take_reserved_devices() -> None:
    sim = Sim(nodes(2))
    pods = [member("job", i, 2, 8) for i in range(2)]
    sim.create(pods)
    sim.filter(pods[0])
    intruder = plain("intruder", 1)
    sim.create([intruder])
    out = sim.filter(intruder)
    assert out.passed == [] and all("free" in r or "GPU" in r for r in out.failed.values())
    assert sim.bind(intruder, sim.names[0]).startswith("gpupack: pod default/intruder no longer fits")


def test_a_refused_node_is_planned_around_at_once() -> None:
    sim = Sim(nodes(3))
    a, b = [member("job", i, 2, 8) for i in range(2)]
    sim.create([a, b])
    assert sim.schedule(a)
    b_node = sim.groups.reserved()[("default", "job")][b["metadata"]["uid"]].node
    # kube-scheduler's own filters refuse b's planned node (e.g. its CPU): it is not in the list gpupack gets
    others = [n for n in sim.names if n != b_node]
    out = sim.filter(b, others)
    assert out.passed_names and out.passed_names[0] in others  # planned again, away from the refused node
    assert sim.groups.reserved()[("default", "job")][b["metadata"]["uid"]].node == out.passed_names[0]
    assert sim.metric("gpupack_pod_groups_total", event="expired") == 1
    assert sim.metric("gpupack_pod_groups_total", event="planned") == 2
    assert sim.bind(b, out.passed_names[0]) == ""
    assert sim.bound(a) and sim.bound(b) and sim.state.ledger.snapshot().node(b_node)


def test_members_beyond_n_schedule_like_any_pod() -> None:
    sim = Sim(nodes(3))
    pods = [member("job", i, 2, 8) for i in range(3)]  # 3 members, at least 2 together
    sim.create(pods)
    sim.filter(pods[0])
    planned = sim.groups.reserved()[("default", "job")]
    assert len(planned) == 3  # every pending member is planned together when the group becomes ready
    for p in pods:
        assert sim.schedule(p)
    late = member("job", 9, 2, 8)  # one more after the group is whole: no reservation, no wait
    sim.create([late])
    out = sim.filter(late)
    assert out.passed == [] and "Insufficient" not in str(out.failed)  # the cluster is full: an ordinary refusal
    assert not any("pod group" in r for r in out.failed.values())


def test_non_group_pods_keep_the_filter_answer_cache() -> None:
    sim = Sim(nodes(2))
    p, q = plain("a", 1), plain("b", 1)
    sim.create([p, q])
    view = sim.state.view()
    table = sim.engine.names(view, sim.names)
    from scheduler.extender import wire

    args = wire.parse_args(orjson.dumps({"Pod": sim.current(p), "NodeNames": sim.names}))
    body1, _ = sim.engine.filter_answer(view, sim.state.request(sim.current(p)), "", table, args)
    body2, _ = sim.engine.filter_answer(view, sim.state.request(sim.current(q)), "", table, args)
    assert body1 is body2  # made once, although a group hook is installed
