"""Golden tests: gpupack answers every recorded kube-scheduler 1.36 request of tests/data/dra/extender/ the way
the fixtures' README says kube-scheduler needs in observe mode.

Each run is replayed in order against the real app over an in-memory API server holding the fixture nodes and
ResourceSlices; each pod's ResourceClaim is in the state it was in at that moment (not yet allocated at filter,
allocated by DynamicResources' PreBind before bind; pre-allocated in the prealloc runs; never allocated in the
KAI run, whose profile disabled DynamicResources). What kube-scheduler needs:
- filter answers in the request's form and passes only nodes it was sent (a node DRA rejected aborts the cycle:
  README item 3), and passes every node where the pod fits, so a pod DRA found one node for is not refused;
- prioritize scores every node it was sent, 0..10;
- bind posts the Binding once DRA allocated the claim and books the claim's devices; with no allocation
  (no DynamicResources) it refuses with a reason rather than bind a pod whose devices nobody chose.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from dra_support import DRA, load, nodes, slices
from extender_support import post, wait_for
from fastapi.testclient import TestClient

from scheduler.dra.state import DraState
from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.dra_memapi import DraMemoryApi

Obj = dict[str, Any]
SEQ = load("extender/call-sequences.json")
PREALLOCATED = {"prealloc", "prealloc-ts"}


def _all_claims() -> list[Obj]:
    out = []
    for p in sorted(DRA.rglob("*.json")):
        if "claim" in p.name and "timeline" not in p.name:
            doc = load(str(p.relative_to(DRA)))
            if isinstance(doc, dict) and doc.get("metadata", {}).get("uid") and "spec" in doc:
                out.append((p, doc))
    # prefer allocated versions ("after") of a claim when several files hold it
    out.sort(key=lambda pd: (bool((pd[1].get("status") or {}).get("allocation")), "after" in str(pd[0])))
    return [d for _, d in out]


PODS_AFTER: dict[str, Obj] = {}
for _p in sorted(DRA.rglob("pod-*.json")):
    if "/before/" not in str(_p):
        _doc = load(str(_p.relative_to(DRA)))
        PODS_AFTER[_doc["metadata"]["name"]] = _doc

CLAIMS: dict[str, Obj] = {}
for _c in _all_claims():
    CLAIMS[_c["metadata"]["name"]] = _c


def _claim_for(pod: Obj, name: str) -> Obj | None:
    """The claim file behind the pod's claim `name` (by resourceClaimName, or the generated claim's owner)."""
    if name in CLAIMS:
        return CLAIMS[name]
    owner = pod["metadata"]["name"]
    cands = [c for c in CLAIMS.values()
             if any(o.get("name") == owner for o in c["metadata"].get("ownerReferences", []))]
    return cands[-1] if cands else None


def _unallocated(claim: Obj) -> Obj:
    c = copy.deepcopy(claim)
    c["status"] = {}
    return c


@contextmanager
def _app() -> Iterator[tuple[TestClient, DraMemoryApi, ClusterState, DraState]]:
    api = DraMemoryApi(nodes(), [], slices(), [])
    state = ClusterState(mix_refresh_s=0.0)
    app = create_app(Settings(), api=api, state=state)
    with TestClient(app) as client:
        wait_for(lambda: state.ready)
        yield client, api, state, app.state.dra


def _synced(api: DraMemoryApi, dra: DraState) -> None:
    want = {c["metadata"]["uid"]: c["metadata"]["resourceVersion"] for c in api.list_resource_claims()[0]}
    wait_for(lambda: {u: c.resource_version for u, c in dra.claims.items()} == want)


def _claim_names(pod: Obj) -> list[str]:
    made = {s["name"]: s.get("resourceClaimName") for s in pod.get("status", {}).get("resourceClaimStatuses", [])}
    return [rc.get("resourceClaimName") or made.get(rc["name"]) for rc in pod["spec"].get("resourceClaims", [])]


def _answer_nodes(doc: Obj) -> list[str]:
    if doc.get("NodeNames") is not None:
        return list(doc["NodeNames"])
    return [n["metadata"]["name"] for n in (doc.get("Nodes") or {}).get("items") or []]


def _at_bind(rec: Obj, claim: Obj) -> Obj:
    """The claim as kube-scheduler left it just before the extender's bind."""
    c = copy.deepcopy(claim)
    for seen in rec.get("claims_at_bind_time") or []:
        if seen.get("name") == c["metadata"]["name"]:
            c["status"] = copy.deepcopy(seen.get("status") or {})
    return c


