"""Stateful test of the ledger (Hypothesis): assume / confirm / watch shows bound / pod finished /
deleted / expiry / relist, in any order, against a plain model of who holds what. After every step
no device is booked twice (binpack's validate on the applied bookings), the applied bookings are the
model's, and the snapshot equals one rebuilt from scratch."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from binpack import Conflict, Demand, Snapshot, place, validate
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import WatchEvent
from scheduler.state.standalone import demo_objects
from scheduler.translate.devices import annotations_for
from scheduler.translate.inventory import node_from_k8s
from scheduler.translate.pod import read_pod

NODES = [n for n in demo_objects() if n["metadata"]["name"] in ("t4-0", "t4-1", "hgx-a100-0")]
INV = {n["metadata"]["name"]: node_from_k8s(n) for n in NODES}
SHAPES = [{"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"}, {"gpupack.io/gpu-memory": "8000"},
          {"nvidia.com/mig-1g.10gb": "1"}]


def _pod(i: int, shape: int) -> dict[str, Any]:
    limits = SHAPES[shape]
    return {"metadata": {"name": f"p{i}", "namespace": "default", "uid": f"u{i}"},
            "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]},
            "status": {"phase": "Pending"}}


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.state = ClusterState(assume_ttl_s=10, clock=lambda: self.now)
        self.state.replace("nodes", NODES)
        self.state.replace("pods", [])
        self.pods: dict[str, dict[str, Any]] = {}  # the API server's pods
        self.holds: dict[str, tuple[Demand, Any]] = {}  # model: uid -> (demand, placement)
        self.n = 0

    @rule(shape=st.integers(0, len(SHAPES) - 1), node=st.sampled_from(sorted(INV)), bound=st.booleans())
    def bind(self, shape: int, node: str, bound: bool) -> None:
        """A bind assumes devices; the pod then shows up bound with its record (or the bind fails)."""
        p = _pod(self.n, shape)
        self.n += 1
        req = read_pod(p)
        snap = self.state.view().snapshot
        placement = place(snap, req.demand, node)
        if placement is None:
            return
        uid = p["metadata"]["uid"]
        self.state.assume(uid, placement, req)
        if not bound:
            self.state.unassume(uid)  # the bind failed and was undone
            return
        self.state.confirm(uid)
        obj = {**p, "metadata": {**p["metadata"], "annotations": annotations_for(req, placement, INV[node])},
               "spec": {**p["spec"], "nodeName": node}, "status": {"phase": "Running"}}
        self.pods[uid] = obj
        self.holds[uid] = (req.demand, placement)
        self.state.push("pods", WatchEvent("MODIFIED", obj))

    @precondition(lambda self: self.pods)
    @rule(data=st.data(), how=st.sampled_from(["Succeeded", "Failed", "DELETED"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        uid = data.draw(st.sampled_from(sorted(self.pods)))
        obj = self.pods.pop(uid)
        self.holds.pop(uid)
        if how == "DELETED":
            self.state.push("pods", WatchEvent("DELETED", obj))
        else:
            self.state.push("pods", WatchEvent("MODIFIED", {**obj, "status": {"phase": how}}))

    @rule(node=st.sampled_from(sorted(INV)))
    def ghost_assumption_expires(self, node: str) -> None:
        """An assumption whose pod never shows up bound is gone after the TTL."""
        snap = self.state.view().snapshot
        p = place(snap, Demand.whole(1), node)
        if p is None:
            return
        try:
            self.state.assume(f"ghost{self.n}", p, None)
        except Conflict:
            raise AssertionError("a placement that place() found must be bookable") from None
        self.n += 1
        self.now += 11
        self.state.expire()

    @rule()
    def relist(self) -> None:
        self.state.replace("pods", list(self.pods.values()))

    @invariant()
    def never_double_booked_and_matches_model(self) -> None:
        recorded = self.state.ledger.recorded()
        assert recorded == {u: p for u, (_, p) in self.holds.items()}
        base = Snapshot.build([INV[n] for n in sorted(INV)])
        assert validate(base, [self.holds[u] for u in sorted(self.holds)]) == []
        fresh = ClusterState()
        fresh.replace("nodes", NODES)
        fresh.replace("pods", list(self.pods.values()))
        a, b = self.state.view().snapshot.state(), fresh.view().snapshot.state()
        assert all(np.array_equal(a[k], b[k]) for k in a)


LedgerMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestLedger = LedgerMachine.TestCase
