"""State tests on real Node and Pod JSON: watch streams (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR 410)
build the exact ledger, and the state rebuilt by a fresh list equals the state before it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from extender_support import fixture_nodes, pod, wait_for

from binpack import MigSlot, Placement, Snapshot, validate
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import ApiError, WatchEvent
from scheduler.state.memapi import MemoryApi
from scheduler.state.watch import Watcher, WatchSettings
from scheduler.translate.devices import annotations_for
from scheduler.translate.inventory import node_from_k8s
from scheduler.translate.pod import read_pod

Obj = dict[str, Any]


def _recorded(p: Obj, placement: Placement, nodes: list[Obj]) -> Obj:
    """The pod as bind leaves it: devices annotations written, bound to the placement's node."""
    node = next(node_from_k8s(n) for n in nodes if n["metadata"]["name"] == placement.node)
    ann = annotations_for(read_pod(p), placement, node)
    return {**p, "metadata": {**p["metadata"], "annotations": ann},
            "spec": {**p["spec"], "nodeName": placement.node}, "status": {"phase": "Running"}}


def _fingerprint(state: ClusterState) -> tuple[Any, ...]:
    snap = state.view().snapshot
    cols = snap.state()
    return (state.ledger.recorded(), dict(state.ledger.foreign), snap.names,
            {k: cols[k].tolist() for k in sorted(cols)})


