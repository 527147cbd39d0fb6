"""Plans and reservations (scheduler/groups/reserve.py): members wait until N exist, then the whole group is
reserved at once; a group that cannot fit leaves the cluster untouched; expiry releases and plans again."""

from __future__ import annotations

import pytest
from groups_support import TTL, Sim, held_reasons, member, nodes, plain

from binpack import release, validate
from scheduler.groups import GroupSettings
from scheduler.translate.pod import read_pod


@pytest.mark.parametrize(("size", "n_nodes", "gpus"), [(2, 2, 8), (4, 2, 4), (8, 4, 4), (32, 4, 1)])
def test_members_wait_then_the_group_is_reserved_whole_and_binds(size: int, n_nodes: int, gpus: int) -> None:
    sim = Sim(nodes(n_nodes))
    pods = [member("job", i, size, gpus) for i in range(size)]
    sim.create(pods[:-1])
    waiting = f"gpupack: waiting for pod group job: {size - 1} of {size} members exist"
    for p in pods[:-1]:
        assert held_reasons(sim.filter(p)) == {waiting}
        assert sim.bind(p, sim.names[0]).startswith("gpupack: pod group job has no reservation")
    assert sim.state.assumed() == {} and sim.metric("gpupack_pod_groups", state="waiting") == 1
    sim.create(pods[-1:])
    first = sim.filter(pods[-1])
    reserved = sim.groups.reserved()[("default", "job")]
    assert len(reserved) == size and set(sim.state.assumed()) == set(reserved)  # every member, at once
    # the reservations are valid together on the cluster as it was before them (the oracle, not a no-op)
    before = sim.state.view().snapshot
    for placement in reserved.values():
        before = release(before, placement)
    demands = {p["metadata"]["uid"]: read_pod(p).demand for p in pods}
    assert validate(before, [(demands[uid], pl) for uid, pl in reserved.items()]) == []
    one = next(iter(reserved.values()))
    assert validate(before, [(demands[next(iter(reserved))], one)] * 2)  # and the same devices twice are not
    snap0 = sim.state.ledger.snapshot()
    assert first.passed_names == [reserved[pods[-1]["metadata"]["uid"]].node]
    # kube-scheduler comes back for the others in any order; each passes exactly its planned node
    for p in reversed(pods):
        node = sim.schedule(p)
        placed = reserved[p["metadata"]["uid"]]
        assert node == placed.node and sim.bound(p) == node
        assert sim.devices(p) == placed  # the planned devices, written on the pod
    assert sim.state.ledger.snapshot().same_state(snap0)  # binding took nothing beyond the reservation
    assert sim.groups.reserved() == {}
    assert sim.metric("gpupack_pod_groups_total", event="planned") == 1
    assert sim.metric("gpupack_pod_groups_total", event="bound") == 1
    assert sim.metric("gpupack_pod_group_planning_seconds_count") == 1


def test_the_plan_keeps_the_group_on_few_nodes() -> None:
    sim = Sim(nodes(6))
    pods = [member("job", i, 4, 4) for i in range(4)]  # 16 GPUs: two whole nodes, not four halves
    sim.create(pods)
    sim.filter(pods[0])
    reserved = sim.groups.reserved()[("default", "job")]
    assert len({p.node for p in reserved.values()}) == 2


def test_a_group_that_cannot_fit_leaves_the_cluster_untouched() -> None:
    sim = Sim(nodes(3))
    sim.create([plain("other", 4)])
    assert sim.schedule(plain("other", 4))
    before = sim.state.ledger.snapshot()
    pods = [member("big", i, 3, 8) for i in range(3)]  # 24 GPUs; 20 are free but only two whole nodes
    sim.create(pods)
    for p in pods:
        reasons = held_reasons(sim.filter(p))
        assert reasons == {"gpupack: pod group big: its 3 pending members (24 GPUs) do not fit in the cluster "
                           "together; nothing is reserved"}
        assert sim.bind(p, sim.names[1]).startswith("gpupack: pod group big has no reservation")
    assert sim.state.assumed() == {} and sim.state.ledger.snapshot().same_state(before)
    assert [sim.bound(p) for p in pods] == ["", "", ""]
    assert sim.metric("gpupack_pod_groups_total", event="unplaceable") == 1  # planned once for all three
    # room appears (the other pod ends): the next member's filter plans again and the group fits
    sim.delete(plain("other", 4))
    sim.now += 2.0
    assert sim.filter(pods[0]).passed_names
    assert len(sim.groups.reserved()[("default", "big")]) == 3


def test_a_member_that_never_comes_back_expires_and_is_planned_again() -> None:
    sim = Sim(nodes(2))
    a, b = [member("job", i, 2, 8) for i in range(2)]
    sim.create([a, b])
    assert sim.schedule(a)
    b_node = sim.groups.reserved()[("default", "job")][b["metadata"]["uid"]].node
    intruder = plain("intruder", 8)
    sim.create([intruder])
    assert sim.filter(intruder).passed == []  # b's devices are reserved
    sim.now += TTL - 1
    assert sim.groups.reserved()  # not yet
    sim.now += 2
    sim.state.view()  # the reservation's deadline passed: its devices are free again
    assert sim.state.assumed() == {} and sim.groups.reserved() == {}
    assert sim.filter(intruder).passed_names == [b_node]
    assert sim.metric("gpupack_pod_groups_total", event="expired") == 1
    assert sim.filter(b).passed_names == [b_node]  # b comes back: its pending part is planned again
    assert sim.metric("gpupack_pod_groups_total", event="planned") == 2
    assert sim.bind(b, b_node) == "" and sim.bound(a) and sim.bound(b)


def test_expiry_with_no_member_bound_releases_and_replans_the_whole_group() -> None:
    sim = Sim(nodes(2), ttl_s=5.0)
    pods = [member("job", i, 2, 8) for i in range(2)]
    sim.create(pods)
    sim.filter(pods[0])
    first = dict(sim.groups.reserved()[("default", "job")])
    sim.now += 6
    assert sim.state.view() and sim.state.assumed() == {}
    assert sim.bind(pods[0], first[pods[0]["metadata"]["uid"]].node).startswith("gpupack: pod group job has no")
    out = sim.filter(pods[1])
    assert out.passed_names and len(sim.groups.reserved()[("default", "job")]) == 2


def test_settings_refuse_bad_limits() -> None:
    with pytest.raises(ValueError, match="plan_s <= round_s"):
        GroupSettings(plan_s=3.0, round_s=1.0)
    with pytest.raises(ValueError, match="ttl_s"):
        GroupSettings(ttl_s=0)
