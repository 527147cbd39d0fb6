"""Golden tests on the captured ResourceClaims: every allocated claim's devices are taken in the ledger,
whoever allocated them, and freed when the allocation goes or the claim is deleted."""

from __future__ import annotations

import copy

import pytest
from dra_support import load, state

from binpack import Demand, DemandKind, MigSlot, Placement, fit
from scheduler.dra.claims import InvalidClaim, read_claim
from scheduler.state.kubeapi import WatchEvent
from scheduler.translate.devices import DEVICES

W, M = DemandKind.WHOLE, DemandKind.MIG
A100, H100, T4 = "dra-a100-node", "dra-h100-node", "dra-t4-node"

# claim file -> the placements it holds (kube-scheduler's DRA allocations, and KAI-style ones written by hand)
GOLDEN = {
    "claims/scheduled-ncc-false/after/claim-dra-1gpu-gpu-lsn2x.json": [Placement(A100, (0,), kind=W)],
    "claims/scheduled-ncc-false/after/claim-dra-2gpu-pcieroot-gpu-xhjbf.json": [Placement(A100, (2, 3), kind=W)],
    "claims/scheduled-ncc-false/after/claim-dra-h100-cel-gpu-5wlvz.json": [Placement(H100, (0,), kind=W)],
    "claims/scheduled-ncc-false/after/claim-dra-mig-1g10gb-gpu-5q4vp.json": [
        Placement(H100, mig=(MigSlot(6, "1g.10gb", 6),), kind=M)],
    "claims/scheduled-ncc-false/after/claim-dra-nokcm-1gpu-gpu-l8ntg.json": [Placement(T4, (0,), kind=W)],
    "claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json": [Placement(T4, (3,), kind=W)],
    "claims/scheduled-ncc-true/after/claim-ncc-2gpu-pcieroot-gpu-kgrk7.json": [Placement(T4, (1, 2), kind=W)],
    "claims/scheduled-ncc-true/after/claim-ncc-h100-cel-gpu-h4d26.json": [Placement(H100, (1,), kind=W)],
    "claims/scheduled-ncc-true/after/claim-ncc-mig-1g10gb-gpu-4rwr4.json": [
        Placement(H100, mig=(MigSlot(7, "1g.10gb", 0),), kind=M)],
    "claims/scheduled-ncc-true/before/claim-ncc-1gpu-gpu-j2dtd.json": [],
    "extended-resource/claim-extres-gpu1-extended-resources-2pzwm.json": [Placement(H100, (4,), kind=W)],
    "filter-answers/only-h100-node/claim-flt-only-h100-gpu-p42jv.json": [Placement(H100, (3,), kind=W)],
    "filter-answers/only-t4-node-but-t4-full/claim-flt-only-t4-gpu-xjgjc.json": [],
    "kai/objects/claim-kai-1gpu-gpu-6fh8s.json": [Placement(A100, (1,), kind=W)],
    "kai/objects/claim-kai-2gpu-gpu-nbws5.json": [],  # allocated with no results: the apiserver accepted it
    "bind-error/claim-after.json": [Placement(A100, (1,), kind=W)],  # a failed bind keeps the allocation
    "prealloc/claim-v-with-allocationtimestamp-after.json": [Placement(A100, (6,), kind=W)],
    "prealloc/claim-v-no-nodeselector-after.json": [Placement(A100, (7,), kind=W)],
    # what the apiserver accepts without a cross-check (README item 7): what can be mapped is taken
    "kai/validation/claims-as-stored/claim-v-duplicate-device.json": [Placement(A100, (4,), kind=W)],
    "kai/validation/claims-as-stored/claim-v-nonexistent-device.json": [],
    "kai/validation/claims-as-stored/claim-v-ghost-pool-node.json": [],
    "kai/validation/claims-as-stored/claim-v-too-few-results.json": [Placement(A100, (4,), kind=W)],
    "kai/validation/claims-as-stored/claim-v-reservedfor-non-pod.json": [Placement(H100, (2,), kind=W)],
    "lifecycle/pod-deleted-without-controller/claim-after.json": [Placement(A100, (1,), kind=W)],
    "lifecycle/pod-deleted-with-resourceclaim-controller/claim-after.json": [],
}


