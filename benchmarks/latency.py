"""`gpupack bench latency`: the extender's latency under load, as kube-scheduler would see it.

A real uvicorn server (the extender app, standalone mode) runs in a child process on 127.0.0.1 with
a synthetic cluster (default 5,000 nodes x 8 A100-80GB, NVSwitch, about half the GPUs already
booked by recorded pods); this process is the scheduler. kube-scheduler's scheduling cycle is
sequential, so one connection sends, pod after pod: filter with every node name (NodeNames mode,
percentageOfNodesToScore 100), then prioritize with the names that passed. Phases:
  steady   filter + prioritize, the cluster unchanged between pods (caches warm per demand shape)
  binding  filter + prioritize + bind, so every pod sees a new snapshot (nothing cached across pods)
  nodes    filter + prioritize in Nodes mode with 500 full Node objects per request
Reported: p50/p99 per verb (client side, HTTP included), sustained pods/s, and the server's RSS.
Targets: p99 <= 5 ms per verb, >= 300 pods/s on 2 cores.

    python -m benchmarks.latency [--nodes 5000] [--pods 400] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import multiprocessing as mp
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import typer

TARGET_P99_MS = 5.0
TARGET_PODS_S = 300.0
SHAPES: list[tuple[dict[str, str], dict[str, str]]] = [
    ({"nvidia.com/gpu": "1"}, {}),
    ({"nvidia.com/gpu": "2"}, {}),
    ({"nvidia.com/gpu": "4"}, {"gpupack.io/topology": "nvlink"}),
    ({"gpupack.io/gpu-memory": "20000", "gpupack.io/gpu-compute": "25"}, {}),
    ({"nvidia.com/gpu": "8"}, {"gpupack.io/gpu-model": "A100-SXM4-80GB"}),
]
_MANAGED = [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-11-23T17:29:05Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {
                 f'k:{{"type":"{t}"}}': {".": {}, "f:lastHeartbeatTime": {}, "f:lastTransitionTime": {},
                                          "f:message": {}, "f:reason": {}, "f:status": {}, "f:type": {}}
                 for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")}}}}]


def _pod(i: int, limits: dict[str, str], ann: dict[str, str], node: str = "") -> dict[str, Any]:
    """A pod shaped like the scheduler's cached copy (defaults, tolerations, service-account volume)."""
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.invalid/cuda:12.4-runtime", "command": ["sleep", "inf"],
                        "resources": {"limits": limits, "requests": {"cpu": "100m", "memory": "128Mi", **limits}},
                        "volumeMounts": [{"name": "kube-api-access", "readOnly": True,
                                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
        "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
        "tolerations": [{"key": k, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                        for k in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")],
        "schedulerName": "gpupack-scheduler", "priority": 0, "restartPolicy": "Always",
    }
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": f"bench-{i}", "namespace": "bench", "uid": f"bench-uid-{i}",
                         "resourceVersion": str(i + 1), "annotations": ann, "labels": {"app": "bench"}},
            "spec": spec, "status": {"phase": "Running" if node else "Pending"}}


def build_cluster(n_nodes: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Node objects, and bound pods with devices records filling about half of the GPUs."""
    from binpack import Gpu, Node, Placement
    from binpack.topology import nvswitch
    from scheduler.state.standalone import node_object
    from scheduler.translate.devices import annotations_for
    from scheduler.translate.pod import read_pod

    rng = np.random.default_rng(seed)
    nv, pc = nvswitch(8, 12)
    nodes: list[dict[str, Any]] = []
    pods: list[dict[str, Any]] = []
    for i in range(n_nodes):
        node = Node(f"node-{i:05d}", tuple(Gpu(g, "A100-SXM4-80GB", uuid=f"GPU-{i}-{g}") for g in range(8)),
                    128_000, 1_000_000, nv, pc)
        nodes.append(node_object(node))
        used = int(rng.integers(0, 7))
        if used:
            p = _pod(len(pods), {"nvidia.com/gpu": str(used)}, {}, node.name)
            pl = Placement(node.name, gpus=tuple(range(used)), cpu_milli=100, host_memory_mib=128)
            p["metadata"]["annotations"] = annotations_for(read_pod(p), pl, node)
            pods.append(p)
        if used < 7 and rng.random() < 0.5:
            p = _pod(len(pods), {"gpupack.io/gpu-memory": "30000", "gpupack.io/gpu-compute": "40"}, {}, node.name)
            pl = Placement(node.name, gpus=(7,), memory_mib=30000, compute_milli=400, cpu_milli=100,
                           host_memory_mib=128, kind=read_pod(p).demand.kind)
            p["metadata"]["annotations"] = annotations_for(read_pod(p), pl, node)
            pods.append(p)
    return nodes, pods


def _serve(cluster: str, port: int, shortlist: int = 0) -> None:
    import gc
    import logging

    import uvicorn

    from scheduler.extender.app import create_app
    from scheduler.settings import Settings

    logging.disable(logging.WARNING)
    gc.set_threshold(10_000, 20, 50)  # as `gpupack serve` does
    app = create_app(Settings(cluster=Path(cluster), port=port, mix_refresh_s=5.0, metrics_port=0,
                              shortlist=shortlist))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes) -> tuple[Any, float, float]:
        """The answer, the time until it was read (HTTP included), and the server's own time."""
        t0 = time.perf_counter()
        self.conn.request("POST", path, body, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"{path}: HTTP {r.status}: {data[:200]!r}")
        timing = r.getheader("server-timing") or "x;dur=nan"
        return orjson.loads(data), dt, float(timing.rpartition("dur=")[2]) / 1e3

    def get(self, path: str) -> int:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        r.read()
        return r.status


def _phase(client: _Client, names: list[str], n_pods: int, start: int, bind: bool,
           nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    times: dict[str, list[float]] = {"filter": [], "prioritize": [], "bind": []}
    inside: dict[str, list[float]] = {"filter": [], "prioritize": [], "bind": []}
    t0 = time.perf_counter()
    for k in range(n_pods):
        i = start + k
        limits, ann = SHAPES[i % len(SHAPES)]
        pod = _pod(1_000_000 + i, limits, ann)
        if nodes is None:
            args = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
        else:
            args = orjson.dumps({"Pod": pod, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None})
        res, dt, srv = client.post("/filter", args)
        times["filter"].append(dt)
        inside["filter"].append(srv)
        passed = res["NodeNames"] if nodes is None else [n["metadata"]["name"] for n in res["Nodes"]["items"]]
        if len(passed) > 1:  # kube-scheduler skips prioritize when a single node is left
            if nodes is None:
                body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": passed})
            else:
                keep = set(passed)
                body = orjson.dumps({"Pod": pod, "Nodes": {"metadata": {}, "items": [
                    n for n in nodes if n["metadata"]["name"] in keep]}, "NodeNames": None})
            scores, dt, srv = client.post("/prioritize", body)
            times["prioritize"].append(dt)
            inside["prioritize"].append(srv)
            best = max(scores, key=lambda s: s["Score"])["Host"]
        else:
            best = passed[0] if passed else ""
        if bind and best:
            meta = pod["metadata"]
            res, dt, srv = client.post("/bind", orjson.dumps({"PodName": meta["name"], "PodNamespace": "bench",
                                                             "PodUID": meta["uid"], "Node": best}))
            if res["Error"]:
                raise RuntimeError(f"bind: {res['Error']}")
            times["bind"].append(dt)
            inside["bind"].append(srv)
    wall = time.perf_counter() - t0
    # pods/s three ways: this Python client's wall clock (it builds and reads every body too), the
    # extender's share of a scheduling cycle as the scheduler sees it (filter + prioritize over HTTP),
    # and the time spent inside gpupack's handlers alone
    cycle = sum(times["filter"]) + sum(times["prioritize"])
    handler = sum(inside["filter"]) + sum(inside["prioritize"])
    out: dict[str, Any] = {"pods": n_pods, "pods_per_s": round(n_pods / wall, 1),
                           "pods_per_s_http": round(n_pods / cycle, 1),
                           "pods_per_s_handler": round(n_pods / handler, 1)}
    for verb, ts in times.items():
        if ts:
            a, b = np.asarray(ts) * 1e3, np.asarray(inside[verb]) * 1e3
            out[verb] = {"p50_ms": round(float(np.percentile(a, 50)), 3),
                         "p99_ms": round(float(np.percentile(a, 99)), 3),
                         "handler_p50_ms": round(float(np.percentile(b, 50)), 3),
                         "handler_p99_ms": round(float(np.percentile(b, 99)), 3), "n": len(ts)}
    return out


def run_latency(n_nodes: int = 5000, n_pods: int = 400, n_nodes_mode: int = 500, seed: int = 0,
                port: int = 0, shortlist: int = 0) -> dict[str, Any]:
    """Start the server on 127.0.0.1:`port` (0: a free one), drive the three phases, return the figures."""
    nodes, pods = build_cluster(n_nodes, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.json"
        path.write_bytes(orjson.dumps({"nodes": nodes, "pods": pods}))
        port = port or _free_port()
        proc = mp.get_context("spawn").Process(target=_serve, args=(str(path), port, shortlist), daemon=True)
        t_start = time.perf_counter()
        proc.start()
        try:
            client = _wait_ready(port, proc)
            ready_s = time.perf_counter() - t_start
            names = [n["metadata"]["name"] for n in nodes]
            rng = np.random.default_rng(seed)
            full = [{**nodes[i], "metadata": {**nodes[i]["metadata"], "managedFields": _MANAGED,
                                              "uid": f"node-uid-{i}", "resourceVersion": "1"}}
                    for i in sorted(rng.choice(len(nodes), n_nodes_mode, replace=False).tolist())]
            _phase(client, names, len(SHAPES) * 4, 0, False)  # warm up: imports, first fits
            result: dict[str, Any] = {
                "cluster": {"nodes": n_nodes, "gpus": 8 * n_nodes, "bound_pods": len(pods), "shortlist": shortlist,
                            "ready_s": round(ready_s, 1), "server_rss_mib": round(_rss_mib(proc.pid or 0), 1)},
                "steady": _phase(client, names, n_pods, 100, False),
                "binding": _phase(client, names, n_pods, 10_000, True),
                "nodes_mode": {"nodes_per_request": n_nodes_mode, "request_kib": round(
                    len(orjson.dumps({"Nodes": {"items": full}})) / 1024, 1),
                    **_phase(client, names, max(n_pods // 2, 20), 20_000, False, full)},
            }
            result["cluster"]["server_rss_mib_after"] = round(_rss_mib(proc.pid or 0), 1)
        finally:
            proc.terminate()
            proc.join(10)
    result["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    result["solver_only"] = _solver_only(n_nodes)
    return result


def _wait_ready(port: int, proc: Any, timeout_s: float = 300.0) -> _Client:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError("the extender server exited during start-up")
        try:
            client = _Client(port)
            if client.get("/readyz") == 200:
                return client
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the extender server did not become ready")


def _solver_only(n_nodes: int) -> Any:
    """benchmarks.solver_latency's figures, when that module exists (another part of gpupack)."""
    try:
        mod = importlib.import_module("benchmarks.solver_latency")
    except ModuleNotFoundError:
        return None
    fn = getattr(mod, "run_solver_latency", None)
    if fn is None:
        return None
    return fn(nodes=n_nodes)


def register(bench: typer.Typer) -> None:
    @bench.command("latency")
    def latency(nodes: int = typer.Option(5000, help="Nodes in the synthetic cluster (8 GPUs each)"),
                pods: int = typer.Option(400, help="Pods per phase"),
                nodes_mode: int = typer.Option(500, help="Full Node objects per Nodes-mode request"),
                port: int = typer.Option(0, min=0, max=65535, help="Port of the extender on 127.0.0.1 (0: a free one)"),
                shortlist: int = typer.Option(0, min=0, help="The server's --shortlist (0, the default here: "
                                              "every fitting node passes, the largest answers)"),
                json: bool = typer.Option(False, "--json", help="Print the figures as JSON")) -> None:
        """Extender latency over HTTP: filter/prioritize p50/p99, pods/s, RSS (targets: p99 <= 5 ms, >= 300 pods/s)."""
        from rich.console import Console

        from benchmarks.latency_tables import extender_tables

        r = run_latency(nodes, pods, nodes_mode, port=port, shortlist=shortlist)
        if json:
            typer.echo(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
        else:
            Console().print(extender_tables(r, TARGET_P99_MS, TARGET_PODS_S))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--pods", type=int, default=400)
    ap.add_argument("--nodes-mode", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run_latency(a.nodes, a.pods, a.nodes_mode)
    if a.json:
        print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.console import Console

        from benchmarks.latency_tables import extender_tables

        Console().print(extender_tables(r, TARGET_P99_MS, TARGET_PODS_S))


if __name__ == "__main__":
    main()
