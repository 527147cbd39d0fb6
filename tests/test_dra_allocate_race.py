"""Property: binds racing on one node in allocate mode, with the apiserver failing, conflicting and timing out
at random (before or after applying), never allocate a device twice: not in the claims the apiserver holds
afterwards, not in gpupack's ledger (binpack.validate is the oracle on both), and a claim whose bind failed
holds no devices in the apiserver unless reverting it failed too."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dra_support import nodes, slices, state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binpack import Demand, Placement, validate
from scheduler.dra.allocate_bind import AllocatingBinder
from scheduler.dra.claims import placements, read_claim
from scheduler.state.dra_memapi import DraMemoryApi
from scheduler.state.memapi import Faults

NS = "gpupack-dra"
ASKS = {"gpu1": ("gpu.nvidia.com", 1, []), "gpu2": ("gpu.nvidia.com", 2, []), "gpu3": ("gpu.nvidia.com", 3, []),
        "mig": ("mig.nvidia.com", 1, ["device.attributes['gpu.nvidia.com'].profile == '1g.10gb'"]),
        "h100": ("gpu.nvidia.com", 1, ["device.attributes['gpu.nvidia.com'].productName.startsWith('NVIDIA H100')"])}


def _pod(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": NS, "uid": f"pod-{i}"},
            "spec": {"schedulerName": "gpupack-scheduler",
                     "resourceClaims": [{"name": "gpu", "resourceClaimName": f"c{i}"}],
                     "containers": [{"name": "c", "image": "x", "resources": {"claims": [{"name": "gpu"}]}}]},
            "status": {"phase": "Pending"}}


def _claim(i: int, ask: str) -> dict[str, Any]:
    cls, count, sels = ASKS[ask]
    ex: dict[str, Any] = {"deviceClassName": cls, "allocationMode": "ExactCount", "count": count}
    if sels:
        ex["selectors"] = [{"cel": {"expression": s}} for s in sels]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": f"c{i}", "namespace": NS, "uid": f"claim-{i}"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": ex}]}}, "status": {}}


def _split(p: Placement) -> list[tuple[Demand, Placement]]:
    out = [(Demand.whole(1), Placement(p.node, (g,))) for g in p.gpus]
    out += [(Demand.mig(m.profile, 1), Placement(p.node, mig=(m,), kind=p.kind)) for m in p.mig]
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(asks=st.lists(st.sampled_from(sorted(ASKS)), min_size=2, max_size=8),
       node=st.sampled_from(["dra-h100-node", "dra-a100-node"]),
       fail=st.floats(0.0, 0.3), timeout=st.floats(0.0, 0.2), seed=st.integers(0, 2**16))
def test_racing_binds_on_one_node_never_allocate_a_device_twice(asks: list[str], node: str, fail: float,
                                                                timeout: float, seed: int) -> None:
    pods = [_pod(i) for i in range(len(asks))]
    claims = [_claim(i, a) for i, a in enumerate(asks)]
    api = DraMemoryApi(nodes(), copy.deepcopy(pods), slices(), copy.deepcopy(claims),
                       faults=Faults(conflict=fail / 2, server_error=fail / 2, timeout=timeout, seed=seed))
    cluster, dra = state(claims=copy.deepcopy(claims))
    base = cluster.view().snapshot
    binder = AllocatingBinder(cluster, api, dra)
    for p in pods:
        cluster.request(p)  # what filter was sent: the binder reads the pod's claims from it
    with ThreadPoolExecutor(max_workers=4) as ex:
        results = list(ex.map(lambda p: binder.bind(NS, p["metadata"]["name"], p["metadata"]["uid"], node), pods))

    # the apiserver: no device in two claims, nor twice in one
    held = [read_claim(c) for c in api.list_resource_claims()[0]]
    devices = [(r.pool, r.device) for c in held if c.allocated for r in c.results]
    assert len(devices) == len(set(devices))
    pool_node = {s["spec"]["pool"]["name"]: s["spec"]["nodeName"] for s in slices()}
    placed = [x for c in held if c.allocated for p in placements(c, pool_node.get, dra.inventories)[0]
              for x in _split(p)]
    assert validate(base, placed) == []
    # gpupack's ledger: its claim bookings are valid together too
    booked = [x for k, p in cluster.ledger.recorded().items() if k.startswith("claim:") for x in _split(p)]
    assert validate(base, booked) == []
    # a bind answered OK has its claim allocated on that node and reserved for its pod, and the pod bound there
    for p, r in zip(pods, results, strict=True):
        c = next(c for c in held if c.name == p["metadata"]["name"].replace("p", "c", 1))
        if not r.error:
            assert c.allocated and c.node == node and p["metadata"]["uid"] in c.reserved_for
            assert api.get_pod(NS, p["metadata"]["name"])["spec"]["nodeName"] == node
        elif not fail and not timeout:
            assert not c.allocated  # refused for want of devices: nothing written


def test_a_pods_own_reservation_is_free_for_its_claims() -> None:
    """A pod group's plan reserved devices for the pod (an assumption under its UID): its claims may take them,
    and another pod's may not."""
    claims = [_claim(0, "gpu3"), _claim(1, "gpu3"), _claim(2, "gpu3")]
    claims[0]["spec"]["devices"]["requests"][0]["exactly"]["count"] = 6
    pods = [_pod(i) for i in range(3)]
    api = DraMemoryApi(nodes(), copy.deepcopy(pods), slices(), copy.deepcopy(claims))
    cluster, dra = state(claims=copy.deepcopy(claims))
    binder = AllocatingBinder(cluster, api, dra)
    for p in pods:
        cluster.request(p)
    cluster.assume("pod-1", Placement("dra-h100-node", (0, 1, 2)), None)  # pod 1's plan: 3 of the 6 GPUs
    assert "cannot be allocated" in binder.bind(NS, "p0", "pod-0", "dra-h100-node").error  # 6 wanted, 3 free
    assert binder.bind(NS, "p1", "pod-1", "dra-h100-node").error == ""
    assert binder.bind(NS, "p2", "pod-2", "dra-h100-node").error == ""
    held = sorted(r.device for c in api.list_resource_claims()[0] for r in read_claim(c).results)
    assert held == [f"gpu-{i}" for i in range(6)]


