"""Pod groups racing for the same GPUs (Hypothesis): members arrive interleaved, kube-scheduler tries pods in
any order, sometimes refuses a node with its own filters, and time passes (reservations expire).

Checked on every bind of a member: its whole group (at least N members) is bound or reserved at that moment.
Checked at the end of a race without refusals: each group is wholly placed or wholly pending, at least one
is placed, and no device is booked twice. Ready groups are planned by priority, then age, then name.
"""

from __future__ import annotations

from typing import Any

import pytest
from groups_support import TTL, Sim, member, nodes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binpack import Placement, Snapshot, validate
from scheduler.state.plugin import Plugins
from scheduler.translate.inventory import node_from_k8s
from scheduler.translate.pod import PodRequest, read_pod

Obj = dict[str, Any]
RACE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _Guarded:
    """The pod-group plugin, with a check on its bind point: whenever it hands out a reservation, the member's
    whole group must be held."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.seen: list[str] = []

    def applies(self, req: PodRequest) -> bool:
        return self.sim.groups.applies(req)

    def filter(self, req: PodRequest, view: Any, names: Any) -> Any:
        return self.sim.groups.filter(req, view, names)

    def preempt(self, req: PodRequest, view: Any, victims: Any) -> Any:
        return self.sim.groups.preempt(req, view, victims)

    def reserve(self, uid: str, req: PodRequest, node: str) -> Placement | str | None:
        got = self.sim.groups.reserve(uid, req, node)
        if isinstance(got, Placement):
            look = self.sim.groups.look((req.namespace, req.group))
            live = self.sim.groups.check((req.namespace, req.group))
            assert uid in live and look.held >= look.need, (uid, look)
            self.seen.append(uid)
        return got


def _guard(sim: Sim) -> list[str]:
    guarded = _Guarded(sim)
    sim.binder.plugins = Plugins(guarded)
    return guarded.seen


def _groups(draw: Any, capacity: int) -> list[list[Obj]]:
    out = []
    for g in range(draw(st.integers(2, 3))):
        gpus = draw(st.sampled_from([2, 4, 8]))
        size = draw(st.integers(2, max(2, min(8, capacity // gpus))))
        prio = draw(st.integers(0, 1))
        out.append([member(f"g{g}", i, size, gpus, priority=prio) for i in range(size)])
    return out


def _run(sim: Sim, groups: list[list[Obj]], data: Any, refuse: bool) -> None:
    arrivals = data.draw(st.permutations([p for g in groups for p in g]))
    made: list[Obj] = []

    def attempt() -> bool:
        waiting = [p for p in made if not sim.bound(p)]
        if not waiting:
            return False
        p = data.draw(st.sampled_from(waiting))
        names = sim.names
        if refuse and data.draw(st.integers(0, 4)) == 0:
            names = [n for n in sim.names if n != data.draw(st.sampled_from(sim.names))]
        out = sim.filter(p, names)
        if out.passed_names:
            assert sim.bind(p, out.passed_names[0]) == ""
            return True
        return False

    for p in arrivals:
        sim.create([p])
        made.append(p)
        for _ in range(data.draw(st.integers(0, 3))):
            attempt()
        if refuse and data.draw(st.integers(0, 5)) == 0:
            sim.now += TTL + 1  # every reservation not bound by now expires
    for _ in range(len(made) + 2):  # kube-scheduler retries every pending pod until a pass moves nothing
        sim.now += 1.5  # past GroupSettings.retry_s: an unplaceable group is planned again
        moved = False
        for p in made:
            if not sim.bound(p):
                out = sim.filter(p)
                if out.passed_names:
                    assert sim.bind(p, out.passed_names[0]) == ""
                    moved = True
        if not moved:
            break


def _final(sim: Sim, groups: list[list[Obj]], node_objs: list[Obj]) -> None:
    placed = [sum(1 for p in g if sim.bound(p)) for g in groups]
    assert all(k in (0, len(g)) for k, g in zip(placed, groups, strict=True)), placed
    assert any(placed), placed
    snap = Snapshot.build([node_from_k8s(n) for n in node_objs])
    pairs = [(read_pod(p).demand, sim.devices(p)) for g in groups for p in g if sim.bound(p)]
    assert all(pl is not None for _, pl in pairs)
    assert validate(snap, [(d, pl) for d, pl in pairs if pl is not None]) == []
    assert sim.state.assumed().keys() <= {p["metadata"]["uid"] for g in groups for p in g if sim.bound(p)}


@RACE
@given(data=st.data(), n_nodes=st.integers(2, 4))
def test_racing_groups_end_whole_or_pending(data: Any, n_nodes: int) -> None:
    objs = nodes(n_nodes)
    sim = Sim(objs)
    guarded = _guard(sim)
    groups = _groups(data.draw, n_nodes * 8)
    _run(sim, groups, data, refuse=False)
    _final(sim, groups, objs)
    assert len(guarded) == sum(1 for g in groups for p in g if sim.bound(p))


@RACE
@given(data=st.data(), n_nodes=st.integers(2, 4))
def test_refusals_and_expiry_never_bind_a_member_without_its_group(data: Any, n_nodes: int) -> None:
    sim = Sim(nodes(n_nodes))
    guarded = _guard(sim)
    groups = _groups(data.draw, n_nodes * 8)
    _run(sim, groups, data, refuse=True)
    bound = [p["metadata"]["uid"] for g in groups for p in g if sim.bound(p)]
    assert sorted(guarded) == sorted(bound)  # every bound member went through a whole-group reservation


@pytest.mark.parametrize(("lo", "hi", "winner"), [
    ({"priority": 0}, {"priority": 5}, "hi"),  # priority first, although lo is older
    ({"created": "2026-01-01T00:00:00Z"}, {"created": "2026-01-02T00:00:00Z"}, "lo"),  # then the oldest
    ({"created": "2026-01-01T00:00:00Z"}, {"created": "2026-01-01T00:00:00Z"}, "hi"),  # then the name
])
def test_ready_groups_are_reserved_in_order(lo: dict[str, Any], hi: dict[str, Any], winner: str) -> None:
    sim = Sim(nodes(2))
    lo_pods = [member("lo", i, 2, 8, created=lo.get("created", "2026-01-01T00:00:00Z"),
                      priority=lo.get("priority", 0)) for i in range(2)]
    hi_pods = [member("hi", i, 2, 8, created=hi.get("created", "2026-01-03T00:00:00Z"),
                      priority=hi.get("priority", 0)) for i in range(2)]
    if winner == "hi" and "priority" not in hi:
        hi_pods = [member("a-hi", i, 2, 8, created=hi["created"]) for i in range(2)]  # "a-hi" < "lo"
    sim.create(lo_pods + hi_pods)
    sim.filter(lo_pods[0])  # lo's member asks first; both groups are ready; only one fits
    won = next(iter(sim.groups.reserved()))[1]
    assert won == (hi_pods[0]["metadata"]["annotations"]["gpupack.io/pod-group"] if winner == "hi" else "lo")
    loser = lo_pods if winner == "hi" else hi_pods
    reasons = set(sim.filter(loser[1]).failed.values())
    assert len(reasons) == 1 and "do not fit in the cluster together; nothing is reserved" in reasons.pop()