@pytest.mark.parametrize("path", sorted(GOLDEN))
def test_each_fixture_claim_books_exactly_its_devices(path: str) -> None:
    claim = load(path)
    st, _ = state([claim])
    got = sorted(st.ledger.recorded().values(), key=lambda p: (p.node, p.kind.value))
    assert got == GOLDEN[path]
    assert st.ledger.conflicts == 0


def test_all_scheduled_claims_together_leave_exactly_the_rest_free() -> None:
    claims = [load(p) for p in GOLDEN if "/scheduled-ncc-true/after/" in p]
    st, _ = state(claims)
    snap = st.view().snapshot
    assert fit(snap, Demand.whole(1)).fits.tolist() == [True, True, True]  # T4 node: gpu-0 is its last free
    assert fit(snap, Demand.whole(2)).fits.tolist() == [True, True, False]
    assert fit(snap, Demand.mig("1g.10gb", 3)).fits.tolist() == [False, True, False]
    assert fit(snap, Demand.mig("1g.10gb", 4)).fits.tolist() == [False, False, False]  # gpu-7@0 is taken


def test_read_claim_keeps_what_observe_mode_needs() -> None:
    c = read_claim(load("claims/scheduled-ncc-true/after/claim-ncc-mig-1g10gb-gpu-4rwr4.json"))
    assert (c.namespace, c.name, c.allocated, c.node) == ("gpupack-dra", "ncc-mig-1g10gb-gpu-4rwr4", True, H100)
    assert c.reserved_for == ("9e56a0b7-84f8-4516-a8d2-5f696096bb96",)
    (r,) = c.requests
    assert (r.name, r.device_class, r.mode, r.count, r.profile, r.other_selectors) == (
        "mig", "mig.nvidia.com", "ExactCount", 1, "1g.10gb", False)
    ext = read_claim(load("extended-resource/claim-extres-gpu1-extended-resources-2pzwm.json"))
    assert ext.extended and ext.requests[0].device_class == "gpu.nvidia.com"


@pytest.mark.parametrize("bad", [[], {"metadata": {"name": "x"}}, {"metadata": {"uid": "u", "name": "x"}, "spec": 1},
                                 {"metadata": {"uid": "u", "name": "x"}, "status": {"allocation": {"devices": 7}}}])
def test_a_claim_that_cannot_be_read_is_refused_clearly(bad: object) -> None:
    with pytest.raises(InvalidClaim, match="resourceclaim"):
        read_claim(bad)  # type: ignore[arg-type]


def test_bad_claims_from_the_watch_leave_the_state_untouched() -> None:
    good = load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json")
    st, dra = state([good])
    before = st.ledger.recorded()
    for bad in ({"metadata": {"name": "x"}}, {"metadata": {"uid": "u", "name": "y"}, "spec": "junk"}):
        st.push("resourceclaims", WatchEvent("ADDED", bad))
    assert st.ledger.recorded() == before and set(dra.claims) == {good["metadata"]["uid"]}


def _free_t4(st: object) -> int:
    snap = st.view().snapshot  # type: ignore[attr-defined]
    return int(sum(fit(snap, Demand.whole(n)).fits[2] for n in range(1, 5)))


def test_claim_lifecycle_added_changed_freed_and_deleted() -> None:
    before = load("claims/scheduled-ncc-true/before/claim-ncc-2gpu-pcieroot-gpu-kgrk7.json")
    after = load("claims/scheduled-ncc-true/after/claim-ncc-2gpu-pcieroot-gpu-kgrk7.json")
    st, _ = state([])
    assert _free_t4(st) == 4
    st.push("resourceclaims", WatchEvent("ADDED", before))
    assert _free_t4(st) == 4  # not allocated yet: nothing taken
    st.push("resourceclaims", WatchEvent("MODIFIED", after))
    assert _free_t4(st) == 2
    moved = copy.deepcopy(after)
    moved["status"]["allocation"]["devices"]["results"][1]["device"] = "gpu-3"
    st.push("resourceclaims", WatchEvent("MODIFIED", moved))
    assert list(st.ledger.recorded().values()) == [Placement(T4, (1, 3), kind=W)]
    freed = copy.deepcopy(after)
    del freed["status"]["allocation"]
    st.push("resourceclaims", WatchEvent("MODIFIED", freed))
    assert _free_t4(st) == 4 and st.ledger.recorded() == {}
    st.push("resourceclaims", WatchEvent("MODIFIED", after))
    st.push("resourceclaims", WatchEvent("DELETED", after))
    assert _free_t4(st) == 4 and st.ledger.recorded() == {}


