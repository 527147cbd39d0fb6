"""64 binds racing for the same GPUs against an API stand-in that fails every call the bind makes (the
Binding POST and the read-back GET) by refusing, timing out (before or after the change took effect)
and answering an error after the change took effect: no device is ever booked twice, every answer of
success is a pod really bound with its devices record, no pod is ever bound without its record, and
the devices of a pod bound while gpupack answered Error are never handed to another pod. binpack's
validate is the oracle on the final ledger and on (what is really bound + what the ledger hands out)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from extender_support import args, fixture_nodes, pod, post, serve, wait_for

from binpack import Snapshot, validate
from scheduler.state.memapi import Faults
from scheduler.translate.devices import DEVICES, placement_from
from scheduler.translate.inventory import node_from_k8s
from scheduler.translate.pod import read_pod

SHAPES = [{"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"}, {"gpupack.io/gpu-memory": "30000"},
          {"nvidia.com/gpu": "1"}]
ALL_CALLS = ("bind", "get")


def _bind(client: Any, p: dict[str, Any], node: str) -> str:
    r = client.post("/bind", content=orjson.dumps({"PodName": p["metadata"]["name"], "PodNamespace": "default",
                                                    "PodUID": p["metadata"]["uid"], "Node": node}))
    assert r.status_code == 200
    return str(orjson.loads(r.content)["Error"])


def _never_handed_twice(base: Snapshot, api: Any, state: Any, demands: dict[str, Any]) -> None:
    """What the API server really holds, plus every booking the ledger has for other pods, fits together:
    a pod bound while gpupack answered Error never has its devices handed to another pod."""
    truth = {p["metadata"]["uid"]: placement_from(p["metadata"].get("annotations") or {})
             for p in api.pods() if p["spec"].get("nodeName")}
    assert all(pl is not None for pl in truth.values()), "a pod is bound without its devices record"
    with state.lock:
        booked = {u: b.placement for u, b in state.ledger.bookings.items() if u not in truth}
    placed = [(demands[u], pl) for u, pl in sorted(truth.items())] + [(demands[u], booked[u]) for u in sorted(booked)]
    assert validate(base, placed) == []


@pytest.mark.parametrize("seed", [1, 2])
def test_64_binds_racing_never_double_book(shared: Path, seed: int) -> None:
    nodes = [n for n in fixture_nodes(shared) if n["metadata"]["name"] in ("gpu-node-a", "gpu-node-b")]
    pods = [pod(f"p{i}", SHAPES[i % len(SHAPES)]) for i in range(64)]
    faults = Faults(latency_s=0.002, conflict=0.1, server_error=0.1, timeout=0.15, error_after_apply=0.1,
                    seed=seed, ops=ALL_CALLS)
    base = Snapshot.build([node_from_k8s(n) for n in sorted(nodes, key=lambda n: n["metadata"]["name"])])
    demands = {p["metadata"]["uid"]: read_pod(p).demand for p in pods}
    target = {p["metadata"]["uid"]: "gpu-node-a" if i % 3 else "gpu-node-b" for i, p in enumerate(pods)}
    with serve(nodes, pods, faults) as (client, api, state):
        wait_for(lambda: all(state.pod(p["metadata"]["uid"]) for p in pods))

        def bind(i: int) -> tuple[str, str]:
            p = pods[i]
            return p["metadata"]["uid"], _bind(client, p, target[p["metadata"]["uid"]])

        with ThreadPoolExecutor(16) as ex:
            answers = dict(ex.map(bind, range(64)))
        ok = {u for u, e in answers.items() if not e}
        assert ok and len(ok) < 64  # some won, capacity and injected faults refused others
        stored = {p["metadata"]["uid"]: p for p in api.pods()}
        for uid, err in answers.items():
            ann = stored[uid]["metadata"].get("annotations") or {}
            if err:
                assert err.startswith("gpupack: ")
            else:
                assert stored[uid]["spec"].get("nodeName") == target[uid] and placement_from(ann) is not None
        _never_handed_twice(base, api, state, demands)
        # kube-scheduler retries what answered Error (to the same node; the faults have cleared)
        api.faults.ops = ()
        for _ in range(3):
            for p in pods:
                if answers[p["metadata"]["uid"]]:
                    answers[p["metadata"]["uid"]] = _bind(client, p, target[p["metadata"]["uid"]])
            _never_handed_twice(base, api, state, demands)
        # the watch catches up: every assumption became a recorded booking, or is gone
        wait_for(lambda: not state.assumed(), timeout_s=10)
        recorded = state.ledger.recorded()
        bound = {p["metadata"]["uid"]: p for p in api.pods() if p["spec"].get("nodeName")}
        assert set(recorded) == set(bound) >= {u for u, e in answers.items() if not e}
        assert validate(base, [(demands[u], recorded[u]) for u in sorted(recorded)]) == []
        truth = {u: placement_from(p["metadata"].get("annotations") or {}) for u, p in bound.items()}
        assert truth == recorded  # the ledger is exactly what the API server holds
        # the same UIDs again: answered from the ledger, no new Binding POSTed
        calls = api.calls.get("bind", 0)
        with ThreadPoolExecutor(8) as ex:
            again = dict(ex.map(bind, [i for i, p in enumerate(pods) if p["metadata"]["uid"] in bound]))
        assert all(e == "" for e in again.values()) and api.calls.get("bind", 0) == calls
        assert not any(DEVICES in (p["metadata"].get("annotations") or {}) and not p["spec"].get("nodeName")
                       for p in api.pods())  # no record is ever written on an unbound pod


def test_binding_created_reply_lost_and_read_back_failed_keeps_the_devices(shared: Path) -> None:
    """The reported overbooking: the Binding is created, its reply times out, the read-back GET fails.
    The pod is bound with its record (one write), gpupack answers Error and keeps the devices booked;
    another pod never gets them, and the watch settles the booking into the recorded one."""
    nodes = [n for n in fixture_nodes(shared) if n["metadata"]["name"] == "gpu-node-a"]
    first, second = pod("first", {"nvidia.com/gpu": "8"}), pod("second", {"nvidia.com/gpu": "8"})
    faults = Faults(timeout=1.0, timeout_after_apply=1.0, ops=ALL_CALLS)
    with serve(nodes, [first, second], faults, watch_timeout_s=1) as (client, api, state):
        wait_for(lambda: state.pod("uid-second") is not None)
        err = _bind(client, first, "gpu-node-a")
        assert "outcome unknown" in err
        stored = api.peek("default", "first")
        assert stored["spec"]["nodeName"] == "gpu-node-a" and DEVICES in stored["metadata"]["annotations"]
        verdict = post(client, "filter", args(second, ["gpu-node-a"]))
        assert verdict["NodeNames"] == [] and "gpu-node-a" in verdict["FailedNodes"]
        api.faults.ops = ()
        assert "no longer fits" in _bind(client, second, "gpu-node-a")
        wait_for(lambda: "uid-first" in state.ledger.recorded() and not state.assumed())
        assert _bind(client, first, "gpu-node-a") == ""  # kube-scheduler's retry: answered from the ledger


@pytest.mark.parametrize("fault", ["server_error", "timeout", "error_after_apply"])
def test_an_ambiguous_failure_keeps_the_booking_and_the_retry_gets_the_same_devices(shared: Path, fault: str) -> None:
    nodes = [n for n in fixture_nodes(shared) if n["metadata"]["name"] == "gpu-node-a"]
    p = pod("solo", {"nvidia.com/gpu": "4"})
    faults = Faults(**{fault: 1.0}, timeout_after_apply=0.0, ops=ALL_CALLS)  # type: ignore[arg-type]
    with serve(nodes, [p], faults) as (client, api, state):
        wait_for(lambda: state.pod("uid-solo") is not None)
        assert _bind(client, p, "gpu-node-a").startswith("gpupack: binding default/solo to gpu-node-a")
        booked = state.booking("uid-solo")
        # unsettled; or, where the Binding did land, already recorded from the watch
        assert booked is not None and (booked.unsettled or (fault == "error_after_apply" and not booked.assumed))
        state.clock = lambda: 1e12  # far past every deadline: an unsettled booking still does not expire
        assert state.expire() == 0 and state.booking("uid-solo") is not None
        api.faults.ops = ()
        assert _bind(client, p, "gpu-node-a") == ""
        stored = api.peek("default", "solo")
        assert placement_from(stored["metadata"]["annotations"]) == booked.placement


def test_a_refused_bind_leaves_nothing_behind(shared: Path) -> None:
    nodes = [n for n in fixture_nodes(shared) if n["metadata"]["name"] == "gpu-node-a"]
    p = pod("solo", {"nvidia.com/gpu": "8"})
    with serve(nodes, [p], Faults(conflict=1.0)) as (client, api, state):
        wait_for(lambda: state.pod("uid-solo") is not None)
        assert _bind(client, p, "gpu-node-a").startswith("gpupack: binding default/solo to gpu-node-a failed")
        assert not state.assumed() and state.ledger.recorded() == {}
        api.faults.conflict = 0.0
        assert _bind(client, p, "gpu-node-a") == ""  # the devices were free again for the retry


def test_an_unsettled_booking_moves_to_another_node_only_once_it_is_known_unbound(shared: Path) -> None:
    nodes = [n for n in fixture_nodes(shared) if n["metadata"]["name"] in ("gpu-node-a", "gpu-node-b")]
    p = pod("mover", {"nvidia.com/gpu": "8"})
    with serve(nodes, [p], Faults(server_error=1.0, ops=ALL_CALLS)) as (client, api, state):
        wait_for(lambda: state.pod("uid-mover") is not None)
        assert "outcome unknown" in _bind(client, p, "gpu-node-a")
        api.faults.ops = ()
        # kube-scheduler tries another node at once: the first Binding may still land, so the devices
        # on gpu-node-a stay booked and the pod is not booked twice
        assert "unsettled" in _bind(client, p, "gpu-node-b")
        assert state.booking("uid-mover").node == "gpu-node-a" and api.calls.get("bind", 0) == 1
        later = state.clock() + 3600
        state.clock = lambda: later  # past the booking's deadline, and the pod reads back unbound
        assert _bind(client, p, "gpu-node-b") == ""
        assert api.peek("default", "mover")["spec"]["nodeName"] == "gpu-node-b"
        assert state.booking("uid-mover").node == "gpu-node-b"
