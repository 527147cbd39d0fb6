"""Memory of the extender's per-pod caches: RSS after filter has been sent 4,096 pods that each carry
the most annotations the API server allows (256 KiB in all), the worst case for any cache that keeps
what it was sent.

Each pod goes through the real app (the filter route, called as ASGI in this process, no sockets), so
the figure covers everything the verbs keep: the parsed-pod cache, the engine's node-list and answer
caches, the learned mix. Pod bodies are built one at a time and dropped, so the growth is what the
extender holds. Run once per mode: `live` keeps only what the verbs need; `demo` also keeps raw pods
for bind to adopt, bounded by bytes (cluster.RAW_CACHE_BYTES).

    python -m benchmarks.cache_rss [--pods 4096] [--annotation-kib 256] [--mode live|demo] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from typing import Any

import orjson

from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.memapi import MemoryApi
from scheduler.state.standalone import demo_objects


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def pod_body(i: int, annotation_bytes: int, names: list[str]) -> bytes:
    """ExtenderArgs for one share pod whose annotations total `annotation_bytes` (key + value)."""
    key = "example.com/blob"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"p{i}", "namespace": "bench", "uid": f"uid-{i:06d}", "resourceVersion": "1",
                        "annotations": {key: "x" * (annotation_bytes - len(key))}},
           "spec": {"containers": [{"name": "main", "resources": {
               "limits": {"gpupack.io/gpu-memory": "10000", "gpupack.io/gpu-compute": "25"},
               "requests": {"cpu": "1", "memory": "1Gi"}}}]}}
    return orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})


async def _post(app: Any, path: str, body: bytes) -> int:
    """One POST through the ASGI app; its status."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # never asked for again once the body was read
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8888)}
    await app(scope, receive, send)
    return status


def run(pods: int, annotation_kib: int, mode: str) -> dict[str, Any]:
    nodes = demo_objects()
    names = [n["metadata"]["name"] for n in nodes]
    state = ClusterState(mix_refresh_s=0.0, keep_raw=mode == "demo")
    app = create_app(Settings(), api=MemoryApi(nodes, []), state=state)
    state.replace("nodes", nodes)
    state.replace("pods", [])

    async def go() -> tuple[float, float]:
        assert await _post(app, "/filter", pod_body(-1, 1024, names)) == 200  # warm up imports and caches
        gc.collect()
        before = rss_mib()
        for i in range(pods):
            status = await _post(app, "/filter", pod_body(i, annotation_kib * 1024, names))
            if status != 200:
                raise RuntimeError(f"filter answered {status} for pod {i}")
        gc.collect()
        return before, rss_mib()

    before, after = asyncio.run(go())
    return {"pods": pods, "annotation_kib": annotation_kib, "mode": mode, "rss_before_mib": round(before, 1),
            "rss_after_mib": round(after, 1), "growth_mib": round(after - before, 1),
            "sent_mib": round(pods * annotation_kib / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cache_rss", description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=4096)
    ap.add_argument("--annotation-kib", type=int, default=256)
    ap.add_argument("--mode", choices=["live", "demo"], default="live")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.pods, a.annotation_kib, a.mode)
    if a.json:
        sys.stdout.write(orjson.dumps(r).decode() + "\n")
    else:
        print(f"{r['pods']} pods x {r['annotation_kib']} KiB annotations ({r['sent_mib']} MiB sent), {r['mode']} mode: "
              f"RSS {r['rss_before_mib']} -> {r['rss_after_mib']} MiB (+{r['growth_mib']} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
