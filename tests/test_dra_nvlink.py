"""NVLink on DRA nodes (scheduler/dra/nvlink.py): the driver publishes none, so the links come from gpupack's agent
annotation on the same Node, matched to the slice's GPUs by UUID; a claim annotated `gpupack.io/topology: nvlink`
gets an NVLink-connected set in allocate mode, and is refused with the reason on a node whose links are unknown."""

from __future__ import annotations

import copy

import pytest
from dra_support import load, nodes, slices
from dra_support import state as dra_state

from binpack import Gpu, Node
from binpack.topology import PHB
from scheduler.dra.allocate import Unallocatable, allocate_claims, claim_spec
from scheduler.dra.nvlink import nvlink_by_uuid
from scheduler.dra.state import DraState
from scheduler.state.cluster import ClusterState
from scheduler.translate.inventory import INVENTORY, encode_inventory

A100 = "dra-a100-node"
UUIDS = [d["attributes"]["uuid"]["string"] for d in load(f"driver/resourceslice-{A100}.json")["spec"]["devices"]]
LINKED = (4, 5)  # slice devices gpu-4 and gpu-5 (on different PCIe roots) share 12 NVLinks in the agent's view


def _agent_nodes() -> list[dict[str, object]]:
    """The fixture nodes, the A100 node with an agent annotation listing its GPUs in reverse order."""
    order = list(reversed(range(8)))  # agent index i is slice GPU order[i]: matching must go by UUID
    gpus = [Gpu(i, "NVIDIA A100-SXM4-80GB", 81920, UUIDS[s]) for i, s in enumerate(order)]
    at = {s: i for i, s in enumerate(order)}
    nv = [[0] * 8 for _ in range(8)]
    a, b = at[LINKED[0]], at[LINKED[1]]
    nv[a][b] = nv[b][a] = 12
    out = copy.deepcopy(nodes())
    for n in out:
        if n["metadata"]["name"] == A100:
            n["metadata"].setdefault("annotations", {})[INVENTORY] = encode_inventory(gpus, nv, [[0] * 8] * 8)
    return out


def _listed(with_agent: bool) -> tuple[ClusterState, DraState]:
    st, dra = dra_state()
    if with_agent:
        st.replace("nodes", _agent_nodes())
    return st, dra


def _claim(nvlink: bool) -> dict[str, object]:
    meta: dict[str, object] = {"name": "pair", "namespace": "ns", "uid": "c-pair"}
    if nvlink:
        meta["annotations"] = {"gpupack.io/topology": "nvlink"}
    return {"metadata": meta, "spec": {"devices": {"requests": [
        {"name": "gpus", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 2}}]}}}


def test_links_are_matched_by_uuid_not_by_index() -> None:
    agent = Node("n", tuple(Gpu(i, "m", 1024, u) for i, u in enumerate(["u2", "u0", "u1"])), 1000, 1000,
                 nvlink=((0, 4, 0), (4, 0, 8), (0, 8, 0)))
    dra_gpus = [Gpu(0, "m", 1024, "u0"), Gpu(1, "m", 1024, "u1"), Gpu(2, "m", 1024, "u2"), Gpu(3, "m", 1024, "unknown")]
    assert nvlink_by_uuid(agent, dra_gpus) == ((0, 8, 4, 0), (8, 0, 0, 0), (4, 0, 0, 0), (0, 0, 0, 0))


def test_the_ledger_node_takes_the_agents_links_for_the_slice_gpus() -> None:
    st, _ = _listed(with_agent=True)
    nv = st.node(A100).nvlink  # type: ignore[union-attr]
    assert [(i, j) for i in range(8) for j in range(8) if nv[i][j]] == [LINKED, LINKED[::-1]]
    assert nv[LINKED[0]][LINKED[1]] == 12
    assert not any(map(any, _listed(with_agent=False)[0].node(A100).nvlink))  # type: ignore[union-attr]


def test_an_nvlink_claim_gets_the_linked_pair_and_without_links_a_pair_shares_a_pcie_root() -> None:
    st, dra = _listed(with_agent=True)
    nd = dra.node_devices(A100)
    assert nd is not None
    snap = st.view().snapshot
    got = allocate_claims(snap, nd, [claim_spec(_claim(nvlink=True))])
    assert sorted(d for _, d in got.results["c-pair"]) == [f"gpu-{i}" for i in LINKED]
    plain = allocate_claims(snap, nd, [claim_spec(_claim(nvlink=False))])  # best effort prefers the links too
    assert sorted(d for _, d in plain.results["c-pair"]) == [f"gpu-{i}" for i in LINKED]
    st, dra = _listed(with_agent=False)  # no links known: the pair on one PCIe root (PHB)
    nd = dra.node_devices(A100)
    assert nd is not None
    plain = allocate_claims(st.view().snapshot, nd, [claim_spec(_claim(nvlink=False))])
    chosen = [int(d.removeprefix("gpu-")) for _, d in plain.results["c-pair"]]
    assert st.node(A100).pcie[chosen[0]][chosen[1]] == PHB  # type: ignore[union-attr]


def test_an_nvlink_claim_is_refused_where_no_links_are_known() -> None:
    st, dra = _listed(with_agent=False)
    nd = dra.node_devices(A100)
    assert nd is not None
    with pytest.raises(Unallocatable, match=r"NVLink topology is unknown.*pcieRoot instead"):
        allocate_claims(st.view().snapshot, nd, [claim_spec(_claim(nvlink=True))])


def test_an_unknown_topology_annotation_is_refused() -> None:
    bad = _claim(nvlink=True)
    bad["metadata"]["annotations"] = {"gpupack.io/topology": "ring"}  # type: ignore[index]
    with pytest.raises(Unallocatable, match="nvlink or best-effort"):
        claim_spec(bad)
    assert slices()  # the fixtures the other cases read are there