@pytest.mark.parametrize("run", sorted(SEQ))
def test_each_recorded_request_is_answered_as_kube_scheduler_needs(run: str) -> None:
    pods: dict[str, Obj] = {}
    with _app() as (client, api, state, dra):
        for step in SEQ[run]:
            rec = load(step["file"])
            req = rec["request"]
            if step["verb"] in ("filter", "prioritize"):
                pod = req["Pod"]
                if pod["metadata"]["name"] not in pods:
                    pods[pod["metadata"]["name"]] = pod
                    api.put_pod(pod)
                    for name in _claim_names(pod):
                        claim = _claim_for(pod, name)
                        assert claim is not None, name
                        api.put_resource_claim(claim if run in PREALLOCATED else _unallocated(claim))
                _synced(api, dra)
                sent = step["nodes_sent"]
                got = post(client, step["verb"], req)
                if step["verb"] == "filter":
                    assert (got["NodeNames"] is not None) == (step["form"] == "NodeNames")
                    passed = _answer_nodes(got)
                    assert set(passed) <= set(sent), "a node kube-scheduler did not send (DRA rejected it)"
                    if run == "KAI":  # DynamicResources off: no DRA filter ran, gpupack's view of the claims decides
                        refused = {**got.get("FailedNodes", {}), **got.get("FailedAndUnresolvableNodes", {})}
                        assert passed and set(passed) | set(refused) == set(sent)
                        assert all(r.startswith("gpupack: ") for r in refused.values()), refused
                    else:
                        assert passed == sent, got.get("FailedNodes")  # it fits everywhere DRA left
                    assert not got.get("Error")
                else:
                    assert [h["Host"] for h in got] == sent
                    assert all(0 <= h["Score"] <= 10 for h in got)
                continue
            pod = pods[step["pod"]]
            bound_claims = []
            after = PODS_AFTER.get(step["pod"])
            if after is not None:  # the claim statuses the controller / PreBind wrote on the pod by now
                status = {k: v for k, v in after["status"].items() if k != "conditions"}
                pod = {**pod, "status": {**pod["status"], **status}}
                api.put_pod(pod)
            if run == "extres-managed":  # kube-scheduler made this claim in PreBind
                bound_claims.append(load("extended-resource/claim-extres-gpu1-extended-resources-2pzwm.json"))
            for name in _claim_names(pod):
                claim = _claim_for(pod, name)
                assert claim is not None
                bound_claims.append(claim if not rec.get("claims_at_bind_time") else _at_bind(rec, claim))
            for c in bound_claims:
                api.put_resource_claim(c)
            got = post(client, "bind", req)
            node = req["Node"]
            allocated = [c for c in bound_claims if (c.get("status") or {}).get("allocation")]
            if bound_claims and not allocated:  # the KAI profile: DynamicResources off, nobody allocated
                assert "DynamicResources" in got["Error"] and "not allocated" in got["Error"]
                assert not api.get_pod(req["PodNamespace"], req["PodName"])["spec"].get("nodeName")
                continue
            assert got == {"Error": ""}
            assert api.get_pod(req["PodNamespace"], req["PodName"])["spec"]["nodeName"] == node
            booked = state.ledger.recorded()
            for c in allocated:
                keys = [k for k in booked if k.startswith(f"claim:{c['metadata']['uid']}:")]
                results = c["status"]["allocation"]["devices"]["results"]
                known = [r for r in results if r["device"] != "gpu-99"]  # prealloc's ghost device is on no slice
                assert sum(len(booked[k].gpus) + len(booked[k].mig) for k in keys) == len(known)
                assert all(booked[k].node == node for k in keys)


def test_a_bind_whose_claim_is_allocated_on_another_node_is_refused() -> None:
    rec = load("extender/filter-only-h100/01-filter-flt-only-h100.json")
    pod = rec["request"]["Pod"]
    claim = load("filter-answers/only-h100-node/claim-flt-only-h100-gpu-p42jv.json")
    with _app() as (client, api, _, dra):
        api.put_pod(pod)
        api.put_resource_claim(claim)
        _synced(api, dra)
        post(client, "filter", rec["request"])
        got = post(client, "bind", {"PodName": pod["metadata"]["name"], "PodNamespace": "gpupack-dra",
                                     "PodUID": pod["metadata"]["uid"], "Node": "dra-a100-node"})
        assert "allocated on dra-h100-node, not dra-a100-node" in got["Error"]


