"""Golden tests: every request kube-scheduler 1.36 sent in tests/data/shared/fixtures/extender is parsed and
answered in the form it accepts, compared with the recorded answers and the notes on what the
scheduler did with them (fixtures/README.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from extender_support import as_bound, fixture_nodes, load, pod, post, serve

from scheduler.translate.devices import DEVICES

FILTER_KEYS = ["Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"]


def _check_filter_shape(answer: dict, request: dict) -> None:
    """The rules the notes give: every key present, the request's form, only nodes it was sent."""
    assert list(answer) == FILTER_KEYS
    sent = request["NodeNames"] or [n["metadata"]["name"] for n in request["Nodes"]["items"]]
    if request["NodeNames"] is not None:
        assert answer["Nodes"] is None and isinstance(answer["NodeNames"], list)
        passed = answer["NodeNames"]
    else:
        assert answer["NodeNames"] is None and list(answer["Nodes"]) == ["metadata", "items"]
        passed = [n["metadata"]["name"] for n in answer["Nodes"]["items"]]
        by = {n["metadata"]["name"]: n for n in request["Nodes"]["items"]}
        assert all(n == by[n["metadata"]["name"]] for n in answer["Nodes"]["items"])  # objects echoed as sent
    failed, unres = answer["FailedNodes"], answer["FailedAndUnresolvableNodes"]
    assert set(passed) | set(failed) | set(unres) == set(sent)
    assert not (set(passed) & set(failed)) and not (set(passed) & set(unres)) and not (set(failed) & set(unres))
    assert all(isinstance(v, str) and v.startswith("gpupack: ") for v in [*failed.values(), *unres.values()])
    assert answer["Error"] == ""


@pytest.mark.parametrize("mode", ["nodes", "nodenames"])
def test_s1_filter_prioritize_bind_as_recorded(shared: Path, mode: str) -> None:
    req = load(shared, f"filter-{mode}-request.json")
    with serve(fixture_nodes(shared), [req["Pod"]]) as (client, api, _):
        answer = post(client, "filter", req)
        _check_filter_shape(answer, req)
        assert answer == load(shared, f"filter-{mode}-response.json")  # all three free nodes pass, as recorded
        prio_req = load(shared, f"prioritize-{mode}-request.json")
        scores = post(client, "prioritize", prio_req)
        recorded = load(shared, f"prioritize-{mode}-response.json")
        assert [s["Host"] for s in scores] == [s["Host"] for s in recorded]
        assert all(list(s) == ["Host", "Score"] and type(s["Score"]) is int and 0 <= s["Score"] <= 10 for s in scores)
        bind = load(shared, "bind-request.json" if mode == "nodes" else "bind-ncc-request.json")
        bind["PodUID"] = req["Pod"]["metadata"]["uid"]
        bind["PodName"] = req["Pod"]["metadata"]["name"]
        assert post(client, "bind", bind) == load(shared, "bind-response.json")
        stored = api.get_pod(bind["PodNamespace"], bind["PodName"])
        assert stored is not None and stored["spec"]["nodeName"] == "gpu-node-c"
        assert orjson.loads(stored["metadata"]["annotations"][DEVICES])["node"] == "gpu-node-c"


@pytest.mark.parametrize("mode", ["nodes", "nodenames"])
def test_gpu_memory_pod_sent_cpu_node_too(shared: Path, mode: str) -> None:
    """The ignoredByScheduler resource lets cpu-node-d through the in-tree filters; gpupack refuses it for good."""
    req = load(shared, f"filter-gpu-memory-ignoredbyscheduler-{mode}-request.json")
    recorded = load(shared, f"filter-gpu-memory-ignoredbyscheduler-{mode}-response.json")
    with serve(fixture_nodes(shared)) as (client, _, _):
        answer = post(client, "filter", req)
    _check_filter_shape(answer, req)
    got = answer["NodeNames"] if mode == "nodenames" else [n["metadata"]["name"] for n in answer["Nodes"]["items"]]
    want = recorded["NodeNames"] if mode == "nodenames" else [n["metadata"]["name"] for n in recorded["Nodes"]["items"]]
    assert got == [n for n in want if n != "cpu-node-d"]
    assert answer["FailedAndUnresolvableNodes"] == {"cpu-node-d": "gpupack: node has no usable GPU"}


