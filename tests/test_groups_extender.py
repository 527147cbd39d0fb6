"""Pod groups through the real app over HTTP (TestClient): the watch brings the members, filter holds or pins
them, bind writes the reserved devices, concurrent binds of one group, preempt only for the whole group,
the metrics, and demo mode (members known only from filter calls)."""

from __future__ import annotations

import threading
from typing import Any

from extender_support import args, post, serve, wait_for
from fastapi.testclient import TestClient
from groups_support import member, nodes, plain

from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.translate.devices import placement_from

Obj = dict[str, Any]


def _names(objs: list[Obj]) -> list[str]:
    return [n["metadata"]["name"] for n in objs]


def _preempt(client: Any, p: Obj, proposal: dict[str, list[str]]) -> dict[str, list[str]]:
    doc = {"Pod": p, "NodeNameToMetaVictims": {n: {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": 0}
                                               for n, uids in proposal.items()}}
    got = post(client, "preempt", doc)["NodeNameToMetaVictims"] or {}
    return {n: [v["UID"] for v in mv["Pods"]] for n, mv in got.items()}


def test_a_group_through_the_watch_and_every_verb() -> None:
    objs = nodes(3)
    names = _names(objs)
    a, b, c = (member("job", i, 3, 8) for i in range(3))
    with serve(objs, [a, b]) as (client, api, state):
        got = post(client, "filter", args(a, names))
        assert got["NodeNames"] == [] and set(got["FailedNodes"].values()) == {
            "gpupack: waiting for pod group job: 2 of 3 members exist"}
        api.put_pod(c)
        wait_for(lambda: state.pod(c["metadata"]["uid"]) is not None)
        plan: dict[str, str] = {}
        for p in (c, a, b):
            got = post(client, "filter", args(p, names))
            assert len(got["NodeNames"]) == 1 and len(got["FailedNodes"]) == 2
            plan[p["metadata"]["name"]] = got["NodeNames"][0]
        assert sorted(plan.values()) == sorted(names)  # 3 x 8 GPUs: one whole node each
        for p in (b, c, a):
            assert post(client, "bind", {"PodName": p["metadata"]["name"], "PodNamespace": "default",
                                         "PodUID": p["metadata"]["uid"], "Node": plan[p["metadata"]["name"]]}) == {
                "Error": ""}
        wait_for(lambda: all(state.pod(p["metadata"]["uid"]).node for p in (a, b, c)))  # type: ignore[union-attr]
        for p in (a, b, c):
            got_pod = api.get_pod("default", p["metadata"]["name"])
            assert got_pod is not None
            rec = placement_from(got_pod["metadata"]["annotations"])
            assert rec is not None and rec.node == plan[p["metadata"]["name"]] and len(rec.gpus) == 8
        wait_for(lambda: state.assumed() == {})  # the watch confirmed every booking
        text = client.get("/metrics").text
        assert 'gpupack_pod_groups_total{event="planned"} 1.0' in text
        assert 'gpupack_pod_group_planning_seconds_count 1.0' in text
        assert 'gpupack_pod_groups{state="reserved"} 0.0' in text
        assert 'gpupack_pod_groups{state="waiting"} 0.0' in text
        assert 'gpupack_pod_groups_total{event="bound"} 1.0' in text


def test_members_of_one_group_bind_concurrently() -> None:
    objs = nodes(2)
    names = _names(objs)
    pods = [member("job", i, 8, 2) for i in range(8)]
    with serve(objs, pods) as (client, api, _):
        post(client, "filter", args(pods[0], names))
        binder = client.app.state.gpupack.binder  # type: ignore[attr-defined]
        reserved = client.app.state.groups.reserved()[("default", "job")]  # type: ignore[attr-defined]
        results: list[str] = []

        def bind(p: Obj) -> None:
            uid = p["metadata"]["uid"]
            results.append(binder.bind("default", p["metadata"]["name"], uid, reserved[uid].node).error)

        threads = [threading.Thread(target=bind, args=(p,)) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert results == [""] * 8
        placed = {p["metadata"]["uid"]: placement_from(api.get_pod("default", p["metadata"]["name"])[
            "metadata"]["annotations"]) for p in pods}  # type: ignore[index]
        assert placed == reserved


def test_preempt_frees_room_only_for_the_whole_group() -> None:
    objs = nodes(2)
    names = _names(objs)
    low = [plain(f"low{i}", 4) for i in range(4)]  # two per node: every GPU taken
    hi = [member("hi", i, 2, 8, priority=10) for i in range(2)]
    with serve(objs, low) as (client, api, state):
        for i, p in enumerate(low):
            post(client, "filter", args(p, names))
            r = post(client, "bind", {"PodName": p["metadata"]["name"], "PodNamespace": "default",
                                      "PodUID": p["metadata"]["uid"], "Node": names[i // 2]})
            assert r == {"Error": ""}
        wait_for(lambda: len(state.ledger.recorded()) == 4 and not state.assumed())
        uids = {n: [p["metadata"]["uid"] for i, p in enumerate(low) if names[i // 2] == n] for n in names}
        only = hi[0]
        api.put_pod(only)
        wait_for(lambda: state.pod(only["metadata"]["uid"]) is not None)
        assert _preempt(client, only, uids) == {}  # one of two members exists: evicting cannot help yet
        api.put_pod(hi[1])
        wait_for(lambda: state.pod(hi[1]["metadata"]["uid"]) is not None)
        got = post(client, "filter", args(hi[0], names))
        assert "do not fit in the cluster together" in next(iter(got["FailedNodes"].values()))
        assert _preempt(client, hi[0], {names[0]: uids[names[0]]}) == {}  # one node freed is not the group
        first = _preempt(client, hi[0], uids)
        second = _preempt(client, hi[1], uids)
        assert len(first) == 1 and len(second) == 1 and set(first) | set(second) == set(names)
        for node, victims in {**first, **second}.items():
            assert sorted(victims) == sorted(uids[node])  # both 4-GPU pods of the node, none elsewhere
        for p in low:  # the evictions happen; the group then fits and is reserved whole
            api.delete_pod("default", p["metadata"]["name"])
        wait_for(lambda: not state.ledger.recorded())
        got = post(client, "filter", args(hi[1], names))
        assert len(got["NodeNames"]) == 1
        assert len(state.assumed()) == 2


def test_demo_mode_learns_members_from_filter_calls() -> None:
    state = ClusterState(mix_refresh_s=0.0)
    app = create_app(Settings(), state=state)
    a, b = (member("demo", i, 2, 8) for i in range(2))
    with TestClient(app) as client:
        wait_for(lambda: state.ready)
        names = ["dgx-h100-0", "dgx-h100-1", "t4-0"]
        got = post(client, "filter", args(a, names))
        assert set(got["FailedNodes"].values()) == {"gpupack: waiting for pod group demo: 1 of 2 members exist"}
        got = post(client, "filter", args(b, names))
        (node_b,) = got["NodeNames"]
        assert post(client, "bind", {"PodName": "demo-1", "PodNamespace": "default", "PodUID": "uid-demo-1",
                                     "Node": node_b}) == {"Error": ""}
        (node_a,) = post(client, "filter", args(a, names))["NodeNames"]
        assert node_a != node_b and node_a.startswith("dgx-h100")
        assert post(client, "bind", {"PodName": "demo-0", "PodNamespace": "default", "PodUID": "uid-demo-0",
                                     "Node": node_a}) == {"Error": ""}
