"""Live mode with DRA: KubernetesApi lists, watches and gets ResourceSlices and ResourceClaims
(resource.k8s.io/v1) from a stand-in API server; the app watches them, filters a claim pod with its claim's
demand and binds it by adopting kube-scheduler's allocation. A cluster without resource.k8s.io/v1 (404)
is "no DRA", said once, and gpupack is ready all the same."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from dra_support import load, nodes, slices
from extender_support import wait_for
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from test_state_kubeapi import _fake_apiserver, _status, apiserver

from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.dra_memapi import DraMemoryApi
from scheduler.state.kubeapi import KubernetesApi
from scheduler.state.memapi import MemoryApi
from scheduler.state.watch import DRA_SOURCES, Watcher, WatchSettings

CLAIM = "claims/scheduled-ncc-true/before/claim-ncc-2gpu-pcieroot-gpu-kgrk7.json"
ALLOCATED = "claims/scheduled-ncc-true/after/claim-ncc-2gpu-pcieroot-gpu-kgrk7.json"
POD = "claims/scheduled-ncc-true/before/pod-ncc-2gpu-pcieroot.json"


def _with_dra(mem: DraMemoryApi) -> FastAPI:
    app = _fake_apiserver(mem)

    def collection(kind: str, request: Request) -> Response:
        q = request.query_params
        if q.get("watch") in ("true", "1"):
            watch = mem.watch_resource_slices if kind == "slices" else mem.watch_resource_claims
            stream = watch(q.get("resourceVersion", "0"), int(q.get("timeoutSeconds", "5")))

            def lines() -> Iterator[bytes]:
                for ev in stream:
                    yield orjson.dumps({"type": ev.type, "object": ev.obj}) + b"\n"

            return StreamingResponse(lines(), media_type="application/json")
        items, rv = mem.list_resource_slices() if kind == "slices" else mem.list_resource_claims()
        return Response(orjson.dumps({"kind": "List", "apiVersion": "resource.k8s.io/v1",
                                      "metadata": {"resourceVersion": rv}, "items": items}),
                        media_type="application/json")

    @app.get("/apis/resource.k8s.io/v1/resourceslices")
    def rs(request: Request) -> Response:
        return collection("slices", request)

    @app.get("/apis/resource.k8s.io/v1/resourceclaims")
    def rc(request: Request) -> Response:
        return collection("claims", request)

    @app.get("/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}")
    def get_claim(ns: str, name: str) -> Response:
        obj = mem.get_resource_claim(ns, name)
        if obj is None:
            return _status(404, "NotFound", f'resourceclaims.resource.k8s.io "{name}" not found')
        return Response(orjson.dumps(obj), media_type="application/json")

    return app




def test_kubernetes_client_dra_calls(tmp_path: Path) -> None:
    mem = DraMemoryApi(nodes(), [], slices(), [load(CLAIM)])
    with apiserver(_with_dra(mem), tmp_path) as cfg:
        api = KubernetesApi(str(cfg), timeout_s=2)
        got, _ = api.list_resource_slices()
        assert sorted(s["spec"]["nodeName"] for s in got) == ["dra-a100-node", "dra-h100-node", "dra-t4-node"]
        claims, rv = api.list_resource_claims()
        assert [c["metadata"]["name"] for c in claims] == ["ncc-2gpu-pcieroot-gpu-kgrk7"]
        mem.put_resource_claim(load(ALLOCATED))
        events = list(api.watch_resource_claims(rv, 1))
        assert [e.type for e in events] == ["MODIFIED"]
        assert events[0].obj["status"]["allocation"]["devices"]["results"][0]["pool"] == "dra-t4-node"
        assert list(api.watch_resource_slices(rv, 1)) == []
        assert api.get_resource_claim("gpupack-dra", "ncc-2gpu-pcieroot-gpu-kgrk7")["status"]["reservedFor"]
        assert api.get_resource_claim("gpupack-dra", "missing") is None


def test_live_mode_watches_claims_filters_and_binds_by_adoption(tmp_path: Path) -> None:
    pod = load(POD)
    mem = DraMemoryApi(nodes(), [pod], slices(), [load(CLAIM)])
    with apiserver(_with_dra(mem), tmp_path) as cfg:
        app = create_app(Settings(kubeconfig=cfg, watch_timeout_s=2, api_timeout_s=2))
        state = app.state.gpupack.state
        with TestClient(app) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200)
            assert client.get("/readyz").json() == {"ready": True, "nodes": True, "pods": True,
                                                    "resourceslices": True, "resourceclaims": True}
            # a claim allocated elsewhere takes T4 gpu-0 and gpu-3: two T4 GPUs are left, on one PCIe root
            other = copy.deepcopy(load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json"))
            other["status"]["allocation"]["devices"]["results"].append(
                {"request": "gpu", "driver": "gpu.nvidia.com", "pool": "dra-t4-node", "device": "gpu-0"})
            mem.put_resource_claim(other)
            wait_for(lambda: sum(len(p.gpus) for p in state.ledger.recorded().values()) == 2)
            body = {"Pod": pod, "Nodes": None, "NodeNames": ["dra-t4-node", "dra-a100-node"]}
            doc = orjson.loads(client.post("/filter", content=orjson.dumps(body)).content)
            assert doc["NodeNames"] == ["dra-t4-node", "dra-a100-node"]
            scores = orjson.loads(client.post("/prioritize", content=orjson.dumps(body)).content)
            assert [s["Host"] for s in scores] == ["dra-t4-node", "dra-a100-node"]
            twin = copy.deepcopy(pod)  # the same ask written for the device plugin: packed the same way
            twin["metadata"].update(uid="twin", name="twin")
            del twin["spec"]["resourceClaims"]
            twin["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "2"},
                                                          "requests": {"cpu": "100m", "memory": "128Mi"}}
            same = orjson.loads(client.post("/prioritize", content=orjson.dumps({**body, "Pod": twin})).content)
            assert scores == same and {s["Score"] for s in scores} != {5}  # not the neutral pass-through
            mem.put_resource_claim(load(ALLOCATED))  # DynamicResources' PreBind
            r = client.post("/bind", content=orjson.dumps({"PodName": "ncc-2gpu-pcieroot", "PodNamespace":
                                                            "gpupack-dra", "PodUID": pod["metadata"]["uid"],
                                                            "Node": "dra-t4-node"}))
            assert orjson.loads(r.content) == {"Error": ""}
            assert mem.get_pod("gpupack-dra", "ncc-2gpu-pcieroot")["spec"]["nodeName"] == "dra-t4-node"
            assert "gpupack.io/devices" not in (mem.get_pod("gpupack-dra", "ncc-2gpu-pcieroot")["metadata"]
                                                .get("annotations") or {})  # the claim is the record
            assert sorted(g for p in state.ledger.recorded().values() for g in p.gpus) == [0, 1, 2, 3]


def test_a_cluster_without_dra_is_said_once_and_ready(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mem = MemoryApi(nodes(), [])
    with apiserver(_fake_apiserver(mem), tmp_path) as cfg:
        api = KubernetesApi(str(cfg), timeout_s=2)
        state = ClusterState()
        state.synced.update(resourceslices=False, resourceclaims=False)
        w = Watcher(api, state, WatchSettings(watch_timeout_s=1, backoff_initial_s=0.01, absent_retry_s=0.05),
                    optional=DRA_SOURCES)
        with caplog.at_level(logging.INFO, logger="gpupack.watch"):
            w.start()
            try:
                wait_for(lambda: state.ready)
                wait_for(lambda: sum(1 for r in caplog.records if "resourceslices" in r.getMessage()) >= 1)
                threading.Event().wait(0.3)  # several retries
            finally:
                w.stop()
        said: list[Any] = [r for r in caplog.records if "not served" in r.getMessage()]
        assert sorted(r.getMessage().split(":")[0] for r in said) == ["resourceclaims", "resourceslices"]
        assert w.relists["resourceslices"] == 0 and state.ready