def test_mig_pod_single_feasible_node(shared: Path) -> None:
    req = load(shared, "filter-mig-single-feasible-node-request.json")
    with serve(fixture_nodes(shared)) as (client, _, _):
        answer = post(client, "filter", req)
    _check_filter_shape(answer, req)
    assert answer == load(shared, "filter-mig-single-feasible-node-response.json")


def test_after_preemption_only_the_nominated_node(shared: Path) -> None:
    req = load(shared, "filter-after-preemption-nominated-node-request.json")
    nodes = fixture_nodes(shared)
    prempt = load(shared, "preempt-nodenametovictims-request.json")["NodeNameToVictims"]
    survivors = [as_bound(p, n) for n, v in prempt.items() if n != "gpu-node-b" for p in v["Pods"]]
    with serve(nodes, survivors) as (client, _, _):
        answer = post(client, "filter", req)
    _check_filter_shape(answer, req)
    assert [n["metadata"]["name"] for n in answer["Nodes"]["items"]] == ["gpu-node-b"]


def _victim_pods(shared: Path, meta: bool) -> list[dict]:
    """The bound low-priority pods of s7 (UIDs of the ncc run when `meta`)."""
    full = load(shared, "preempt-nodenametovictims-request.json")["NodeNameToVictims"]
    ncc = load(shared, "preempt-nodenametometavictims-request.json")["NodeNameToMetaVictims"]
    out = []
    for node, v in full.items():
        for p, m in zip(v["Pods"], ncc[node]["Pods"], strict=True):
            q = as_bound(p, node)
            if meta:
                q = copy.deepcopy(q)
                q["metadata"]["uid"] = m["UID"]
            out.append(q)
    return out


@pytest.mark.parametrize("shape", ["nodenametovictims", "nodenametometavictims"])
def test_preempt_both_victim_shapes(shared: Path, shape: str) -> None:
    """Every node needs all its proposed victims gone (c holds 5 GPUs of pods on 4): the answer is the recorded one."""
    req = load(shared, f"preempt-{shape}-request.json")
    with serve(fixture_nodes(shared), _victim_pods(shared, shape.endswith("metavictims"))) as (client, _, _):
        answer = post(client, "preempt", req)
    assert answer == load(shared, f"preempt-{shape}-response.json")


def test_preempt_prunes_victims_that_do_not_help(shared: Path) -> None:
    """Two 4-GPU pods proposed on an 8-GPU node for a 4-GPU pod: one suffices (the lower priority one);
    a victim holding nothing gpupack counts was proposed for the scheduler's own reasons and stays."""
    req = load(shared, "preempt-nodenametometavictims-request.json")
    low = pod("low", {"nvidia.com/gpu": "4"}, node="gpu-node-a", priority=5)
    mid = pod("mid", {"nvidia.com/gpu": "4"}, node="gpu-node-a", priority=10)
    cpu = pod("cpu", {}, node="gpu-node-a")
    req["NodeNameToMetaVictims"] = {"gpu-node-a": {"Pods": [{"UID": p["metadata"]["uid"]} for p in (mid, low, cpu)],
                                                   "NumPDBViolations": 2}}
    with serve(fixture_nodes(shared), [low, mid, cpu]) as (client, _, _):
        answer = post(client, "preempt", req)["NodeNameToMetaVictims"]
    assert answer == {"gpu-node-a": {"Pods": [{"UID": "uid-low"}, {"UID": "uid-cpu"}], "NumPDBViolations": 2}}


