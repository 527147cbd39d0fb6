"""Allocate mode (GPUPACK_DRA_MODE=allocate): the KAI run's pods (tests/data/dra/extender/KAI, profile with
DynamicResources disabled) replayed against the real app over the in-memory apiserver, which applies the rules
the real one applied to status writes (test_dra_claim_writes.py). filter keeps only the nodes where the claims
can get devices; bind writes the finalizer, then status with allocation and reservedFor, then the Binding; the
writes are checked field by field against what kube-apiserver 1.36.2 accepted (V17: allocation with timestamp,
V6b: reservedFor); failures leave the claim and the ledger as they were."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from dra_support import load, nodes, slices
from extender_support import post, wait_for
from fastapi.testclient import TestClient

from scheduler.dra.allocate_bind import FINALIZER
from scheduler.dra.state import DraState
from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.dra_memapi import DraMemoryApi

Obj = dict[str, Any]
V17 = load("prealloc/v17-with-allocationtimestamp.json")["request_status"]["allocation"]
V6B = next(c for c in load("kai/validation/status-write-cases.json") if c["case"] == "V6b")["request_status"]
KAI = {n: load(f"extender/KAI/{f}") for n, f in (("kai-1gpu", "01-filter-kai-1gpu.json"),
                                                 ("kai-2gpu", "04-filter-kai-2gpu.json"),
                                                 ("kai-mig-1g10gb", "07-filter-kai-mig-1g10gb.json"))}
CLAIM_FILES = {"kai-1gpu": "kai-1gpu-gpu-6fh8s", "kai-2gpu": "kai-2gpu-gpu-nbws5",
               "kai-mig-1g10gb": "kai-mig-1g10gb-gpu-xszqj"}
SLICE_DEVICES = {(s["spec"]["pool"]["name"], d["name"]): d for s in slices() for d in s["spec"]["devices"]}


def claim(pod: str) -> Obj:
    """The KAI run's claim as the resourceclaim controller made it: no finalizer, no status."""
    c = copy.deepcopy(load(f"kai/objects/claim-{CLAIM_FILES[pod]}.json"))
    c["metadata"].pop("finalizers", None)
    c["metadata"].pop("resourceVersion", None)
    c["status"] = {}
    return c


@contextmanager
def allocating(**kw: Any) -> Iterator[tuple[TestClient, DraMemoryApi, ClusterState, DraState]]:
    api = DraMemoryApi(nodes(), [], slices(), [], **kw)
    state = ClusterState(mix_refresh_s=0.0)
    app = create_app(Settings(dra_mode="allocate"), api=api, state=state)
    with TestClient(app) as client:
        wait_for(lambda: state.ready)
        yield client, api, state, app.state.dra


def _put(api: DraMemoryApi, dra: DraState, pod: Obj, claims: list[Obj]) -> None:
    api.put_pod(pod)
    for c in claims:
        api.put_resource_claim(c)
    want = {c["metadata"]["uid"] for c in claims}
    wait_for(lambda: want <= set(dra.claims))


def _filter(client: TestClient, name: str) -> tuple[list[str], Obj]:
    got = post(client, "filter", KAI[name]["request"])
    return [n["metadata"]["name"] for n in (got.get("Nodes") or {}).get("items") or []], got


def _bind(client: TestClient, pod: Obj, node: str) -> Obj:
    m = pod["metadata"]
    return post(client, "bind", {"PodName": m["name"], "PodNamespace": m["namespace"], "PodUID": m["uid"],
                                 "Node": node})