def test_pod_deleted_with_and_without_the_resourceclaim_controller() -> None:
    base = "lifecycle/pod-deleted-with-resourceclaim-controller/"
    st, _ = state([load(base + "claim-before-delete.json")])
    assert list(st.ledger.recorded().values()) == [Placement(A100, (0,), kind=W)]
    st.push("resourceclaims", WatchEvent("MODIFIED", load(base + "claim-after.json")))
    assert st.ledger.recorded() == {}  # the controller deallocated it: free
    base = "lifecycle/pod-deleted-without-controller/"
    st, _ = state([load(base + "claim-before-delete.json")])
    st.push("resourceclaims", WatchEvent("MODIFIED", load(base + "claim-after.json")))
    assert list(st.ledger.recorded().values()) == [Placement(A100, (1,), kind=W)]  # DRA still holds it too
    st.push("resourceclaims", WatchEvent("MODIFIED", load(base + "claim-after-kcm-started.json")))
    assert st.ledger.recorded() == {}


def test_claims_seen_before_their_slices_are_booked_when_the_slices_come() -> None:
    st, _ = state([load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json")])
    st.replace("resourceslices", [])
    assert st.ledger.recorded() == {}
    from dra_support import slices

    st.replace("resourceslices", slices())
    assert list(st.ledger.recorded().values()) == [Placement(T4, (3,), kind=W)]


def test_dra_and_device_plugin_pods_never_share_a_device() -> None:
    """A pod gpupack booked on a100 gpu-0 and a claim DRA allocated on gpu-0: only one holds it."""
    claim = load("claims/scheduled-ncc-false/after/claim-dra-1gpu-gpu-lsn2x.json")
    devices = ('{"v":1,"node":"dra-a100-node","kind":"whole","gpus":[0],"mig":[],"memoryMiB":0,"computeMilli":0,'
               '"cpuMilli":0,"hostMemoryMiB":0,"containers":{}}')
    pod = {"metadata": {"uid": "p1", "name": "p1", "namespace": "default", "annotations": {DEVICES: devices}},
           "spec": {"nodeName": A100, "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
           "status": {"phase": "Running"}}
    st, _ = state([claim], [pod])
    snap = st.view().snapshot
    assert fit(snap, Demand.whole(8)).fits.tolist() == [False, False, False]
    assert fit(snap, Demand.whole(7)).fits.tolist()[0]
    assert len(st.ledger.recorded()) == 1 and st.ledger.conflicts >= 1


def test_an_extended_resource_pod_is_counted_once_through_its_claim() -> None:
    pod = load("extended-resource/pod-extres-gpu1.json")
    st, _ = state([load("extended-resource/claim-extres-gpu1-extended-resources-2pzwm.json")], [pod])
    assert st.ledger.foreign.get(H100, 0) == 0
    assert list(st.ledger.recorded().values()) == [Placement(H100, (4,), kind=W)]


def test_a_slice_update_remaps_and_a_slice_removal_frees_the_node() -> None:
    from dra_support import slices

    st, dra = state([load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json")])
    t4 = slices()[2]
    st.push("resourceslices", WatchEvent("DELETED", t4))
    assert not dra.is_dra_node(T4) and st.ledger.recorded() == {}
    assert len(st.node(T4).gpus) == 4  # back to the GFD labels of the Node object  # type: ignore[union-attr]
    st.push("resourceslices", WatchEvent("ADDED", t4))
    assert dra.is_dra_node(T4) and list(st.ledger.recorded().values()) == [Placement(T4, (3,), kind=W)]


def test_junk_slice_and_claim_events_change_nothing() -> None:
    st, dra = state([load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json")])
    before = (st.ledger.recorded(), {n: st.node(n) for n in st.ledger.nodes})
    for kind in ("resourceslices", "resourceclaims"):
        for t in ("ADDED", "MODIFIED", "DELETED"):
            st.push(kind, WatchEvent(t, {"metadata": "junk", "spec": {"driver": "gpu.nvidia.com"}}))
    st.push("resourceslices", WatchEvent("ADDED", {"metadata": {"name": "s"}, "spec": {"driver": "gpu.nvidia.com"}}))
    assert (st.ledger.recorded(), {n: st.node(n) for n in st.ledger.nodes}) == before
    assert st.ready and len(dra.slices) == 3
