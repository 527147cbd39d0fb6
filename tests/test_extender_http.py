"""HTTP tests through the real app (TestClient) on the demo cluster: every verb in both modes, each kind
of demand, and the bad inputs (malformed, wrong shape, too big, unknown nodes, not ready)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from extender_support import args, pod, post, serve, wait_for

from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import ApiError
from scheduler.state.memapi import MemoryApi
from scheduler.state.standalone import demo_objects
from scheduler.translate.devices import DEVICES, record_from

NODES = demo_objects()
NAMES = [n["metadata"]["name"] for n in NODES]

# demand -> (pod limits, annotations, nodes where it fits on the empty demo cluster, a node's unresolvable reason)
KINDS: dict[str, tuple[dict[str, str], dict[str, str], set[str], tuple[str, str]]] = {
    "whole": ({"nvidia.com/gpu": "8"}, {}, {"dgx-h100-0", "dgx-h100-1", "dgx1-v100-0", "dgx1-v100-1"},
              ("t4-0", "gpupack: needs 8 GPUs; node has 4 that qualify")),
    "share": ({"gpupack.io/gpu-memory": "40000", "gpupack.io/gpu-compute": "50"}, {},
              {n for n in NAMES if not n.startswith(("t4", "dgx1"))},
              ("t4-0", "gpupack: needs 40000 MiB on one GPU; node's largest GPU has 15360 MiB")),
    "mig": ({"nvidia.com/mig-3g.40gb": "1"}, {}, {f"hgx-a100-{i}" for i in range(4)},
            ("dgx-h100-0", "gpupack: needs MIG 3g.40gb; no GPU on node offers that profile")),
    "model": ({"nvidia.com/gpu": "2"}, {"gpupack.io/gpu-model": "V100-SXM2-32GB"}, {"dgx1-v100-0", "dgx1-v100-1"},
              ("t4-1", "gpupack: needs GPU model V100-SXM2-32GB; node has T4")),
    "nvlink": ({"nvidia.com/gpu": "4"}, {"gpupack.io/topology": "nvlink"},
               {n for n in NAMES if not n.startswith("t4")},
               ("t4-2", "gpupack: needs 4 GPUs linked by NVLink; node's largest NVLink set is 1")),
}


def _filter(client: Any, p: dict, mode: str, names: list[str] = NAMES) -> tuple[set[str], dict, dict]:
    a = post(client, "filter", args(p, names, NODES if mode == "nodes" else None))
    passed = a["NodeNames"] if mode == "nodenames" else [n["metadata"]["name"] for n in a["Nodes"]["items"]]
    assert a["Error"] == ""
    return set(passed), a["FailedNodes"], a["FailedAndUnresolvableNodes"]


@pytest.mark.parametrize("mode", ["nodes", "nodenames"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_demand_through_every_verb(kind: str, mode: str) -> None:
    limits, ann, fits, (bad_node, why) = KINDS[kind]
    p = pod(f"{kind}-pod", limits, annotations=ann)
    with serve(NODES, [p]) as (client, api, state):
        passed, failed, unresolvable = _filter(client, p, mode)
        assert passed == fits
        assert unresolvable[bad_node] == why
        assert not failed  # nothing is busy yet: no node could be helped by evictions
        scores = post(client, "prioritize", args(p, NAMES, NODES if mode == "nodes" else None))
        assert [s["Host"] for s in scores] == NAMES
        by = {s["Host"]: s["Score"] for s in scores}
        assert all(0 <= v <= 10 for v in by.values()) and max(by[n] for n in fits) == 10
        assert all(by[n] == 0 for n in NAMES if n not in fits)
        target = max(sorted(fits), key=lambda n: by[n])
        assert post(client, "bind", {"PodName": p["metadata"]["name"], "PodNamespace": "default",
                                     "PodUID": p["metadata"]["uid"], "Node": target}) == {"Error": ""}
        stored = api.get_pod("default", p["metadata"]["name"])
        assert stored["spec"]["nodeName"] == target
        assert orjson.loads(stored["metadata"]["annotations"][DEVICES])["node"] == target
        rec = record_from(stored["metadata"]["annotations"])
        assert rec is not None and rec.container("main") is not None and rec.container("main").devices
        wait_for(lambda: not state.assumed())  # the watch saw the pod bound: the ledger holds it
        assert p["metadata"]["uid"] in state.ledger.recorded()
        # a second pod of the same shape no longer fits where the first took everything it could
        q = pod(f"{kind}-pod-2", limits, annotations=ann)
        passed2, failed2, _ = _filter(client, q, mode)
        assert passed2 <= fits
        for n in fits - passed2:
            assert failed2[n].startswith("gpupack: needs")


@pytest.mark.parametrize("mode", ["nodes", "nodenames"])
def test_pod_without_gpu_passes_everywhere_with_a_neutral_score(mode: str) -> None:
    p = pod("plain", {})
    with serve(NODES) as (client, _, _):
        passed, failed, unresolvable = _filter(client, p, mode, NAMES)
        assert passed == set(NAMES) and not failed and not unresolvable
        scores = post(client, "prioritize", args(p, NAMES, NODES if mode == "nodes" else None))
        assert {s["Score"] for s in scores} == {5}


def test_invalid_pod_is_refused_on_every_node_with_the_reason() -> None:
    p = pod("two-profiles", {"nvidia.com/mig-1g.10gb": "1", "nvidia.com/mig-3g.40gb": "1"})
    with serve(NODES) as (client, _, _):
        passed, failed, unresolvable = _filter(client, p, "nodenames")
        assert not passed and not failed and set(unresolvable) == set(NAMES)
        assert "several MIG profiles" in unresolvable["t4-0"]
        assert {s["Score"] for s in post(client, "prioritize", args(p, NAMES))} == {0}


def test_unknown_node_goes_to_failed_nodes() -> None:
    p = pod("w", {"nvidia.com/gpu": "1"})
    with serve(NODES) as (client, _, _):
        passed, failed, _ = _filter(client, p, "nodenames", ["t4-0", "new-node"])
        assert passed == {"t4-0"}
        assert failed == {"new-node": "gpupack: unknown to gpupack (no inventory yet)"}
        scores = post(client, "prioritize", args(p, ["t4-0", "new-node"]))
        assert scores == [{"Host": "t4-0", "Score": 10}, {"Host": "new-node", "Score": 0}]


BAD_BODIES = [b"{not json", b"[1, 2]", b'{"Pod": null, "NodeNames": ["t4-0"]}', b'{"Pod": {}, "NodeNames": [1]}',
              b'{"Pod": {}, "NodeNames": null, "Nodes": null}', b'{"Pod": {}, "Nodes": {"items": [{"x": 1}]}}']


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_filter_and_prioritize_bodies_are_400_with_the_result_type(body: bytes) -> None:
    with serve(NODES) as (client, _, _):
        r = client.post("/filter", content=body)
        assert r.status_code == 400
        doc = orjson.loads(r.content)
        assert list(doc) == ["Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"]
        assert doc["Error"].startswith("gpupack: bad filter request")
        r = client.post("/prioritize", content=body)
        assert r.status_code == 400 and orjson.loads(r.content) == []


@pytest.mark.parametrize("body", [b"nope", b"{}", b'{"PodName": "a", "PodNamespace": "d", "PodUID": 7, "Node": "n"}',
                                  b'{"PodName": "", "PodNamespace": "d", "PodUID": "u", "Node": "n"}'])
def test_bad_bind_bodies_change_nothing(body: bytes) -> None:
    p = pod("w", {"nvidia.com/gpu": "1"})
    with serve(NODES, [p]) as (client, api, state):
        before = (state.ledger.recorded(), api.pods())
        r = client.post("/bind", content=body)
        assert r.status_code == 400 and orjson.loads(r.content)["Error"].startswith("gpupack: bad bind request")
        assert (state.ledger.recorded(), api.pods()) == before


@pytest.mark.parametrize("body", [b"]", b'{"Pod": {}}', b'{"Pod": {}, "NodeNameToMetaVictims": {"n": {"Pods": 3}}}',
                                  b'{"Pod": {}, "NodeNameToMetaVictims": {"n": {"Pods": [{"uid": "x"}]}}}'])
def test_bad_preempt_bodies_are_400(body: bytes) -> None:
    with serve(NODES) as (client, _, _):
        r = client.post("/preempt", content=body)
        doc = orjson.loads(r.content)
        assert r.status_code == 400 and doc["NodeNameToMetaVictims"] == {} and doc["Error"]


def test_body_over_the_cap_is_413_even_when_chunked() -> None:
    big = orjson.dumps(args(pod("w", {"nvidia.com/gpu": "1"}), NAMES * 40))
    with serve(NODES, max_body_bytes=4096) as (client, _, _):
        r = client.post("/filter", content=big)
        assert r.status_code == 413 and "over 4096 bytes" in orjson.loads(r.content)["Error"]
        r = client.post("/filter", content=iter([big[:3000], big[3000:]]))  # no Content-Length
        assert r.status_code == 413
        r = client.post("/bind", content=b"x" * 5000)
        assert r.status_code == 413 and list(orjson.loads(r.content)) == ["Error"]


def test_bind_of_a_pod_that_no_longer_fits_is_an_error_and_books_nothing() -> None:
    p, q = pod("a", {"nvidia.com/gpu": "4"}), pod("b", {"nvidia.com/gpu": "1"})
    with serve(NODES, [p, q]) as (client, api, state):
        for x in (p, q):
            _filter(client, x, "nodenames")
        assert post(client, "bind", {"PodName": "a", "PodNamespace": "default", "PodUID": "uid-a",
                                     "Node": "t4-0"}) == {"Error": ""}
        answer = post(client, "bind", {"PodName": "b", "PodNamespace": "default", "PodUID": "uid-b", "Node": "t4-0"})
        assert answer["Error"] == "gpupack: pod default/b no longer fits on t4-0: needs 1 free GPUs; 0 free"
        assert "uid-b" not in state.ledger.bookings and api.get_pod("default", "b")["spec"].get("nodeName") is None
        # the same UID again is answered from the ledger, without a second booking
        assert post(client, "bind", {"PodName": "a", "PodNamespace": "default", "PodUID": "uid-a",
                                     "Node": "t4-0"}) == {"Error": ""}
        assert api.calls["bind"] == 1


def test_url_prefix_health_and_metrics() -> None:
    p = pod("w", {"nvidia.com/gpu": "1"})
    with serve(NODES, url_prefix="/gpupack/") as (client, _, _):
        r = client.post("/gpupack/filter", content=orjson.dumps(args(p, ["t4-0", "zz"])))
        assert r.status_code == 200 and orjson.loads(r.content)["NodeNames"] == ["t4-0"]
        assert client.post("/filter", content=b"{}").status_code == 404
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json() == {"ready": True, "nodes": True, "pods": True}
        text = client.get("/metrics").text
        for name in ("gpupack_extender_request_seconds_bucket{le=\"0.005\",verb=\"filter\"}",
                     "gpupack_filter_rejections_total{reason=\"unknown_node\"} 1.0",
                     "gpupack_allocated_gpus", "gpupack_cluster_fragmentation", "gpupack_ready 1.0"):
            assert name in text, name


class _NeverLists(MemoryApi):
    def list_nodes(self) -> tuple[list[dict], str]:
        raise ApiError(503, "etcd is down")


def test_not_ready_until_listed() -> None:
    state = ClusterState()
    app = create_app(Settings(backoff_initial_s=0.05, backoff_max_s=0.1), api=_NeverLists(NODES), state=state)
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        p = pod("w", {"nvidia.com/gpu": "1"})
        a = post(client, "filter", args(p, ["t4-0"]))
        assert a["Error"] == "gpupack: not ready: the cluster state is still being listed" and a["NodeNames"] is None
        b = post(client, "bind", {"PodName": "w", "PodNamespace": "default", "PodUID": "uid-w", "Node": "t4-0"})
        assert b["Error"].startswith("gpupack: not ready")
        errors = re.compile(r'gpupack_watch_errors_total\{kind="nodes"\} (\d+)')
        def retried() -> bool:  # it backs off and lists again
            m = errors.search(client.get("/metrics").text)
            return m is not None and int(m.group(1)) >= 2

        wait_for(retried)
