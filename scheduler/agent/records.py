"""The device plugin's Kubernetes side: the pods bound to this node, and record corrections.

A correction rewrites the pod's `gpupack.io/devices` to what kubelet allocated (kubelet wins, so
kubelet's accounting, the container and the record agree), guarded by the pod's resourceVersion so
a concurrent write is never lost, and puts a Warning Event on the pod saying what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from binpack import Gpu
from scheduler.agent.handoff import Booking
from scheduler.events import PodRef, event_body
from scheduler.translate.devices import DEVICES, corrected

log = logging.getLogger("gpupack.agent.records")
CORRECTED_REASON = "GpupackDevicesCorrected"
_TIMEOUT = (5, 15)


def _drain(resp: Any) -> bytes:
    """The body, with the connection handed back to the pool (one list per admission)."""
    data = bytes(resp.data)
    release = getattr(resp, "release_conn", None)
    if release is not None:
        release()
    return data


def node_pods(api: Any, node: str, timeout: tuple[float, float] = _TIMEOUT) -> tuple[list[dict[str, Any]], str]:
    """The pods bound to `node` (field selector spec.nodeName) and the list's resourceVersion."""
    resp = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", _preload_content=False,
                                           _request_timeout=timeout)
    doc = orjson.loads(_drain(resp))
    return list(doc.get("items") or []), str((doc.get("metadata") or {}).get("resourceVersion") or "")


class KubePodSource:
    """PodSource over a kubernetes CoreV1Api; `gpus` gives the node's current inventory."""

    def __init__(self, api: Any, node: str, gpus: Callable[[], Sequence[Gpu]]) -> None:
        self.api = api
        self.node = node
        self.gpus = gpus

    def pods(self) -> list[Mapping[str, Any]]:
        return list(node_pods(self.api, self.node)[0])

    def _read(self, ns: str, name: str) -> dict[str, Any]:
        resp = self.api.read_namespaced_pod(name, ns, _preload_content=False, _request_timeout=_TIMEOUT)
        return dict(orjson.loads(_drain(resp)))

    def correct(self, booking: Booking, devices: Sequence[str], message: str) -> None:
        pod = self._read(booking.namespace, booking.name)
        meta = pod.get("metadata") or {}
        if booking.uid and meta.get("uid") != booking.uid:
            return  # a new pod of the same name: not the one admitted
        text = str((meta.get("annotations") or {}).get(DEVICES) or "")
        new = corrected(text, booking.container, list(devices), self.gpus())
        if new != text:
            body = {"metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": {DEVICES: new}}}
            self.api.patch_namespaced_pod(booking.name, booking.namespace, body, _request_timeout=_TIMEOUT)
        self.event(pod, CORRECTED_REASON, message)

    def event(self, pod: Mapping[str, Any], reason: str, message: str, kind: str = "Warning") -> None:
        """A core/v1 Event on the pod (best effort: a failed Event is a log line)."""
        meta = pod.get("metadata") or {}
        ref = PodRef(str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or ""))
        try:
            self.api.create_namespaced_event(ref.namespace, event_body(ref, kind, reason, message, "gpupack-agent",
                                                                       self.node), _request_timeout=_TIMEOUT)
        except Exception as e:
            log.warning("event on %s/%s not written: %s", ref.namespace, ref.name, e)


__all__ = ["CORRECTED_REASON", "KubePodSource"]