def _story(nodes: list[Obj]) -> tuple[list[tuple[str, WatchEvent]], dict[str, Placement], dict[str, int]]:
    """A watch history and the ledger it must leave: uid -> placement, node -> foreign GPUs."""
    whole = pod("whole", {"nvidia.com/gpu": "2"})
    share = pod("share", {"gpupack.io/gpu-memory": "20k"})  # canonicalised 20000 MiB
    mig = pod("mig", {"nvidia.com/mig-1g.10gb": "1"})
    done = pod("done", {"nvidia.com/gpu": "1"})
    gone = pod("gone", {"nvidia.com/gpu": "8"})
    foreign = pod("foreign", {"nvidia.com/gpu": "3"}, node="gpu-node-b")
    p_whole = Placement("gpu-node-a", gpus=(0, 1), cpu_milli=100, host_memory_mib=128)
    p_share = Placement("gpu-node-a", gpus=(2,), memory_mib=20000, cpu_milli=100, host_memory_mib=128,
                        kind=read_pod(share).demand.kind)
    c = node_from_k8s(next(n for n in nodes if n["metadata"]["name"] == "gpu-node-c"))
    mig_gpu = next(g.index for g in c.gpus if g.mig_instances)
    p_mig = Placement("gpu-node-c", mig=(MigSlot(mig_gpu, "1g.10gb", 0),),
                      cpu_milli=100, host_memory_mib=128, kind=read_pod(mig).demand.kind)
    p_done = Placement("gpu-node-b", gpus=(7,), cpu_milli=100, host_memory_mib=128)
    p_gone = Placement("gpu-node-c", gpus=(0, 1, 2, 3), cpu_milli=100, host_memory_mib=128)
    ev: list[tuple[str, WatchEvent]] = [("nodes", WatchEvent("ADDED", n)) for n in nodes]
    for p in (whole, share, mig, done, gone):
        ev.append(("pods", WatchEvent("ADDED", p)))
    ev += [
        ("pods", WatchEvent("MODIFIED", _recorded(whole, p_whole, nodes))),
        ("pods", WatchEvent("MODIFIED", _recorded(share, p_share, nodes))),
        ("pods", WatchEvent("MODIFIED", _recorded(mig, p_mig, nodes))),
        ("pods", WatchEvent("MODIFIED", _recorded(done, p_done, nodes))),
        ("pods", WatchEvent("MODIFIED", _recorded(gone, Placement("gpu-node-c", gpus=(0, 1, 2, 3)), nodes))),
        ("pods", WatchEvent("ADDED", foreign)),
        ("pods", WatchEvent("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "999"}})),
        ("pods", WatchEvent("MODIFIED", {**_recorded(done, p_done, nodes), "status": {"phase": "Succeeded"}})),
        ("pods", WatchEvent("DELETED", _recorded(gone, p_gone, nodes))),
        # a heartbeat that changes nothing gpupack reads
        ("nodes", WatchEvent("MODIFIED", {**nodes[0], "status": {**nodes[0]["status"], "conditions": []}})),
    ]
    want = {"uid-whole": p_whole, "uid-share": p_share, "uid-mig": p_mig}
    return ev, want, {"gpu-node-b": 3}


def test_events_build_the_exact_ledger_and_a_relist_rebuilds_it(shared: Path) -> None:
    nodes = fixture_nodes(shared)
    events, want, foreign = _story(nodes)
    state = ClusterState()
    for kind, ev in events:
        state.push(kind, ev)
    state.replace("nodes", nodes)
    assert state.ledger.recorded() == want
    assert {k: v for k, v in state.ledger.foreign.items() if v} == foreign
    # the devices are really taken: validate the recorded placements against an empty cluster
    base = Snapshot.build([node_from_k8s(n) for n in sorted(nodes, key=lambda n: n["metadata"]["name"])])
    demands = {u: state.ledger.bookings[u].demand for u in want}
    assert validate(base, [(demands[u], p) for u, p in want.items() if demands[u] is not None]) == []
    with state.view().snapshot.read() as v:
        assert int(v.foreign[v.s.index["gpu-node-b"]]) == 3
    before = _fingerprint(state)
    # a fresh list of the same objects (what a 410 leads to) rebuilds exactly the same state
    final_pods: dict[str, Obj] = {}
    for kind, ev in events:
        if kind == "pods" and ev.type in ("ADDED", "MODIFIED"):
            final_pods[ev.obj["metadata"]["uid"]] = ev.obj
        elif kind == "pods" and ev.type == "DELETED":
            final_pods.pop(ev.obj["metadata"]["uid"], None)
    fresh = ClusterState()
    fresh.replace("nodes", nodes)
    fresh.replace("pods", list(final_pods.values()))
    assert _fingerprint(fresh) == before
    state.replace("pods", list(final_pods.values()))
    assert _fingerprint(state) == before


class _Scripted(MemoryApi):
    """Lists what MemoryApi holds; the first pod watch replays a script ending in ERROR 410."""

    def __init__(self, nodes: list[Obj], script: list[WatchEvent]) -> None:
        super().__init__(nodes)
        self.script = script
        self.watched_from: list[str] = []
        self.lock = threading.Lock()

    def watch_pods(self, resource_version: str, timeout_s: int) -> Any:
        with self.lock:
            self.watched_from.append(resource_version)
            script, self.script = self.script, []
        if script:
            return _Once(script)
        return super().watch_pods(resource_version, timeout_s)


class _Once:
    def __init__(self, events: list[WatchEvent]) -> None:
        self.events = events

    def __iter__(self) -> Any:
        return iter(self.events)

    def close(self) -> None:
        pass


def test_watcher_follows_bookmarks_and_relists_after_410(shared: Path) -> None:
    nodes = fixture_nodes(shared)
    a = pod("a", {"nvidia.com/gpu": "1"}, node="gpu-node-a")
    b = pod("b", {"nvidia.com/gpu": "2"}, node="gpu-node-b")
    script = [WatchEvent("ADDED", a), WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "77"}}),
              WatchEvent("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})]
    api = _Scripted(nodes, script)
    api.put_pod(b)  # what the relist after the 410 finds (a is not in the API server: gone)
    state = ClusterState()
    w = Watcher(api, state, WatchSettings(watch_timeout_s=1, backoff_initial_s=0.01))
    w.start()
    try:
        wait_for(lambda: w.relists["pods"] >= 2 and len(api.watched_from) >= 2)
        wait_for(lambda: state.ledger.foreign.get("gpu-node-b") == 2)
        assert state.ledger.foreign.get("gpu-node-a", 0) == 0  # a vanished with the relist
        assert api.watched_from[1] != "77"  # after a 410 the watch resumes from the new list, not the bookmark
    finally:
        w.stop()


def test_watch_from_compacted_history_relists(shared: Path) -> None:
    nodes = fixture_nodes(shared)
    api = MemoryApi(nodes, history=4)
    state = ClusterState()
    w = Watcher(api, state, WatchSettings(watch_timeout_s=1, backoff_initial_s=0.01))
    w.start()
    try:
        wait_for(lambda: state.ready)
        for i in range(3):
            api.put_pod(pod(f"p{i}", {"nvidia.com/gpu": "1"}, node="gpu-node-a"))
        wait_for(lambda: state.ledger.foreign.get("gpu-node-a") == 3)
        api.compact()
        api.put_pod(pod("late", {"nvidia.com/gpu": "1"}, node="gpu-node-b"))
        wait_for(lambda: state.ledger.foreign.get("gpu-node-b") == 1)
        api.delete_pod("default", "p0")
        wait_for(lambda: state.ledger.foreign.get("gpu-node-a") == 2)
        assert state.ledger.foreign == {"gpu-node-a": 2, "gpu-node-b": 1}  # nothing lost across the compaction
    finally:
        w.stop()


class _Flaky(MemoryApi):
    def __init__(self, nodes: list[Obj], failures: int) -> None:
        super().__init__(nodes)
        self.failures = failures

    def list_pods(self) -> tuple[list[Obj], str]:
        if self.failures > 0:
            self.failures -= 1
            raise ApiError(500, "etcdserver: leader changed")
        return super().list_pods()


def test_list_errors_back_off_then_ready(shared: Path) -> None:
    api = _Flaky(fixture_nodes(shared), failures=3)
    state = ClusterState()
    errors: list[str] = []
    w = Watcher(api, state, WatchSettings(watch_timeout_s=1, backoff_initial_s=0.01, backoff_max_s=0.02),
                on_error=lambda kind, e: errors.append(kind))
    w.start()
    try:
        wait_for(lambda: state.ready)
        assert errors == ["pods"] * 3 and not api.failures
    finally:
        w.stop()


def test_assumption_expires_when_the_pod_never_shows_up_bound(shared: Path) -> None:
    now = [0.0]
    state = ClusterState(assume_ttl_s=60, clock=lambda: now[0])
    state.replace("nodes", fixture_nodes(shared))
    state.replace("pods", [])
    p = Placement("gpu-node-a", gpus=(3,))
    state.assume("ghost", p, None)
    state.confirm("ghost")
    assert state.ledger.recorded() == {"ghost": p}
    now[0] = 59.0
    assert state.expire() == 0
    now[0] = 61.0
    assert state.expire() == 1 and state.ledger.recorded() == {}
    with state.view().snapshot.read() as v:
        assert bool(np.all(v.whole_free()[v.s.index["gpu-node-a"]][:8]))
