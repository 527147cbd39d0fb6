"""Helpers for the extender, state and bind tests: fixture files, pods, and an app over the in-memory API."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.memapi import Faults, MemoryApi

Obj = dict[str, Any]


def load(shared: Path, name: str) -> Any:
    return orjson.loads((shared / "fixtures" / "extender" / name).read_bytes())


def fixture_nodes(shared: Path) -> list[Obj]:
    """The four nodes of the capture cluster (gpu-node-a/b: 8 A100, c: 4 H100 + 14 MIG 1g.10gb, cpu-node-d)."""
    return load(shared, "filter-gpu-memory-ignoredbyscheduler-nodes-request.json")["Nodes"]["items"]


def pod(name: str, limits: dict[str, str] | None = None, *, uid: str | None = None, node: str = "",
        annotations: dict[str, str] | None = None, phase: str = "", containers: int = 1, priority: int = 0) -> Obj:
    spec: Obj = {"containers": [{"name": f"c{i}" if i else "main",
                                 "resources": {"limits": dict(limits or {}),
                                               "requests": {"cpu": "100m", "memory": "128Mi", **(limits or {})}}}
                                for i in range(containers)], "priority": priority}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}",
                         "annotations": dict(annotations or {})},
            "spec": spec, "status": {"phase": phase or ("Running" if node else "Pending")}}


def as_bound(p: Obj, node: str) -> Obj:
    q = copy.deepcopy(p)
    q["spec"]["nodeName"] = node
    q["status"] = {"phase": "Running"}
    return q


def wait_for(cond: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


@contextmanager
def serve(nodes: list[Obj], pods: list[Obj] | None = None, faults: Faults | None = None,
          **settings: Any) -> Iterator[tuple[TestClient, MemoryApi, ClusterState]]:
    """The real app over an in-memory API server, started (watch running) and ready."""
    api = MemoryApi(nodes, pods or [], faults)
    state = ClusterState(settings.pop("assume_ttl_s", 60.0), mix_refresh_s=0.0)
    app = create_app(Settings(**settings), api=api, state=state)
    with TestClient(app) as client:
        wait_for(lambda: state.ready)
        yield client, api, state


def post(client: TestClient, verb: str, doc: Any) -> Any:
    r = client.post(f"/{verb}", content=orjson.dumps(doc), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    return orjson.loads(r.content)


def args(p: Obj, names: list[str], nodes: list[Obj] | None = None) -> Obj:
    """ExtenderArgs as kube-scheduler sends them: NodeNames, or Nodes (then NodeNames is null)."""
    if nodes is None:
        return {"Pod": p, "Nodes": None, "NodeNames": names}
    by = {n["metadata"]["name"]: n for n in nodes}
    return {"Pod": p, "Nodes": {"metadata": {}, "items": [by[n] for n in names]}, "NodeNames": None}


def gpu_cluster(n: int) -> list[Obj]:
    """n nodes of 8 GPUs: A100s at even positions, H100s at odd ones."""
    from binpack import Gpu, Node
    from binpack.topology import nvswitch
    from scheduler.state.standalone import node_object

    nv, pc = nvswitch(8, 12)
    return [node_object(Node(f"n{i:04d}", tuple(Gpu(g, "A100-SXM4-80GB" if i % 2 == 0 else "H100-SXM5-80GB",
                                                       uuid=f"G-{i}-{g}") for g in range(8)),
                             128_000, 1_000_000, nv, pc)) for i in range(n)]
