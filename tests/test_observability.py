"""Events on pods (pod-group waits, plans, released reservations, failed binds), the log format, and the
cluster figures the dashboard reads (GPUs per model, pending pods by reason)."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from groups_support import TTL, Sim, member, nodes, plain
from prometheus_client import CollectorRegistry

from scheduler import events as ev
from scheduler.events import EventRecorder, PodRef
from scheduler.extender.cluster_metrics import ClusterCollector
from scheduler.logfmt import about, log_format, setup
from scheduler.state.cluster import ClusterState

Obj = dict[str, Any]


def _recorder(sim: Sim) -> EventRecorder:
    rec = EventRecorder(sim.api, clock=lambda: sim.now)
    sim.groups.events = rec
    sim.binder.on_failed = rec.bind_failed
    return rec


def _events(sim: Sim, rec: EventRecorder) -> list[tuple[str, str, str, str]]:
    assert rec.flush(10)
    return [(e["involvedObject"]["name"], e["type"], e["reason"], e["message"]) for e in sim.api.events]


def test_a_group_waits_is_planned_and_its_reservation_released_with_events() -> None:
    sim = Sim(nodes(2))
    rec = _recorder(sim)
    a, b = (member("job", i, 2, 8) for i in range(2))
    sim.create([a])
    sim.filter(a)
    sim.filter(a)  # kube-scheduler's retry: the same Event is not written twice
    assert _events(sim, rec) == [("job-0", "Normal", ev.GROUP_WAITING,
                                  "waiting for pod group job: 1 of 2 members exist")]
    sim.create([b])
    node_a = sim.schedule(a)
    got = _events(sim, rec)[1:]
    assert {(name, reason) for name, _, reason, _ in got} == {("job-0", ev.GROUP_PLANNED), ("job-1", ev.GROUP_PLANNED)}
    assert all("2 member(s) reserved on" in msg for *_, msg in got)
    sim.now += TTL + 1  # b never binds: its reservation expires, the group's are released
    sim.state.view()
    assert sim.groups.reserved() == {}
    released = [e for e in _events(sim, rec) if e[2] == ev.RESERVATION_RELEASED]
    assert [(name, kind) for name, kind, _, _ in released] == [("job-1", "Warning")]  # a is bound already
    assert "planned again" in released[0][3]
    assert sim.bound(a) == node_a
    body = sim.api.events[0]
    assert body["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "namespace": "default", "name": "job-0",
                                      "uid": "uid-job-0"}
    assert body["source"]["component"] == "gpupack-scheduler" and body["metadata"]["namespace"] == "default"


def test_a_group_that_cannot_fit_gets_a_warning() -> None:
    sim = Sim(nodes(1))
    rec = _recorder(sim)
    pods = [member("big", i, 2, 8) for i in range(2)]
    sim.create(pods)
    sim.filter(pods[0])
    (got,) = _events(sim, rec)
    assert got[1:3] == ("Warning", ev.GROUP_UNPLACEABLE) and "do not fit in the cluster together" in got[3]


def test_a_failed_bind_says_why_on_the_pod() -> None:
    sim = Sim(nodes(1))
    rec = _recorder(sim)
    p = plain("solo", 8)
    sim.create([p])
    assert sim.bind(p, "no-such-node")
    ((name, kind, reason, msg),) = _events(sim, rec)
    assert (name, kind, reason) == ("solo", "Warning", ev.BIND_FAILED) and "no-such-node" in msg
    assert sim.api.events[0]["source"]["host"] == "no-such-node"


class _Broken:
    def create_event(self, namespace: str, body: Obj) -> None:
        raise RuntimeError("apiserver down")


def test_events_never_block_and_failures_are_counted() -> None:
    results: list[tuple[str, str]] = []
    rec = EventRecorder(_Broken(), on_result=lambda reason, result: results.append((reason, result)), max_queue=1)
    rec.record(PodRef("ns", "p", "u"), ev.WARNING, ev.BIND_FAILED, "x")
    assert rec.flush(10)
    assert results == [(ev.BIND_FAILED, "failed")]
    rec.close()
    rec.record(PodRef("ns", "p", "u"), ev.WARNING, ev.BIND_FAILED, "y")  # after close: ignored, no error
    assert EventRecorder(object()).api is None  # an API without create_event: events are log lines only


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_one_log_format_names_pod_and_node(fmt: str) -> None:
    out = io.StringIO()
    handler = setup("info", fmt, node="gpu-1", stream=out)
    try:
        logging.getLogger("gpupack.test").info("bound %s", "x", extra=about("ml/train", "dgx-0"))
        logging.getLogger("gpupack.test").warning("agent line")
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5", "POST", "/bind", "1.1", 200)
    finally:
        logging.getLogger().removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    if fmt == "json":
        docs = [json.loads(x) for x in lines]
        assert docs[0] | {"time": ""} == {"time": "", "level": "info", "logger": "gpupack.test", "msg": "bound x",
                                          "pod": "ml/train", "node": "dgx-0"}
        assert docs[1]["node"] == "gpu-1" and "pod" not in docs[1]  # the process's node, where none is named
        assert docs[2] | {"time": ""} == {"time": "", "level": "info", "logger": "uvicorn.access", "node": "gpu-1",
                                          "msg": '10.0.0.1:5 - "POST /bind HTTP/1.1" 200', "client": "10.0.0.1:5",
                                          "method": "POST", "path": "/bind", "status": 200}
    else:
        assert lines[0].endswith("INFO gpupack.test: bound x pod=ml/train node=dgx-0")
        assert lines[1].endswith("WARNING gpupack.test: agent line node=gpu-1")
    with pytest.raises(ValueError, match="text, json"):
        log_format("yaml")


def _scrape(state: ClusterState) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry()
    reg.register(ClusterCollector(state))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in reg.collect() for s in f.samples}


def test_gpus_per_model_and_pending_pods_by_reason() -> None:
    objs = nodes(2, gpus=8)
    busy = plain("busy", 8)
    busy["spec"]["nodeName"] = "n0"
    busy["status"]["phase"] = "Running"
    pods = [busy, plain("fits", 4), plain("huge", 16), plain("huge2", 12), member("job", 0, 2, 8)]
    state = ClusterState(mix_refresh_s=0.0)
    state.replace("nodes", objs)
    state.replace("pods", pods)
    got = _scrape(state)
    model = (("model", "A100-SXM4-80GB"),)
    assert got[("gpupack_gpus", model)] == 16
    assert got[("gpupack_gpus_allocated", model)] == 8  # a pod without a record: 8 whole GPUs, devices unknown
    assert got[("gpupack_gpus_free", model)] == 8 and got[("gpupack_gpus_idle", model)] == 8
    assert ("gpupack_gpus_stranded", model) in got
    assert got[("gpupack_pending_pods", (("reason", "fits_now"),))] == 1
    assert got[("gpupack_pending_pods", (("reason", "too_few_gpus"),))] == 2
    assert got[("gpupack_pending_pods", (("reason", "pod_group"),))] == 1  # fits alone, waits for its group
