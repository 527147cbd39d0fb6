"""The one gate to cluster state (scheduler/state/cluster.py): group reservations are ledger bookings with a
group (reserved all or nothing, lost when dropped before their pod is bound, released or closed whole), who
holds what on a node is answered once for both preempts (state/holdings.py), and no module outside
scheduler/state reaches into the state's ledger, lock or pods."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from groups_support import member, nodes, plain

from binpack import Conflict, Placement, fit
from scheduler.state.cluster import ClusterState
from scheduler.state.holdings import without
from scheduler.state.kubeapi import WatchEvent
from scheduler.translate.devices import annotations_for
from scheduler.translate.pod import read_pod

ROOT = Path(__file__).resolve().parent.parent
KEY = ("default", "job")


def _state(n: int = 2) -> ClusterState:
    st = ClusterState(assume_ttl_s=30.0, clock=lambda: 0.0)
    st.replace("nodes", nodes(n))
    st.replace("pods", [])
    return st


def _whole(node: str, *gpus: int) -> Placement:
    return Placement(node, gpus)


def _bookings(n: int) -> list[tuple[str, Placement, Any]]:
    return [(f"uid-job-{i}", _whole("n0", 2 * i, 2 * i + 1), read_pod(member("job", i, n, 2))) for i in range(n)]


def test_a_group_is_reserved_whole_or_not_at_all() -> None:
    st = _state()
    st.reserve_all(KEY, _bookings(2), 30.0)
    gb = st.group_bookings(KEY)
    assert gb.planned and set(gb.live) == {"uid-job-0", "uid-job-1"} and not gb.held and not gb.lost
    clash = [("uid-job-8", _whole("n0", 6, 7), read_pod(member("job", 8, 2, 2))),
             ("uid-job-9", _whole("n0", 0, 7), read_pod(member("job", 9, 2, 2)))]  # GPU 0 is taken
    with pytest.raises(Conflict):
        st.reserve_all(("default", "other"), clash, 30.0)
    assert st.booking("uid-job-8") is None and not st.group_bookings(("default", "other")).planned


def test_a_reservation_dropped_before_its_pod_is_bound_is_lost_and_a_bound_one_is_held() -> None:
    st = _state()
    st.reserve_all(KEY, _bookings(3), 30.0)
    p0 = member("job", 0, 3, 2)
    inv = st.node("n0")
    assert inv is not None
    bound = {**p0, "spec": {**p0["spec"], "nodeName": "n0"}, "status": {"phase": "Running"},
             "metadata": {**p0["metadata"], "annotations": {**p0["metadata"]["annotations"],
                          **annotations_for(read_pod(p0), _whole("n0", 0, 1), inv, bound_ns=1)}}}
    st.push("pods", WatchEvent("ADDED", bound))  # the watch shows member 0 bound with its record
    st.unassume("uid-job-1")  # member 1's bind undone: lost
    gb = st.group_bookings(KEY)
    assert gb.held == {"uid-job-0"} and set(gb.live) == {"uid-job-2"} and set(gb.lost) == {"uid-job-1"}
    planned = st.release_group(KEY, gb.live)
    assert set(planned) == {"uid-job-0", "uid-job-1", "uid-job-2"}
    assert not st.group_bookings(KEY).planned and st.booking("uid-job-2") is None
    assert st.booking("uid-job-0") is not None and st.booking("uid-job-0").group is None  # type: ignore[union-attr]


def test_holds_and_holdings_answer_both_preempts() -> None:
    st = _state(1)
    st.replace("pods", [])
    booked = plain("booked", 4)
    foreign = plain("foreign", 2)
    inv = st.node("n0")
    assert inv is not None
    booked.update(spec={**booked["spec"], "nodeName": "n0"}, status={"phase": "Running"})
    booked["metadata"]["annotations"] = annotations_for(read_pod(booked), _whole("n0", 0, 1, 2, 3), inv, bound_ns=1)
    foreign.update(spec={**foreign["spec"], "nodeName": "n0"}, status={"phase": "Running"})
    st.replace("pods", [booked, foreign])
    holds, others = st.holds("n0", ["uid-booked", "uid-foreign", "uid-nobody"])
    assert [(h.uid, h.placement, h.foreign) for h in holds] == [
        ("uid-booked", _whole("n0", 0, 1, 2, 3), 0), ("uid-foreign", None, 2)]
    assert others == {"uid-nobody"}
    node = st.holdings("n0")
    assert node is not None and node.foreign == 2 and st.holdings("nowhere") is None
    eight = read_pod(plain("eight", 8)).demand
    assert not fit(node.snapshot, eight).fits[0]
    assert not fit(without(node.snapshot, "n0", holds[:1], node.foreign), eight).fits[0]
    assert fit(without(node.snapshot, "n0", holds, node.foreign), eight).fits[0]


_INSIDE = ("ledger", "lock", "_pods", "_groups")
# a planted module that reaches in each way the scan looks for: the scan must see every one of them
_PLANTED = """
with self.state.lock:
    self.state.ledger.drop("claim:c1:0")
held = st._pods.get("uid-a"), cluster._groups
"""


def _reaches_in(path: Path, root: Path = ROOT) -> list[str]:
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Attribute) and n.attr in _INSIDE:
            owner = n.value.attr if isinstance(n.value, ast.Attribute) else getattr(n.value, "id", "")
            if owner in ("state", "st", "cluster"):
                out.append(f"{path.relative_to(root)}:{n.lineno} {owner}.{n.attr}")
    return out


def test_no_module_outside_the_state_touches_its_ledger_lock_or_pods(tmp_path: Path) -> None:
    files = [p for d in ("scheduler", "benchmarks", "webhook") for p in (ROOT / d).rglob("*.py")
             if not str(p.relative_to(ROOT)).startswith("scheduler/state/")]
    assert len(files) > 50 and any(str(p.relative_to(ROOT)).startswith("scheduler/dra/") for p in files)
    assert [hit for p in files for hit in _reaches_in(p)] == []
    planted = tmp_path / "planted.py"
    planted.write_text(_PLANTED)
    assert sorted(_reaches_in(planted, tmp_path)) == [  # the scan sees what it looks for
        "planted.py:2 state.lock", "planted.py:3 state.ledger", "planted.py:4 cluster._groups", "planted.py:4 st._pods"]