def _check_writes(api: DraMemoryApi, pod: Obj, c: Obj, node: str, count: int) -> list[str]:
    """gpupack's writes for the claim, field by field against the shapes the apiserver accepted."""
    writes = [(k, b) for k, b in api.claim_writes if b["metadata"]["name"] == c["metadata"]["name"]]
    assert [k for k, _ in writes] == ["claim", "status"]  # finalizer first (KAI's order), then status
    assert writes[0][1]["metadata"]["finalizers"] == [FINALIZER]
    assert writes[1][1]["metadata"]["finalizers"] == [FINALIZER]  # the status write follows the finalizer write
    assert writes[1][1]["metadata"]["resourceVersion"]  # optimistic concurrency: a concurrent change is a 409
    status = writes[1][1]["status"]
    assert set(status) == {"allocation", "reservedFor"}
    alloc = status["allocation"]
    assert set(alloc) == set(V17)  # devices, nodeSelector, allocationTimestamp
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alloc["allocationTimestamp"])
    assert len(alloc["allocationTimestamp"]) == len(V17["allocationTimestamp"])
    want_sel = copy.deepcopy(V17["nodeSelector"])
    want_sel["nodeSelectorTerms"][0]["matchFields"][0]["values"] = [node]
    assert alloc["nodeSelector"] == want_sel
    results = alloc["devices"]["results"]
    assert len(results) == count
    assert all(set(r) == set(V17["devices"]["results"][0]) for r in results)
    req_names = {r["name"] for r in c["spec"]["devices"]["requests"]}
    assert all(r["request"] in req_names and r["driver"] == "gpu.nvidia.com" and r["pool"] == node for r in results)
    assert all((r["pool"], r["device"]) in SLICE_DEVICES for r in results)
    assert len({r["device"] for r in results}) == count  # never the same device twice (the apiserver allows it)
    assert [set(x) for x in status["reservedFor"]] == [set(x) for x in V6B["reservedFor"]]
    assert status["reservedFor"] == [{"resource": "pods", "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}]
    stored = api.get_resource_claim(c["metadata"]["namespace"], c["metadata"]["name"])
    assert stored is not None and stored["status"] == status and stored["metadata"]["finalizers"] == [FINALIZER]
    return [r["device"] for r in results]


def test_the_kai_pods_are_filtered_and_bound_with_the_writes_the_apiserver_accepted() -> None:
    with allocating() as (client, api, state, dra):
        expect = {"kai-1gpu": (["dra-a100-node", "dra-h100-node", "dra-t4-node"], "dra-a100-node", 1),
                  "kai-2gpu": (["dra-a100-node", "dra-t4-node"], "dra-t4-node", 2),  # same pcieRoot: not the H100s
                  "kai-mig-1g10gb": (["dra-h100-node"], "dra-h100-node", 1)}
        for name, (passed, node, count) in expect.items():
            pod, c = KAI[name]["request"]["Pod"], claim(name)
            _put(api, dra, pod, [c])
            got, answer = _filter(client, name)
            assert got == passed, answer.get("FailedNodes")
            assert not answer.get("Error")
            devices = None
            if name == "kai-mig-1g10gb":  # KAI's naive allocator put it on the T4 node with results: []
                assert "cannot be allocated on dra-t4-node" in _bind(client, pod, "dra-t4-node")["Error"]
                assert [k for k, b in api.claim_writes if b["metadata"]["name"] == c["metadata"]["name"]] == []
            assert _bind(client, pod, node) == {"Error": ""}
            devices = _check_writes(api, pod, c, node, count)
            assert api.get_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])["spec"]["nodeName"] == node
            booked = [b for k, b in state.ledger.recorded().items() if k.startswith(f"claim:{c['metadata']['uid']}:")]
            assert sum(len(b.gpus) + len(b.mig) for b in booked) == count and all(b.node == node for b in booked)
            if name == "kai-2gpu":
                roots = {SLICE_DEVICES[(node, d)]["attributes"]["resource.kubernetes.io/pcieRoot"]["string"]
                         for d in devices}
                assert len(roots) == 1
            if name == "kai-mig-1g10gb":
                assert all("-mig-1g10gb-" in d for d in devices)
        # bound again (kube-scheduler's retry after a lost answer): answered, nothing written twice
        n = len(api.claim_writes)
        assert _bind(client, KAI["kai-1gpu"]["request"]["Pod"], "dra-a100-node") == {"Error": ""}
        assert len(api.claim_writes) == n


def _fresh_pod(i: int, claim_name: str) -> Obj:
    pod = copy.deepcopy(KAI["kai-1gpu"]["request"]["Pod"])
    pod["metadata"].update(name=f"p{i}", uid=f"pod-uid-{i}")
    pod["metadata"].pop("resourceVersion", None)
    pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim_name}]
    pod["status"] = {}
    return pod


def _fresh_claim(i: int, spec: Obj) -> Obj:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": f"c{i}", "namespace": "gpupack-dra", "uid": f"claim-uid-{i}"},
            "spec": spec, "status": {}}


def _one_gpu(cls: str = "gpu.nvidia.com", selectors: list[str] | None = None) -> Obj:
    ex: Obj = {"deviceClassName": cls, "allocationMode": "ExactCount", "count": 1}
    if selectors:
        ex["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    return {"devices": {"requests": [{"name": "gpu", "exactly": ex}]}}


@pytest.mark.parametrize(("spec", "why"), [
    (_one_gpu("example.com-gpu"), "device class 'example.com-gpu' is not one gpupack allocates"),
    (_one_gpu(selectors=["device.attributes['gpu.nvidia.com'].productName.lowerAscii() == 'x'"]),
     "cannot be evaluated"),
    ({"devices": {"requests": [{"name": "gpu",
                                "firstAvailable": [{"name": "a", "deviceClassName": "gpu.nvidia.com"}]}]}},
     "firstAvailable is not allocated by gpupack"),
])
def test_claims_gpupack_cannot_allocate_are_refused_everywhere_with_the_reason(spec: Obj, why: str) -> None:
    with allocating() as (client, api, _, dra):
        c = _fresh_claim(0, spec)
        pod = _fresh_pod(0, "c0")
        _put(api, dra, pod, [c])
        req = copy.deepcopy(KAI["kai-1gpu"]["request"])
        req["Pod"] = pod
        got = post(client, "filter", req)
        assert not (got.get("Nodes") or {}).get("items")
        assert all(why in r for r in got["FailedAndUnresolvableNodes"].values()), got
        assert why in _bind(client, pod, "dra-a100-node")["Error"]
        assert api.claim_writes == []
        assert api.get_resource_claim("gpupack-dra", "c0")["status"] == {}


@pytest.mark.parametrize("fault", ["rbac", "binding"])
def test_a_refused_write_leaves_claim_and_ledger_as_they_were(fault: str) -> None:
    with allocating() as (client, api, state, dra):
        c = _fresh_claim(0, _one_gpu())
        pod = _fresh_pod(0, "c0")
        _put(api, dra, pod, [c])
        before = dict(state.ledger.recorded())
        if fault == "rbac":
            api.binding_allowed = False  # no update on resourceclaims/binding: the apiserver answers 422
        else:  # the Binding fails: someone bound the pod meanwhile
            api.put_pod({**pod, "spec": {**pod["spec"], "nodeName": "dra-t4-node"}})
            api.faults.seed = 0
            orig = api.get_pod
            api.get_pod = lambda ns, n: {**orig(ns, n), "spec": pod["spec"]}  # type: ignore[method-assign]
        got = _bind(client, pod, "dra-a100-node")
        assert got["Error"].startswith("gpupack: ")
        stored = api.get_resource_claim("gpupack-dra", "c0")
        assert stored["status"] == {} and not stored["metadata"].get("finalizers")
        wait_for(lambda: dict(state.ledger.recorded()) == before)
