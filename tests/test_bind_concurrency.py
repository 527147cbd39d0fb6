"""64 binds racing for the same GPUs against an API stand-in that injects latency, 409s, 500s and
timeouts (before and after the change took effect): no device is ever booked twice, every answer
of success is a pod really bound with its devices record, every error leaves the pod unbound, and
no assumption is left behind. binpack's validate is the oracle on the final ledger."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from extender_support import fixture_nodes, pod, serve, wait_for

from binpack import Snapshot, validate
from scheduler.devices import DEVICES, placement_from
from scheduler.inventory import node_from_k8s
from scheduler.podspec import read_pod
from scheduler.state.memapi import Faults

SHAPES = [{"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"}, {"gpupack.io/gpu-memory": "30000"},
          {"nvidia.com/gpu": "1"}]


@pytest.mark.parametrize("seed", [1, 2])
def test_64_binds_racing_never_double_book(shared: Path, seed: int) -> None:
    nodes = [n for n in fixture_nodes(shared) if n["metadata"]["name"] in ("gpu-node-a", "gpu-node-b")]
    pods = [pod(f"p{i}", SHAPES[i % len(SHAPES)]) for i in range(64)]
    faults = Faults(latency_s=0.002, conflict=0.1, server_error=0.1, timeout=0.15, seed=seed)
    with serve(nodes, pods, faults) as (client, api, state):
        wait_for(lambda: all(state.pod(p["metadata"]["uid"]) for p in pods))

        def bind(i: int) -> tuple[str, str]:
            p = pods[i]
            node = "gpu-node-a" if i % 3 else "gpu-node-b"
            r = client.post("/bind", content=orjson.dumps({"PodName": p["metadata"]["name"], "PodNamespace": "default",
                                                            "PodUID": p["metadata"]["uid"], "Node": node}))
            assert r.status_code == 200
            return p["metadata"]["uid"], orjson.loads(r.content)["Error"]

        with ThreadPoolExecutor(16) as ex:
            answers = dict(ex.map(bind, range(64)))
        ok = {u for u, e in answers.items() if not e}
        assert ok and len(ok) < 64  # some won, capacity and injected faults refused others
        stored = {p["metadata"]["uid"]: p for p in api.pods()}
        for uid, err in answers.items():
            spec, ann = stored[uid]["spec"], stored[uid]["metadata"].get("annotations") or {}
            if err:
                assert err.startswith("gpupack: ") and not spec.get("nodeName")
            else:
                assert spec.get("nodeName") and placement_from(ann) is not None
        # the watch catches up: every assumption became a recorded booking, or is gone
        wait_for(lambda: not state.assumed(), timeout_s=10)
        recorded = state.ledger.recorded()
        assert set(recorded) == ok
        base = Snapshot.build([node_from_k8s(n) for n in sorted(nodes, key=lambda n: n["metadata"]["name"])])
        demands = {p["metadata"]["uid"]: read_pod(p).demand for p in pods}
        assert validate(base, [(demands[u], recorded[u]) for u in sorted(recorded)]) == []
        truth = {u: placement_from(p["metadata"].get("annotations") or {}) for u, p in stored.items()
                 if p["spec"].get("nodeName")}
        assert truth == recorded  # the ledger is exactly what the API server holds
        # the same UIDs again: answered from the ledger, no new Binding POSTed
        calls = api.calls.get("bind", 0)
        with ThreadPoolExecutor(8) as ex:
            again = dict(ex.map(bind, [i for i, p in enumerate(pods) if p["metadata"]["uid"] in ok]))
        assert all(e == "" for e in again.values()) and api.calls.get("bind", 0) == calls
        assert not any(DEVICES in (p["metadata"].get("annotations") or {}) and not p["spec"].get("nodeName")
                       and answers[p["metadata"]["uid"]] == "" for p in api.pods())


def test_failed_bind_leaves_nothing_behind(shared: Path) -> None:
    nodes = [n for n in fixture_nodes(shared) if n["metadata"]["name"] == "gpu-node-a"]
    p = pod("solo", {"nvidia.com/gpu": "8"})
    with serve(nodes, [p], Faults(server_error=1.0)) as (client, api, state):
        wait_for(lambda: state.pod("uid-solo") is not None)
        r = client.post("/bind", content=orjson.dumps({"PodName": "solo", "PodNamespace": "default",
                                                        "PodUID": "uid-solo", "Node": "gpu-node-a"}))
        assert orjson.loads(r.content)["Error"].startswith("gpupack: binding default/solo to gpu-node-a failed")
        assert not state.assumed() and state.ledger.recorded() == {}
        api.faults.server_error = 0.0
        r = client.post("/bind", content=orjson.dumps({"PodName": "solo", "PodNamespace": "default",
                                                        "PodUID": "uid-solo", "Node": "gpu-node-a"}))
        assert orjson.loads(r.content) == {"Error": ""}  # the devices were free again for the retry
