"""Members of pod groups (scheduler/groups/members.py): learned from the watch and from filter calls, a member
whose annotation changes leaves its old group, a deleted member releases its group, and a group's look counts
what must be placed, exists, is held and is pending."""

from __future__ import annotations

from typing import Any

from groups_support import Sim, held_reasons, member, nodes

from binpack import Placement
from scheduler.groups import Look
from scheduler.groups.members import Members
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import WatchEvent
from scheduler.translate.pod import A_GROUP, read_pod


def _watched(*pods: dict[str, Any]) -> ClusterState:
    st = ClusterState()
    st.replace("nodes", nodes(1))
    st.replace("pods", list(pods))
    return st


def test_a_member_that_changes_group_leaves_the_old_one_which_then_takes_its_reservations_along() -> None:
    a, b = member("job", 0, 2), member("job", 1, 2)
    st = _watched(a, b)
    ms = Members(st)
    assert ms.look(("default", "job")) == Look(2, 2, 0, tuple(ms.of(("default", "job"))[u] for u in ("uid-job-0",
                                                                                                    "uid-job-1")))
    st.reserve_all(("default", "job"), [("uid-job-1", Placement("n0", (0,)), read_pod(b))], 30.0)
    moved = {**a, "metadata": {**a["metadata"], "annotations": {**a["metadata"]["annotations"], A_GROUP: "other"}}}
    st.push("pods", WatchEvent("MODIFIED", moved))
    assert set(ms.of(("default", "job"))) == {"uid-job-1"} and set(ms.of(("default", "other"))) == {"uid-job-0"}
    assert st.booking("uid-job-1") is not None
    st.push("pods", WatchEvent("DELETED", b))  # the group's last member: its plan goes with it
    assert ms.groups() == [("default", "other")]
    assert not st.group_bookings(("default", "job")).planned and st.assumed() == {}


def test_learned_members_count_and_pods_gpupack_does_not_place_are_held() -> None:
    ms = Members(_watched())
    cpu_only = member("job", 2, 3)
    cpu_only["spec"]["containers"][0]["resources"] = {}
    ms.learn(read_pod(member("job", 0, 3)))
    ms.learn(read_pod(cpu_only))
    ms.learn(read_pod(member("job", 0, 3)))  # asked again: still one member
    look = ms.look(("default", "job"))
    assert (look.need, look.exist, look.held, [m.uid for m in look.pending]) == (3, 2, 1, ["uid-job-0"])
    assert not look.ready  # 2 of 3 exist


def test_groups_are_ordered_by_priority_then_age_then_name() -> None:
    ms = Members(_watched(*(member(g, 0, 1, priority=prio, created=created) for g, prio, created in (
        ("a", 0, "2026-01-01T00:00:05Z"), ("b", 5, "2026-01-01T00:00:09Z"), ("c", 0, "2026-01-01T00:00:01Z")))))
    assert sorted(ms.groups(), key=ms.order) == [("default", "b"), ("default", "c"), ("default", "a")]


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
