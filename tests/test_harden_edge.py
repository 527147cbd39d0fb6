"""Issue 17, defects 5-8 at the extender's HTTP edge, through the real app.

5: a body of the wrong shape (containers not a list, a victim whose spec is not an object) is a 400
   with the verb's result type, not "internal error" (or prioritize's silent `[]`).
6: a body that never fully arrives is answered 408 after body_timeout_s (a real server on 127.0.0.1).
7: internal errors are counted by verb and exception type, and logged once with the pod.
8: more node names than max_nodes is a 413 with the result type.
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
import uvicorn
from extender_support import args, pod, serve, wait_for

from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.cluster import ClusterState
from scheduler.state.memapi import MemoryApi
from scheduler.state.standalone import demo_objects

NODES = demo_objects()
NAMES = [n["metadata"]["name"] for n in NODES]
GPU_POD = pod("p", {"nvidia.com/gpu": "1"})


def _containers(value: Any) -> dict[str, Any]:
    p = copy.deepcopy(GPU_POD)
    p["spec"]["containers"] = value
    return p


def _victims(victim: dict[str, Any]) -> dict[str, Any]:
    return {"Pod": GPU_POD, "NodeNameToVictims": {NAMES[0]: {"Pods": [victim], "NumPDBViolations": 0}},
            "NodeNameToMetaVictims": None}


def _result_type(verb: str, doc: Any) -> None:
    """The body is the verb's result type with the error said."""
    if verb == "filter":
        assert set(doc) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
        assert doc["Error"].startswith("gpupack: ")
    elif verb == "prioritize":
        assert doc == []
    else:
        assert doc["NodeNameToMetaVictims"] == {} and doc["Error"].startswith("gpupack: ")


SHAPES = [
    ("filter", args(_containers(5), NAMES)),
    ("filter", args(_containers({"name": "main"}), NAMES)),
    ("filter", args(_containers(["main"]), NAMES)),
    ("prioritize", args(_containers(5), NAMES)),
    ("prioritize", args(_containers("main"), NAMES)),
    ("preempt", {"Pod": _containers(5), "NodeNameToVictims": None,
                 "NodeNameToMetaVictims": {NAMES[0]: {"Pods": [{"UID": "v"}], "NumPDBViolations": 0}}}),
    ("preempt", _victims({"metadata": {"uid": "v"}, "spec": ["not", "an", "object"]})),
    ("preempt", _victims({"metadata": {"uid": 7}, "spec": {}})),
    ("filter", args({**GPU_POD, "metadata": {**GPU_POD["metadata"], "annotations": {"a": 1}}}, NAMES)),
]


@pytest.mark.parametrize(("verb", "doc"), SHAPES, ids=[f"{v}-{i}" for i, (v, _) in enumerate(SHAPES)])
def test_a_wrong_shape_is_a_400_with_the_result_type(verb: str, doc: dict[str, Any]) -> None:
    with serve(NODES, []) as (client, _api, state):
        before = state.view().mix.version
        r = client.post(f"/{verb}", content=orjson.dumps(doc))
        assert r.status_code == 400, r.text
        _result_type(verb, orjson.loads(r.content))
        assert state.view().mix.version == before and not state.assumed()


@pytest.mark.parametrize("verb", ["filter", "prioritize", "preempt"])
def test_more_node_names_than_the_cap_is_a_413(verb: str) -> None:
    names = [f"n{i}" for i in range(101)]
    doc = ({"Pod": GPU_POD, "NodeNameToVictims": None,
            "NodeNameToMetaVictims": {n: {"Pods": [], "NumPDBViolations": 0} for n in names}}
           if verb == "preempt" else args(GPU_POD, names))
    with serve(NODES, [], max_nodes=100) as (client, _api, _state):
        r = client.post(f"/{verb}", content=orjson.dumps(doc))
        assert r.status_code == 413, r.text
        _result_type(verb, orjson.loads(r.content))
        assert client.post(f"/{verb}", content=orjson.dumps(
            {**doc, "NodeNameToMetaVictims": {NAMES[0]: {"Pods": [], "NumPDBViolations": 0}}}
            if verb == "preempt" else args(GPU_POD, NAMES))).status_code == 200


def test_the_default_cap_is_far_above_real_clusters() -> None:
    assert Settings().max_nodes >= 50_000


def test_internal_errors_are_counted_by_verb_and_type_and_logged_once_with_the_pod(
        caplog: pytest.LogCaptureFixture) -> None:
    with serve(NODES, []) as (client, _api, _state):
        engine = client.app.state.gpupack.engine  # type: ignore[attr-defined]

        def boom(*_: object) -> Any:
            raise RuntimeError("injected bug")

        engine.filter_answer = boom
        with caplog.at_level(logging.ERROR, logger="gpupack.extender"):
            r = client.post("/filter", content=orjson.dumps(args(GPU_POD, NAMES)))
        assert r.status_code == 200 and "internal error in filter: RuntimeError" in r.json()["Error"]
        logged = [rec for rec in caplog.records if rec.name == "gpupack.extender"]
        assert len(logged) == 1 and "default/p" in logged[0].getMessage() and "uid-p" in logged[0].getMessage()
        metrics = client.get("/metrics").text
        assert 'gpupack_internal_errors_total{exception="RuntimeError",verb="filter"} 1.0' in metrics


@contextmanager
def _server(settings: Settings) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = ClusterState(mix_refresh_s=0.0)
    app = create_app(settings, api=MemoryApi(NODES, []), state=state)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        wait_for(lambda: server.started, timeout_s=10)
        yield port
    finally:
        server.should_exit = True
        t.join(10)


def test_a_body_that_never_arrives_is_answered_408() -> None:
    with _server(Settings(body_timeout_s=0.2)) as port, socket.create_connection(("127.0.0.1", port), 10) as c:
        c.settimeout(10)  # bounded: the answer must come long before this
        c.sendall(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"Pod\":")
        got = b""
        for _ in range(50):  # bounded: the answer may come in pieces
            chunk = c.recv(65536)
            got += chunk
            if not chunk or b"not received within" in got:
                break
        assert got.startswith(b"HTTP/1.1 408"), got
        assert b"not received within 0.2 s" in got.partition(b"\r\n\r\n")[2]


def test_the_body_timeout_is_a_checked_setting() -> None:
    with pytest.raises(ValueError, match="body_timeout_s"):
        Settings(body_timeout_s=0)