def test_the_watchs_older_states_of_a_claim_do_not_free_what_a_bind_allocated() -> None:
    """Between the bind's writes and the watch bringing them, the watch may still deliver the claim as it was
    (no allocation, or only the finalizer): the devices stay taken until a newer state or a revert."""
    from scheduler.state.kubeapi import WatchEvent

    c = _claim(0, "gpu2")
    api = DraMemoryApi(nodes(), [_pod(0)], slices(), [copy.deepcopy(c)])
    cluster, dra = state(claims=[copy.deepcopy(c)])
    cluster.request(_pod(0))
    assert AllocatingBinder(cluster, api, dra).bind(NS, "p0", "pod-0", "dra-a100-node").error == ""
    taken = [k for k in cluster.ledger.recorded() if k.startswith("claim:claim-0:")]
    assert taken
    old = {**c, "metadata": {**c["metadata"], "resourceVersion": "1"}}
    cluster.push("resourceclaims", WatchEvent("MODIFIED", old))
    cluster.drain()
    assert [k for k in cluster.ledger.recorded() if k.startswith("claim:claim-0:")] == taken
    # the claim deallocated later (the pod is gone: the resourceclaim controller clears it): freed
    stored = api.get_resource_claim(NS, "c0")
    assert stored is not None
    newer = {**stored, "status": {}, "metadata": {**stored["metadata"], "resourceVersion": "999999"}}
    cluster.push("resourceclaims", WatchEvent("MODIFIED", newer))
    cluster.drain()
    assert not [k for k in cluster.ledger.recorded() if k.startswith("claim:claim-0:")]


def test_a_claim_shared_by_two_pods_is_allocated_once_and_reserved_for_both() -> None:
    c = _claim(0, "gpu1")
    pods = [_pod(0), _pod(1)]
    pods[1]["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "c0"}]
    api = DraMemoryApi(nodes(), copy.deepcopy(pods), slices(), [copy.deepcopy(c)])
    cluster, dra = state(claims=[copy.deepcopy(c)])
    binder = AllocatingBinder(cluster, api, dra)
    for p in pods:
        cluster.request(p)
    assert binder.bind(NS, "p0", "pod-0", "dra-t4-node").error == ""
    assert "allocated on dra-t4-node, not dra-a100-node" in binder.bind(NS, "p1", "pod-1", "dra-a100-node").error
    assert binder.bind(NS, "p1", "pod-1", "dra-t4-node").error == ""
    got = read_claim(api.get_resource_claim(NS, "c0") or {})
    assert got.reserved_for == ("pod-0", "pod-1") and len(got.results) == 1
    statuses = [b for k, b in api.claim_writes if k == "status"]
    assert len(statuses) == 2 and statuses[0]["status"]["allocation"] == statuses[1]["status"]["allocation"]
