"""The device plugin's Kubernetes side (scheduler/agent/records.py) over a CoreV1Api stand-in: the
node's pods by field selector, a record correction guarded by resourceVersion with its Event, and a
recreated pod of the same name left alone."""

from __future__ import annotations

from typing import Any

import orjson

from scheduler.agent.discover import discover
from scheduler.agent.fake_nvml import board
from scheduler.agent.handoff import GPU_RESOURCE, Booking
from scheduler.agent.records import CORRECTED_REASON, KubePodSource
from scheduler.translate.devices import DEVICES, record_from

GPUS = discover(board("dgx1-v100")).gpus


class _Resp:
    def __init__(self, doc: Any) -> None:
        self.data = orjson.dumps(doc)
        self.released = False

    def release_conn(self) -> None:
        self.released = True


class _Core:
    def __init__(self, pod: dict) -> None:
        self.pod = pod
        self.selectors: list[str] = []
        self.patches: list[tuple[str, str, dict]] = []
        self.events: list[tuple[str, dict]] = []
        self.responses: list[_Resp] = []

    def _resp(self, doc: Any) -> _Resp:
        self.responses.append(_Resp(doc))
        return self.responses[-1]

    def list_pod_for_all_namespaces(self, field_selector: str, **_: Any) -> _Resp:
        self.selectors.append(field_selector)
        return self._resp({"items": [self.pod], "metadata": {"resourceVersion": "9"}})

    def read_namespaced_pod(self, name: str, ns: str, **_: Any) -> _Resp:
        return self._resp(self.pod)

    def patch_namespaced_pod(self, name: str, ns: str, body: dict, **_: Any) -> None:
        self.patches.append((ns, name, body))

    def create_namespaced_event(self, ns: str, body: dict, **_: Any) -> None:
        self.events.append((ns, body))


def _pod(uid: str = "u1") -> dict:
    rec = {"v": 1, "node": "n", "kind": "whole", "gpus": [0], "containers": {"main": {"devices": [GPUS[0].uuid]}}}
    return {"metadata": {"name": "p", "namespace": "ml", "uid": uid, "resourceVersion": "41",
                         "annotations": {DEVICES: orjson.dumps(rec).decode()}}, "spec": {"nodeName": "n"}}


def _booking() -> Booking:
    return Booking("u1", "ml", "p", "main", GPU_RESOURCE, (GPUS[0].uuid,))


def test_pods_are_listed_by_node_and_the_connection_released() -> None:
    core = _Core(_pod())
    assert KubePodSource(core, "n", lambda: GPUS).pods() == [core.pod]
    assert core.selectors == ["spec.nodeName=n"] and all(r.released for r in core.responses)


def test_a_correction_patches_the_record_under_its_resource_version_and_writes_an_event() -> None:
    core = _Core(_pod())
    KubePodSource(core, "n", lambda: GPUS).correct(_booking(), [GPUS[5].uuid], "kubelet gave GPU 5")
    ((ns, name, body),) = core.patches
    assert (ns, name, body["metadata"]["resourceVersion"]) == ("ml", "p", "41")
    rec = record_from(body["metadata"]["annotations"])
    assert rec is not None and rec.container("main").devices == (GPUS[5].uuid,)  # type: ignore[union-attr]
    assert orjson.loads(body["metadata"]["annotations"][DEVICES])["gpus"] == [5]  # the ledger follows
    ((ev_ns, ev),) = core.events
    assert ev_ns == "ml" and ev["reason"] == CORRECTED_REASON and ev["type"] == "Warning"
    assert ev["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "namespace": "ml", "name": "p", "uid": "u1"}
    assert ev["source"] == {"component": "gpupack-agent", "host": "n"} and ev["message"] == "kubelet gave GPU 5"


def test_a_recreated_pod_of_the_same_name_is_left_alone() -> None:
    core = _Core(_pod(uid="u2"))
    KubePodSource(core, "n", lambda: GPUS).correct(_booking(), [GPUS[5].uuid], "x")
    assert core.patches == [] and core.events == []
