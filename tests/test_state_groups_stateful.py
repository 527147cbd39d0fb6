"""Stateful test of group reservations in the ledger (Hypothesis): reserve a group whole, bind members, undo a
bind, let time pass, delete a bound member, release or close a plan, relist, in any order, against a plain
model. After every step each group's bookings (live, held, lost) are the model's, every booking the ledger
indexes under a group carries that group, and no device is booked twice."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from binpack import Conflict, Placement, Snapshot, allocate, place, validate
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import WatchEvent
from scheduler.state.standalone import demo_objects
from scheduler.translate.devices import annotations_for
from scheduler.translate.inventory import node_from_k8s
from scheduler.translate.pod import read_pod

NODES = [n for n in demo_objects() if n["metadata"]["name"] in ("t4-0", "hgx-a100-0")]
INV = {n["metadata"]["name"]: node_from_k8s(n) for n in NODES}
GROUPS = [("default", "g0"), ("default", "g1")]


def _pod(uid: str, group: str) -> dict[str, Any]:
    return {"metadata": {"name": uid, "namespace": "default", "uid": uid,
                         "annotations": {"gpupack.io/pod-group": group, "gpupack.io/pod-group-min": "1"}},
            "spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Pending"}}


class GroupLedger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.state = ClusterState(assume_ttl_s=10, clock=lambda: self.now)
        self.state.replace("nodes", NODES)
        self.state.replace("pods", [])
        self.pods: dict[str, dict[str, Any]] = {}  # the API server's bound pods
        # model, per open plan: uid -> (placement, "live" | "confirmed" | "held" | "lost")
        self.plans: dict[tuple[str, str], dict[str, tuple[Placement, str]]] = {}
        self.members: dict[tuple[str, str], set[str]] = {}  # model: the groups' members
        self.n = 0

    def _uids(self, *what: str) -> list[str]:
        return sorted(u for plan in self.plans.values() for u, (_, s) in plan.items() if s in what)

    def _key(self, uid: str) -> tuple[str, str]:
        return next(k for k, plan in self.plans.items() if uid in plan)

    @rule(g=st.sampled_from(GROUPS), k=st.integers(1, 3), node=st.sampled_from(sorted(INV)))
    def reserve(self, g: tuple[str, str], k: int, node: str) -> None:
        snap = self.state.view().snapshot
        made = []
        for _ in range(k):
            uid = f"u{self.n}"
            self.n += 1
            req = read_pod(_pod(uid, g[1]))
            p = place(snap, req.demand, node)
            if p is None:
                break
            snap = allocate(snap, p)
            made.append((uid, p, req))
        if len(made) < k:
            made.append(("clash", made[0][1] if made else Placement(node, (99,)), read_pod(_pod("clash", g[1]))))
            try:
                self.state.reserve_all(g, made, 10)
            except (Conflict, ValueError, IndexError):
                return  # nothing was booked, nothing opened
            raise AssertionError("a placement on a taken GPU was reserved")
        for _, _, req in made:
            self.state.learn_member(req)  # the plugin learns a member before it plans (its filter call)
        self.state.reserve_all(g, made, 10)
        self.plans.setdefault(g, {}).update({u: (p, "live") for u, p, _ in made})
        self.members.setdefault(g, set()).update(u for u, _, _ in made)

    @precondition(lambda self: self._uids("live"))
    @rule(data=st.data(), seen=st.booleans())
    def bind(self, data: st.DataObject, seen: bool) -> None:
        """The Binding is made; the watch shows the pod bound with its record (or not yet)."""
        uid = data.draw(st.sampled_from(self._uids("live")))
        key = self._key(uid)
        p, _ = self.plans[key][uid]
        self.state.confirm(uid)
        self.plans[key][uid] = (p, "confirmed")
        if seen:
            req = read_pod(_pod(uid, key[1]))
            raw = _pod(uid, key[1])
            obj = {**raw, "metadata": {**raw["metadata"], "annotations": {
                **raw["metadata"]["annotations"], **annotations_for(req, p, INV[p.node])}},
                "spec": {**raw["spec"], "nodeName": p.node}, "status": {"phase": "Running"}}
            self.pods[uid] = obj
            self.state.push("pods", WatchEvent("ADDED", obj))
            self.plans[key][uid] = (p, "held")

    @precondition(lambda self: self._uids("live"))
    @rule(data=st.data())
    def undo(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(self._uids("live")))
        self.state.unassume(uid)
        key = self._key(uid)
        self.plans[key][uid] = (self.plans[key][uid][0], "lost")

    @rule()
    def time_passes(self) -> None:
        self.now += 11
        self.state.expire()  # live and confirmed-but-not-seen reservations expire: lost
        for plan in self.plans.values():
            for u, (p, s) in plan.items():
                if s in ("live", "confirmed"):
                    plan[u] = (p, "lost")

    @precondition(lambda self: self.pods)
    @rule(data=st.data())
    def delete_bound(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(sorted(self.pods)))
        self.state.push("pods", WatchEvent("DELETED", self.pods.pop(uid)))
        for plan in self.plans.values():
            if uid in plan:
                plan[uid] = (plan[uid][0], "lost")  # the pod is gone before its group's plan was done
        for key, ms in list(self.members.items()):
            ms.discard(uid)
            if not ms:  # the group's last member left: its plan and reservations go with it
                del self.members[key]
                self.plans.pop(key, None)

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.plans)))
        live = [u for u, (_, s) in self.plans[key].items() if s == "live"]
        planned = self.state.release_group(key, live)
        assert set(planned) == set(self.plans.pop(key))

    @rule()
    def relist(self) -> None:
        self.state.replace("pods", list(self.pods.values()))

    @invariant()
    def each_group_is_the_models(self) -> None:
        for key in GROUPS:
            gb = self.state.group_bookings(key)
            plan = self.plans.get(key)
            assert gb.planned == (plan is not None)
            plan = plan or {}
            assert set(gb.live) == {u for u, (_, s) in plan.items() if s == "live"}
            assert gb.held == {u for u, (_, s) in plan.items() if s in ("confirmed", "held")}
            assert set(gb.lost) == {u for u, (_, s) in plan.items() if s == "lost"}
            for u in [*gb.live, *gb.held]:
                b = self.state.booking(u)
                assert b is not None and b.group == key and b.placement == plan[u][0]

    @invariant()
    def never_double_booked(self) -> None:
        held = [(read_pod(_pod(u, "x")).demand, b.placement) for u, b in sorted(self.state.assumed().items())]
        held += [(read_pod(_pod(u, "x")).demand, self.state.booking(u).placement)  # type: ignore[union-attr]
                 for u in sorted(self.pods) if u not in self.state.assumed()]
        assert validate(Snapshot.build([INV[n] for n in sorted(INV)]), held) == []


GroupLedger.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestGroupLedger = GroupLedger.TestCase