def test_unknown_node_is_never_returned(shared: Path) -> None:
    """NodeNames mode fails the whole attempt on a name it did not send; Nodes mode would bind to a ghost."""
    for mode in ("nodes", "nodenames"):
        req = load(shared, f"filter-{mode}-request.json")
        with serve([n for n in fixture_nodes(shared) if n["metadata"]["name"] != "gpu-node-b"]) as (client, _, _):
            answer = post(client, "filter", req)
        _check_filter_shape(answer, req)
        assert answer["FailedNodes"] == {"gpu-node-b": "gpupack: unknown to gpupack (no inventory yet)"}


def test_bind_to_unknown_node_is_an_error(shared: Path) -> None:
    req = load(shared, "filter-nodes-request.json")
    bind = load(shared, "bind-unknown-node-request.json")
    p = copy.deepcopy(req["Pod"])
    p["metadata"].update(name=bind["PodName"], uid=bind["PodUID"])
    with serve(fixture_nodes(shared), [p]) as (client, api, _):
        post(client, "filter", {**req, "Pod": p})
        answer = post(client, "bind", bind)
        assert "zz-ghost-node" in answer["Error"] and answer["Error"].startswith("gpupack: ")
        assert api.get_pod("gpupack-test", bind["PodName"])["spec"].get("nodeName") is None


@pytest.mark.parametrize("recorded", ["filter-fail-all-nodes-response.json",
                                      "filter-fail-all-unresolvable-nodes-response.json"])
def test_fail_all_answers_have_the_recorded_shape(shared: Path, recorded: str) -> None:
    req = load(shared, "filter-nodes-request.json")
    busy = []
    if "unresolvable" in recorded:
        req["Pod"]["metadata"]["annotations"] = {"gpupack.io/gpu-model": "V100-SXM2-32GB"}
    else:
        busy = [as_bound({**req["Pod"], "metadata": {**req["Pod"]["metadata"], "uid": f"busy-{n}", "name": f"b-{n}"},
                          "spec": {**req["Pod"]["spec"], "containers": [
                              {"name": "m", "resources": {"limits": {"nvidia.com/gpu": str(k)}}}]}}, n)
                for n, k in (("gpu-node-a", 8), ("gpu-node-b", 8), ("gpu-node-c", 4))]
    want = load(shared, recorded)
    with serve(fixture_nodes(shared), busy) as (client, _, _):
        answer = post(client, "filter", req)
    _check_filter_shape(answer, req)
    assert answer["Nodes"] == want["Nodes"] and answer["NodeNames"] is None
    for key in ("FailedNodes", "FailedAndUnresolvableNodes"):
        assert set(answer[key]) == set(want[key])
    if "unresolvable" in recorded:
        assert answer["FailedAndUnresolvableNodes"]["gpu-node-a"] == (
            "gpupack: needs GPU model V100-SXM2-32GB; node has A100-SXM4-80GB")
    else:
        assert set(answer["FailedNodes"].values()) == {"gpupack: needs 1 free GPUs; 0 free"}


def test_recorded_headers_are_accepted(shared: Path) -> None:
    headers = load(shared, "request-headers.json")
    req = load(shared, "filter-nodenames-request.json")
    with serve(fixture_nodes(shared)) as (client, _, _):
        body = orjson.dumps(req)
        sent = {k: v for k, v in headers.items() if k not in ("Host", "Content-Length")}
        r = client.post("/filter", content=body, headers=sent)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert orjson.loads(r.content) == load(shared, "filter-nodenames-response.json")


def test_every_recorded_request_parses(shared: Path) -> None:
    """No fixture request is refused as malformed (a 400 would fail the pod's attempt)."""
    with serve(fixture_nodes(shared)) as (client, _, _):
        for f in sorted((shared / "fixtures" / "extender").glob("*-request*.json")):
            if f.name.startswith("prioritize-after"):
                continue  # a summary of names, not a body
            verb = f.name.split("-")[0]
            r = client.post(f"/{verb}", content=f.read_bytes())
            assert r.status_code == 200, (f.name, r.text)
            doc = orjson.loads(r.content)
            if verb == "prioritize":
                assert isinstance(doc, list)
            elif verb == "preempt":
                assert list(doc) == ["NodeNameToMetaVictims"]
            elif verb == "filter":
                assert list(doc) == FILTER_KEYS
