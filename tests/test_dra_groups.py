"""Pod groups in allocate mode (scheduler/dra/group_alloc.py): the first member's bind allocates the claims of
every reserved member, each on its reserved node, all of them or none; a failure part-way reverts every claim
written for the group; racing groups and single pods never allocate a device twice (hypothesis, with
binpack.validate as the oracle on the apiserver's claims and on gpupack's ledger)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from dra_support import nodes, slices
from extender_support import post, wait_for
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dra_allocate import KAI
from test_dra_allocate_race import _split

from binpack import validate
from scheduler.dra.allocate_bind import FINALIZER
from scheduler.dra.claims import placements, read_claim
from scheduler.dra.state import DraState
from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.dra_memapi import DraMemoryApi
from scheduler.state.kubeapi import ApiError
from scheduler.state.memapi import Faults

Obj = dict[str, Any]
NS = "gpupack-dra"
NODES = ["dra-a100-node", "dra-h100-node", "dra-t4-node"]
POOL_NODE = {s["spec"]["pool"]["name"]: s["spec"]["nodeName"] for s in slices()}


def _pod(name: str, group: str = "", size: int = 0) -> Obj:
    ann = {"gpupack.io/pod-group": group, "gpupack.io/pod-group-min": str(size)} if group else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "annotations": ann,
                         "creationTimestamp": "2026-12-06T00:00:00Z"},
            "spec": {"schedulerName": "gpupack-scheduler",
                     "resourceClaims": [{"name": "gpu", "resourceClaimName": f"c-{name}"}],
                     "containers": [{"name": "c", "image": "x", "resources": {"claims": [{"name": "gpu"}]}}]},
            "status": {"phase": "Pending"}}


def _claim(name: str, gpus: int) -> Obj:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": f"c-{name}", "namespace": NS, "uid": f"claim-{name}"},
            "spec": {"devices": {"requests": [{"name": "gpus", "exactly": {
                "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": gpus}}]}},
            "status": {}}


@contextmanager
def _app(pods: list[Obj], claims: list[Obj],
         faults: Faults | None = None) -> Iterator[tuple[TestClient, DraMemoryApi, ClusterState, DraState]]:
    api = DraMemoryApi(nodes(), copy.deepcopy(pods), slices(), copy.deepcopy(claims), faults=faults)
    state = ClusterState(mix_refresh_s=0.0)
    app = create_app(Settings(dra_mode="allocate"), api=api, state=state)
    with TestClient(app) as client:
        want = {c["metadata"]["uid"] for c in claims}
        wait_for(lambda: state.ready and want <= set(app.state.dra.claims)
                 and all(state.pod(p["metadata"]["uid"]) is not None for p in pods))
        yield client, api, state, app.state.dra


def _filter(client: TestClient, pod: Obj) -> list[str]:
    req = copy.deepcopy(KAI["kai-1gpu"]["request"])
    req["Pod"] = pod
    got = post(client, "filter", req)
    return [n["metadata"]["name"] for n in (got.get("Nodes") or {}).get("items") or []]


def _bind(client: TestClient, pod: Obj, node: str) -> str:
    m = pod["metadata"]
    out: str = post(client, "bind", {"PodName": m["name"], "PodNamespace": NS, "PodUID": m["uid"],
                                     "Node": node})["Error"]
    return out


def _stored(api: DraMemoryApi, name: str) -> Obj:
    c = api.get_resource_claim(NS, f"c-{name}")
    assert c is not None
    return c


def test_the_first_members_bind_allocates_every_members_claims_on_its_reserved_node() -> None:
    pods = [_pod("w0", "job", 2), _pod("w1", "job", 2)]
    with _app(pods, [_claim("w0", 4), _claim("w1", 4)]) as (client, api, state, dra):
        assert _filter(client, pods[0]) and _filter(client, pods[1])
        where = {p["metadata"]["name"]: _filter(client, p) for p in pods}  # each member pinned to its node
        assert all(len(v) == 1 for v in where.values()), where
        reserved = {n: state.booking(f"uid-{n}") for n in where}
        assert _bind(client, pods[0], where["w0"][0]) == ""
        for n in ("w0", "w1"):  # both claims written, each reserved for its own member, on its planned node
            c = _stored(api, n)
            alloc = c["status"]["allocation"]
            assert c["metadata"]["finalizers"] == [FINALIZER]
            assert c["status"]["reservedFor"] == [{"resource": "pods", "name": n, "uid": f"uid-{n}"}]
            assert alloc["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"] == where[n]
            got = placements(read_claim(c), POOL_NODE.get, dra.inventories)[0]
            b = reserved[n]
            assert b is not None and sorted(g for p in got for g in p.gpus) == sorted(b.placement.gpus)
        assert api.get_pod(NS, "w1")["spec"].get("nodeName") is None  # only the binding member is bound
        writes = len(api.claim_writes)
        assert _bind(client, pods[1], where["w1"][0]) == ""  # the second member: nothing left to write
        assert len(api.claim_writes) == writes
        assert api.get_pod(NS, "w1")["spec"]["nodeName"] == where["w1"][0]


def test_a_member_bound_elsewhere_than_its_reservation_is_refused_and_nothing_is_written() -> None:
    pods = [_pod("w0", "job", 2), _pod("w1", "job", 2)]
    with _app(pods, [_claim("w0", 2), _claim("w1", 2)]) as (client, api, _, _):
        _filter(client, pods[0])
        node = _filter(client, pods[0])[0]
        other = next(n for n in NODES if n != node)
        assert "reserved on" in _bind(client, pods[0], other)
        assert api.claim_writes == []


def test_a_failure_part_way_reverts_every_claim_of_the_group() -> None:
    pods = [_pod("w0", "job", 3), _pod("w1", "job", 3), _pod("w2", "job", 3)]
    with _app(pods, [_claim(p["metadata"]["name"], 2) for p in pods]) as (client, api, state, _):
        _filter(client, pods[0])
        node = _filter(client, pods[0])[0]
        before = {k: v for k, v in state.ledger.recorded().items() if k.startswith("claim:")}
        real = api.update_resource_claim_status
        seen: list[str] = []

        def fail_third(ns: str, name: str, obj: Obj) -> Obj:
            seen.append(name)
            if len(seen) == 3:  # the third claim's status write: the first two are written already
                raise ApiError(500, "etcdserver: request timed out")
            return real(ns, name, obj)

        api.update_resource_claim_status = fail_third  # type: ignore[method-assign]
        err = _bind(client, pods[0], node)
        assert "request timed out" in err
        api.update_resource_claim_status = real  # type: ignore[method-assign]
        for p in pods:
            c = _stored(api, p["metadata"]["name"])
            assert not c.get("status") and not c["metadata"].get("finalizers"), c
        assert len(set(seen)) == 3  # three claims written, the third refused
        wait_for(lambda: {k: v for k, v in state.ledger.recorded().items() if k.startswith("claim:")} == before)
        assert all(state.pod(p["metadata"]["uid"]).node == "" for p in pods)  # type: ignore[union-attr]
        assert api.get_pod(NS, "w0")["spec"].get("nodeName") is None


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.lists(st.tuples(st.integers(2, 3), st.integers(1, 4)), min_size=1, max_size=2),
       singles=st.lists(st.integers(1, 4), max_size=3),
       fail=st.floats(0.0, 0.3), seed=st.integers(0, 2**16))
def test_racing_groups_and_pods_never_allocate_a_device_twice(groups: list[tuple[int, int]], singles: list[int],
                                                               fail: float, seed: int) -> None:
    pods, claims = [], []
    for g, (size, gpus) in enumerate(groups):
        for i in range(size):
            pods.append(_pod(f"g{g}-{i}", f"g{g}", size))
            claims.append(_claim(f"g{g}-{i}", gpus))
    for i, gpus in enumerate(singles):
        pods.append(_pod(f"s{i}"))
        claims.append(_claim(f"s{i}", gpus))
    faults = Faults(conflict=fail / 2, server_error=fail / 2, seed=seed, ops=("claim", "claim-status", "bind"))
    with _app(pods, claims, faults) as (client, api, state, dra):
        base = state.view().snapshot
        chosen = {}
        for p in pods:  # filter every pod twice: the first plans its group, the second sees the reservation
            _filter(client, p)
            got = _filter(client, p)
            if got:
                chosen[p["metadata"]["name"]] = got[0]

        def bind(p: Obj) -> str:
            n = p["metadata"]["name"]
            return _bind(client, p, chosen[n]) if n in chosen else "no node"

        with ThreadPoolExecutor(max_workers=4) as ex:
            list(ex.map(bind, pods))
        held = [read_claim(c) for c in api.list_resource_claims()[0]]
        devices = [(r.pool, r.device) for c in held if c.allocated for r in c.results]
        assert len(devices) == len(set(devices))  # the apiserver: no device in two claims, nor twice in one
        placed = [x for c in held if c.allocated
                  for p in placements(c, POOL_NODE.get, dra.inventories)[0] for x in _split(p)]
        assert validate(base, placed) == []
        booked = [x for k, p in state.ledger.recorded().items() if k.startswith("claim:") for x in _split(p)]
        assert validate(base, booked) == []
        for g, (size, _) in enumerate(groups):  # a group's claims: all allocated or none, unless a bind failed
            got = [c.allocated for c in held if c.name.startswith(f"c-g{g}-")]
            assert len(got) == size
            if not fail:
                assert all(got) or not any(got), (g, got)


def test_a_member_whose_claims_cannot_be_allocated_refuses_the_whole_group_and_nothing_is_written() -> None:
    """The other member's claim asks a selector no device of its reserved node meets (the claim changed after
    the group was planned): the first member's bind writes nothing at all, its own claim included."""
    pods = [_pod("w0", "job", 2), _pod("w1", "job", 2)]
    with _app(pods, [_claim("w0", 2), _claim("w1", 2)]) as (client, api, _, _):
        _filter(client, pods[0])
        node = _filter(client, pods[0])[0]
        changed = copy.deepcopy(api.get_resource_claim(NS, "c-w1"))
        changed["spec"]["devices"]["requests"][0]["exactly"]["selectors"] = [
            {"cel": {"expression": "device.attributes['gpu.nvidia.com'].productName == 'no such GPU'"}}]
        api.put_resource_claim(changed)
        err = _bind(client, pods[0], node)  # bind reads every member's claims fresh from the apiserver
        assert "resourceclaim gpupack-dra/c-w1 cannot be allocated" in err, err
        assert api.claim_writes == []
        assert api.get_pod(NS, "w0")["spec"].get("nodeName") is None
