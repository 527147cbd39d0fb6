"""The live path: KubernetesApi (the official client) against a small stand-in API server on 127.0.0.1
that serves list, chunked watch streams (410 included), get, merge-patch and Binding like kube-apiserver,
backed by the in-memory API. Then the whole app in live mode (--kubeconfig) filters and binds a pod."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from extender_support import fixture_nodes, pod, wait_for
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.kubeapi import ApiError, KubernetesApi
from scheduler.state.memapi import MemoryApi
from scheduler.translate.devices import DEVICES


def _status(code: int, reason: str, message: str) -> Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 300 else "Success",
            "message": message, "reason": reason, "code": code}
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


def _fake_apiserver(mem: MemoryApi) -> FastAPI:
    app = FastAPI()

    def collection(kind: str, request: Request) -> Response:
        q = request.query_params
        if q.get("watch") in ("true", "1"):
            stream = (mem.watch_nodes if kind == "nodes" else mem.watch_pods)(
                q.get("resourceVersion", "0"), int(q.get("timeoutSeconds", "5")))

            def lines() -> Iterator[bytes]:
                for ev in stream:
                    yield orjson.dumps({"type": ev.type, "object": ev.obj}) + b"\n"

            return StreamingResponse(lines(), media_type="application/json")
        items, rv = mem.list_nodes() if kind == "nodes" else mem.list_pods()
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or 0) or len(items)
        meta: dict[str, Any] = {"resourceVersion": rv}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return Response(orjson.dumps({"kind": "List", "apiVersion": "v1", "metadata": meta,
                                      "items": items[start:start + limit]}), media_type="application/json")

    @app.get("/api/v1/nodes")
    def nodes(request: Request) -> Response:
        return collection("nodes", request)

    @app.get("/api/v1/pods")
    def pods(request: Request) -> Response:
        return collection("pods", request)

    @app.get("/api/v1/namespaces/{ns}/pods/{name}")
    def get_pod(ns: str, name: str) -> Response:
        obj = mem.get_pod(ns, name)
        if obj is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        return Response(orjson.dumps(obj), media_type="application/json")

    @app.post("/api/v1/namespaces/{ns}/bindings")  # where create_namespaced_binding posts
    async def binding(ns: str, request: Request) -> Response:
        body = orjson.loads(await request.body())
        assert body["kind"] == "Binding" and body["target"]["kind"] == "Node"
        if request.headers.get("authorization") != "Bearer test":  # the kubeconfig's credentials
            return _status(401, "Unauthorized", "Unauthorized")
        try:
            mem.create_binding(ns, body["metadata"]["name"], body["metadata"].get("uid", ""), body["target"]["name"],
                               body["metadata"].get("annotations"))
        except ApiError as e:
            return _status(e.status, e.reason, e.message)
        return _status(201, "", "")  # what kube-apiserver answers: a Status the client cannot decode

    return app


@contextmanager
def apiserver(app: FastAPI, tmp: Path) -> Iterator[Path]:
    """Serve a fake API server app on 127.0.0.1 and yield a kubeconfig pointing at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_for(lambda: server.started)
    cfg = tmp / "kubeconfig"
    cfg.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: test}}}}]
contexts: [{{name: c, context: {{cluster: fake, user: u}}}}]
current-context: c
""")
    try:
        yield cfg
    finally:
        server.should_exit = True
        t.join(10)


def test_kubernetes_client_calls(shared: Path, tmp_path: Path) -> None:
    mem = MemoryApi(fixture_nodes(shared), [pod("a", {"nvidia.com/gpu": "1"})])
    with apiserver(_fake_apiserver(mem), tmp_path) as cfg:
        api = KubernetesApi(str(cfg), timeout_s=2)
        api.page = 3  # the fixture has 4 nodes: the list takes two pages
        items, _ = api.list_nodes()
        assert sorted(n["metadata"]["name"] for n in items) == ["cpu-node-d", "gpu-node-a", "gpu-node-b", "gpu-node-c"]
        pods, prv = api.list_pods()
        assert [p["metadata"]["name"] for p in pods] == ["a"]
        with pytest.raises(ApiError) as e:
            api.create_binding("default", "a", "wrong-uid", "gpu-node-a", {"gpupack.io/x": "1"})
        assert e.value.status == 409 and not e.value.ambiguous
        # one POST binds the pod and writes its annotations, in one event
        api.create_binding("default", "a", "uid-a", "gpu-node-a", {"gpupack.io/x": "1"})
        stored = api.get_pod("default", "a")
        assert stored["spec"]["nodeName"] == "gpu-node-a" and stored["metadata"]["annotations"] == {"gpupack.io/x": "1"}
        events = list(api.watch_pods(prv, 1))
        assert [(e.type, e.obj["spec"]["nodeName"], e.obj["metadata"]["annotations"]) for e in events] == [
            ("MODIFIED", "gpu-node-a", {"gpupack.io/x": "1"})]
        with pytest.raises(ApiError) as e:
            api.create_binding("default", "a", "uid-a", "gpu-node-b")
        assert e.value.status == 409 and 'already assigned to node "gpu-node-a"' in e.value.message
        assert api.get_pod("default", "missing") is None
        mem.compact()
        gone = list(api.watch_pods(prv, 1))
        assert gone[0].type == "ERROR" and gone[0].obj["code"] == 410


def test_live_mode_filters_and_binds(shared: Path, tmp_path: Path) -> None:
    p = pod("live", {"nvidia.com/gpu": "2"})
    mem = MemoryApi(fixture_nodes(shared), [p])
    with apiserver(_fake_apiserver(mem), tmp_path) as cfg:
        # watches last 60 s: only closing them at shutdown lets stop()'s bounded join (5 s) see them end
        app = create_app(Settings(kubeconfig=cfg, watch_timeout_s=60, api_timeout_s=2))
        state = app.state.gpupack.state
        with TestClient(app) as client:
            wait_for(lambda: client.get("/readyz").status_code == 200)
            r = client.post("/filter", content=orjson.dumps({"Pod": p, "Nodes": None,
                                                              "NodeNames": ["gpu-node-a", "cpu-node-d"]}))
            doc = orjson.loads(r.content)
            assert doc["NodeNames"] == ["gpu-node-a"] and "cpu-node-d" in doc["FailedAndUnresolvableNodes"]
            r = client.post("/bind", content=orjson.dumps({"PodName": "live", "PodNamespace": "default",
                                                            "PodUID": "uid-live", "Node": "gpu-node-a"}))
            assert orjson.loads(r.content) == {"Error": ""}
            stored = mem.get_pod("default", "live")
            assert stored["spec"]["nodeName"] == "gpu-node-a" and DEVICES in stored["metadata"]["annotations"]
            wait_for(lambda: "uid-live" in state.ledger.recorded() and not state.assumed())
            watchers = [t for t in threading.enumerate() if t.name.startswith("gpupack-watch-")]
            assert watchers and all(t.is_alive() for t in watchers)
        # shutdown closed the open watches instead of waiting out their 60 s: the threads have ended
        assert not any(t.is_alive() for t in watchers)
