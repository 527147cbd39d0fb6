"""Pod groups in the extender (scheduler/groups), driven the way kube-scheduler drives it, one pod at a
time: filter, then bind on the node that passed. The cluster is an in-memory API server whose pods the
state relists after every write (the watch, without threads), and the clock is a test clock.

Checked: members wait until N exist, then the whole group is reserved at once and each member passes only
its planned node; bind uses exactly the reserved devices and refuses a member without a reservation; a
group that cannot fit leaves the cluster untouched; other pods cannot take reserved devices; expiry and
planning again; a member's deletion releases its group; members beyond N schedule like any pod.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from binpack import Gpu, Node, Placement, release, validate
from binpack.topology import nvswitch
from scheduler.devices import placement_from
from scheduler.extender.verdicts import Engine, FilterOutcome
from scheduler.groups import GroupSettings, PodGroups
from scheduler.podspec import A_GROUP, A_GROUP_MIN, read_pod
from scheduler.state.binder import Binder
from scheduler.state.cluster import ClusterState
from scheduler.state.memapi import MemoryApi
from scheduler.state.plugin import Plugins
from scheduler.state.standalone import node_object

Obj = dict[str, Any]
TTL = 30.0


def nodes(n: int, gpus: int = 8, prefix: str = "n") -> list[Obj]:
    nv, pc = nvswitch(gpus, 12)
    return [node_object(Node(f"{prefix}{i}", tuple(Gpu(g, "A100-SXM4-80GB") for g in range(gpus)), 256_000,
                             2_000_000, nv, pc)) for i in range(n)]


def member(group: str, i: int, size: int, gpus: int = 8, *, priority: int = 0, created: str = "") -> Obj:
    limits = {"nvidia.com/gpu": str(gpus)}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{group}-{i}", "namespace": "default", "uid": f"uid-{group}-{i}",
                         "creationTimestamp": created or f"2026-01-01T00:00:{i:02d}Z",
                         "annotations": {A_GROUP: group, A_GROUP_MIN: str(size)}},
            "spec": {"containers": [{"name": "main", "resources": {"limits": limits, "requests": dict(limits)}}],
                     "priority": priority, "schedulerName": "gpupack-scheduler"},
            "status": {"phase": "Pending"}}


def plain(name: str, gpus: int) -> Obj:
    p = member("x", 0, 1, gpus)
    p["metadata"] = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    return p


class Sim:
    """kube-scheduler, the API server, the watch and the clock around one ClusterState with pod groups."""

    def __init__(self, node_objs: list[Obj], **settings: Any) -> None:
        self.now = 0.0
        self.state = ClusterState(assume_ttl_s=TTL, clock=lambda: self.now, mix_refresh_s=0.0)
        self.api = MemoryApi(node_objs, [])
        self.state.replace("nodes", node_objs)
        self.state.replace("pods", [])
        self.names = [n["metadata"]["name"] for n in node_objs]
        self.registry = CollectorRegistry()
        self.groups = PodGroups(self.state, self.registry, GroupSettings(**{"plan_s": 2.0, "round_s": 4.0,
                                                                          **settings}))
        self.engine = Engine(plugins=Plugins(self.groups))
        self.binder = Binder(self.state, self.api)
        self.binder.plugins = Plugins(self.groups)

    def sync(self) -> None:
        """The watch catching up: the state becomes exactly the API server's pods."""
        self.state.replace("pods", self.api.pods())

    def create(self, pods: Iterable[Obj]) -> None:
        for p in pods:
            self.api.put_pod(p)
        self.sync()

    def delete(self, p: Obj) -> None:
        self.api.delete_pod("default", p["metadata"]["name"])
        self.sync()

    def current(self, p: Obj) -> Obj:
        got = self.api.get_pod("default", p["metadata"]["name"])
        assert got is not None
        return got

    def filter(self, p: Obj, names: list[str] | None = None) -> FilterOutcome:
        view = self.state.view()
        table = self.engine.names(view, names if names is not None else self.names)
        return self.engine.filter(view, self.state.request(self.current(p)), "", table)

    def bind(self, p: Obj, node: str) -> str:
        m = p["metadata"]
        err = self.binder.bind("default", m["name"], m["uid"], node).error
        self.sync()
        return err

    def schedule(self, p: Obj, names: list[str] | None = None) -> str:
        """One scheduling cycle: filter, then bind on the first node that passed; the node or ''."""
        out = self.filter(p, names)
        if not out.passed_names:
            return ""
        node = out.passed_names[0]
        assert self.bind(p, node) == "", node
        return node

    def bound(self, p: Obj) -> str:
        return str(self.current(p)["spec"].get("nodeName") or "")

    def devices(self, p: Obj) -> Placement | None:
        return placement_from(self.current(p)["metadata"]["annotations"])

    def metric(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


def held_reasons(out: FilterOutcome) -> set[str]:
    assert not out.passed and not out.unresolvable
    return set(out.failed.values())


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


def test_a_deleted_member_releases_its_group() -> None:
    sim = Sim(nodes(3))
    pods = [member("job", i, 3, 8) for i in range(3)]
    sim.create(pods)
    sim.filter(pods[0])
    assert len(sim.state.assumed()) == 3
    sim.delete(pods[2])
    assert held_reasons(sim.filter(pods[0])) == {"gpupack: waiting for pod group job: 2 of 3 members exist"}
    assert sim.state.assumed() == {}
    sim.create([member("job", 3, 3, 8)])  # the job controller makes a new one: the group is whole again
    assert sim.filter(pods[1]).passed_names and len(sim.state.assumed()) == 3


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


def test_settings_refuse_bad_limits() -> None:
    with pytest.raises(ValueError, match="plan_s <= round_s"):
        GroupSettings(plan_s=3.0, round_s=1.0)
    with pytest.raises(ValueError, match="ttl_s"):
        GroupSettings(ttl_s=0)
