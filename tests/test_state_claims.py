"""DRA's methods of the gate (scheduler/state/claims.py): claim bookings never double-book, a freed device goes
to the claim that waited for it, and a slice-made node replaces only a node the ledger has."""

from __future__ import annotations

from dataclasses import replace

from groups_support import nodes

from binpack import Node, Placement
from scheduler.state.cluster import ClusterState


def _state() -> ClusterState:
    st = ClusterState(assume_ttl_s=30.0, clock=lambda: 0.0)
    st.replace("nodes", nodes(1))
    st.replace("pods", [])
    return st


def test_claim_bookings_never_double_book_and_a_freed_device_goes_to_the_waiting_claim() -> None:
    st = _state()
    st.book_claims([("claim:a:0", Placement("n0", (0, 1))), ("claim:b:0", Placement("n0", (1, 2)))])
    # b shares GPU 1 with a: kept, not applied
    assert st.applied_placements(["claim:a:0", "claim:b:0"]) == [Placement("n0", (0, 1))]
    assert st.booking("claim:b:0") is not None
    st.unbook_claims(["claim:a:0"])
    assert st.booking("claim:a:0") is None
    assert st.applied_placements(["claim:a:0", "claim:b:0"]) == [Placement("n0", (1, 2))]
    st.book_claims([("claim:b:1", Placement("n0", (5,)))], drop=["claim:b:0"])  # b's allocation moved
    assert st.booking("claim:b:0") is None
    assert st.applied_placements(["claim:b:0", "claim:b:1"]) == [Placement("n0", (5,))]
    with st.view().snapshot.read() as v:
        assert int(v.whole_free()[0].sum()) == 7  # one node: GPU 5 held, the seven others free


def test_refresh_node_replaces_a_listed_node_and_never_adds_one() -> None:
    st = _state()
    n0 = st.node("n0")
    assert n0 is not None
    fewer = Node("n0", n0.gpus[:4], n0.cpu_milli, n0.memory_mib)  # (as when its slices publish four)
    st.refresh_node(fewer)
    assert st.node("n0") == fewer
    st.refresh_node(replace(n0, name="elsewhere"))
    assert st.node("elsewhere") is None and set(st.view().snapshot.static.index) == {"n0"}