def test_a_full_node_is_refused_with_a_reason_even_if_sent() -> None:
    """gpupack's own ledger may know more than DRA (a device-plugin pod gpupack bound): the node fails with
    a reason; kube-scheduler merges it with DRA's (README item 3)."""
    rec = load("extender/A/07-filter-dra-h100-cel.json")
    taken = [load(f"claims/scheduled-ncc-false/after/claim-dra-{n}.json") for n in ("h100-cel-gpu-5wlvz",)]
    with _app() as (client, api, _, dra):
        pod = rec["request"]["Pod"]
        api.put_pod(pod)
        api.put_resource_claim(_unallocated(CLAIMS[_claim_names(pod)[0]]))
        for i in range(6):  # all six full H100 GPUs held by other claims (the other two are in MIG mode)
            c = copy.deepcopy(taken[0])
            c["metadata"].update(uid=f"other-{i}", name=f"other-{i}")
            c["status"]["allocation"]["devices"]["results"][0]["device"] = f"gpu-{i}"
            api.put_resource_claim(c)
        _synced(api, dra)
        got = post(client, "filter", rec["request"])
        assert _answer_nodes(got) == [] and set(got["FailedNodes"]) == {"dra-h100-node"}
        assert got["FailedNodes"]["dra-h100-node"].startswith("gpupack: ")


def test_every_recorded_call_is_replayed() -> None:
    files = {s["file"] for run in SEQ.values() for s in run}
    on_disk = {str(p.relative_to(DRA)) for p in (DRA / "extender").rglob("[0-9]*.json")}
    assert files == on_disk


def test_preempt_counts_the_devices_a_victims_claims_hold() -> None:
    """On a T4 node full of DRA pods, evicting one of them frees its claim (the resourceclaim controller
    deallocates it), so gpupack keeps the node and names the fewest victims; a claim shared with a pod that
    stays frees nothing."""
    rec = load("extender/filter-only-t4/01-filter-flt-only-t4.json")
    pod = rec["request"]["Pod"]
    one = load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json")  # gpu-3, pod 1a246af0
    two = load("claims/scheduled-ncc-true/after/claim-ncc-2gpu-pcieroot-gpu-kgrk7.json")  # gpu-1, gpu-2
    rest = copy.deepcopy(one)  # gpu-0, shared by two pods
    rest["metadata"].update(uid="shared", name="shared")
    rest["status"]["allocation"]["devices"]["results"][0]["device"] = "gpu-0"
    rest["status"]["reservedFor"] = [{"resource": "pods", "name": "a", "uid": "pod-a"},
                                     {"resource": "pods", "name": "b", "uid": "pod-b"}]
    uid_one, uid_two = one["status"]["reservedFor"][0]["uid"], two["status"]["reservedFor"][0]["uid"]
    with _app() as (client, api, _, dra):
        api.put_pod(pod)
        api.put_resource_claim(_unallocated(CLAIMS[_claim_names(pod)[0]]))
        for c in (one, two, rest):
            api.put_resource_claim(c)
        _synced(api, dra)
        assert _answer_nodes(post(client, "filter", {**rec["request"], "Nodes": {
            "metadata": {}, "items": [n for n in nodes() if n["metadata"]["name"] == "dra-t4-node"]}})) == []

        def preempt(victims: list[str]) -> Obj:
            return post(client, "preempt", {"Pod": pod, "NodeNameToMetaVictims": {"dra-t4-node": {
                "Pods": [{"UID": u} for u in victims], "NumPDBViolations": 0}}})["NodeNameToMetaVictims"]

        assert preempt([uid_two, uid_one]) == {"dra-t4-node": {"Pods": [{"UID": uid_two}], "NumPDBViolations": 0}}
        assert preempt(["pod-a"]) == {}  # its claim stays reserved for pod-b: evicting pod-a frees nothing


def test_bind_by_adoption_drops_devices_gpupack_had_reserved_for_the_pod() -> None:
    """A reservation (a pod group's plan) for a claim pod is released at bind: the claim holds the real devices."""
    from binpack import Placement

    rec = load("extender/filter-only-h100/01-filter-flt-only-h100.json")
    pod = rec["request"]["Pod"]
    claim = load("filter-answers/only-h100-node/claim-flt-only-h100-gpu-p42jv.json")  # gpu-3
    with _app() as (client, api, state, dra):
        api.put_pod(pod)
        api.put_resource_claim(claim)
        _synced(api, dra)
        post(client, "filter", rec["request"])
        state.assume(pod["metadata"]["uid"], Placement("dra-h100-node", (0,)), None)
        got = post(client, "bind", {"PodName": pod["metadata"]["name"], "PodNamespace": "gpupack-dra",
                                     "PodUID": pod["metadata"]["uid"], "Node": "dra-h100-node"})
        assert got == {"Error": ""}
        assert sorted(p.gpus for p in state.ledger.recorded().values()) == [(3,)] and not state.assumed()
