"""An in-memory API server: the cluster of standalone/demo mode and the tests' stand-in.

It keeps Nodes and Pods as plain dicts (replaced, never mutated, so readers may keep references),
numbers every change with a resourceVersion, serves list and watch (a watch from a compacted
version answers ERROR 410 Gone, like etcd), and answers patch and Binding the way the real API
server does (404 for a missing pod, 409 for a wrong UID or an already bound pod; a Binding's
annotations are merged into the pod in the same write as nodeName, as kube-apiserver 1.36 does).
`Faults` injects latency, 409s, 500s, timeouts (before or after the change took effect) and errors
answered after the change took effect into the calls it names: the writes, and the bind's read-back.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.state.kubeapi import ApiError, ApiTimeout, Obj, WatchEvent


@dataclass
class Faults:
    """Failure rates for the calls named in `ops` ("patch", "bind", and "get": the bind's read-back
    through get_pod); `seed` makes a run repeatable. `error_after_apply`: the change took effect and the
    answer is still a 500 (an etcd timeout that committed)."""

    latency_s: float = 0.0
    conflict: float = 0.0
    server_error: float = 0.0
    timeout: float = 0.0
    timeout_after_apply: float = 0.5  # share of timeouts where the change did happen
    error_after_apply: float = 0.0
    seed: int = 0
    ops: tuple[str, ...] = ("patch", "bind")


class _Stream:
    def __init__(self, gen: Iterator[WatchEvent], stop: threading.Event) -> None:
        self._gen = gen
        self._stop = stop

    def __iter__(self) -> Iterator[WatchEvent]:
        return self._gen

    def close(self) -> None:
        self._stop.set()


class MemoryApi:
    """KubeApi kept in memory. `adopt` materialises a pod unknown here on its first write (demo mode)."""

    def __init__(self, nodes: list[Obj] | None = None, pods: list[Obj] | None = None, faults: Faults | None = None,
                 history: int = 10_000, adopt: Callable[[str], Obj | None] | None = None) -> None:
        self._cv = threading.Condition()
        self._rv = 0
        self._nodes: dict[str, Obj] = {}
        self._pods: dict[tuple[str, str], Obj] = {}
        self._log: deque[tuple[int, str, WatchEvent]] = deque(maxlen=history)
        self._compacted = 0
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        self.adopt = adopt
        self.calls: dict[str, int] = {}
        self.events: deque[Obj] = deque(maxlen=10_000)  # Events written (scheduler/events.py); no faults injected
        for n in nodes or []:
            self.put_node(n)
        for p in pods or []:
            self.put_pod(p)

    # -- changes, as a controller or a test makes them ------------------------------------------------
    def _stamp(self, obj: Obj) -> Obj:
        self._rv += 1
        meta = dict(obj.get("metadata") or {})
        meta["resourceVersion"] = str(self._rv)
        return {**obj, "metadata": meta}

    def _record(self, kind: str, type_: str, obj: Obj) -> None:
        if len(self._log) == self._log.maxlen:
            self._compacted = self._log[0][0]
        self._log.append((self._rv, kind, WatchEvent(type_, obj)))
        self._cv.notify_all()

    def put_node(self, node: Obj) -> Obj:
        with self._cv:
            name = node["metadata"]["name"]
            obj = self._stamp(node)
            type_ = "MODIFIED" if name in self._nodes else "ADDED"
            self._nodes[name] = obj
            self._record("node", type_, obj)
            return obj

    def delete_node(self, name: str) -> None:
        with self._cv:
            obj = self._nodes.pop(name)
            self._record("node", "DELETED", self._stamp(obj))

    def put_pod(self, pod: Obj) -> Obj:
        with self._cv:
            key = (pod["metadata"].get("namespace", "default"), pod["metadata"]["name"])
            obj = self._stamp(pod)
            type_ = "MODIFIED" if key in self._pods else "ADDED"
            self._pods[key] = obj
            self._record("pod", type_, obj)
            return obj

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._cv:
            obj = self._pods.pop((namespace, name))
            self._record("pod", "DELETED", self._stamp(obj))

    def compact(self) -> None:
        """Forget all history, so any watch from an older version gets 410 Gone."""
        with self._cv:
            self._compacted = self._rv
            self._log.clear()
            self._cv.notify_all()

    # -- reads ----------------------------------------------------------------------------------------
    def list_nodes(self) -> tuple[list[Obj], str]:
        with self._cv:
            self._count("list_nodes")
            return list(self._nodes.values()), str(self._rv)

    def list_pods(self) -> tuple[list[Obj], str]:
        with self._cv:
            self._count("list_pods")
            return list(self._pods.values()), str(self._rv)

    def pods(self) -> list[Obj]:
        with self._cv:
            return list(self._pods.values())

    def get_pod(self, namespace: str, name: str) -> Obj | None:
        """Read one pod; with "get" in the faults' ops, fails as the faults say (tests read with `peek`)."""
        after = self._fault("get")
        with self._cv:
            obj = self._pods.get((namespace, name))
        if after == "timeout":
            raise ApiTimeout("get: read timed out (injected)")
        if after == "error":
            raise ApiError(500, "get: etcdserver: request timed out (injected)", "InternalError")
        return obj

    def peek(self, namespace: str, name: str) -> Obj | None:
        """The stored pod, without faults (what a test checks)."""
        with self._cv:
            return self._pods.get((namespace, name))

    def watch_nodes(self, resource_version: str, timeout_s: int) -> _Stream:
        return self._watch("node", resource_version, timeout_s)

    def watch_pods(self, resource_version: str, timeout_s: int) -> _Stream:
        return self._watch("pod", resource_version, timeout_s)

    def _watch(self, kind: str, rv: str, timeout_s: float) -> _Stream:
        stop = threading.Event()
        return _Stream(self._events(kind, int(rv or 0), timeout_s, stop), stop)

    def _events(self, kind: str, since: int, timeout_s: float, stop: threading.Event) -> Iterator[WatchEvent]:
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            with self._cv:
                if since < self._compacted:
                    yield WatchEvent("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                               "reason": "Expired", "code": 410,
                                               "message": f"too old resource version: {since} ({self._compacted})"})
                    return
                batch: list[WatchEvent] = []
                if self._rv > since:  # the log is in version order: read back only past `since`
                    for rv, k, e in reversed(self._log):
                        if rv <= since:
                            break
                        if k == kind:
                            batch.append(e)
                    batch.reverse()
                last = self._rv
                if not batch:
                    since = last
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._cv.wait(min(left, 0.05))  # short waits, so close() is noticed quickly
                    continue
            yield from batch
            since = last

    # -- writes, with injected faults -----------------------------------------------------------------
    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    def _fault(self, op: str) -> str:
        """Raise an injected 409, 500 or timeout-before-apply; "timeout" or "error": apply the change, then
        time out or answer 500; "": no fault."""
        f = self.faults
        if op not in f.ops:
            with self._cv:
                self._count(op)
            return ""
        if f.latency_s:
            time.sleep(f.latency_s * (0.5 + self._rng.random()))
        with self._cv:
            self._count(op)
            r = self._rng.random()
            after = self._rng.random() < f.timeout_after_apply
        if r < f.conflict:
            raise ApiError(409, f"{op}: the object has been modified (injected)", "Conflict")
        if r < f.conflict + f.server_error:
            raise ApiError(500, f"{op}: etcdserver: request timed out (injected)", "InternalError")
        if r < f.conflict + f.server_error + f.timeout:
            if not after:
                raise ApiTimeout(f"{op}: read timed out (injected)")
            return "timeout"
        if r < f.conflict + f.server_error + f.timeout + f.error_after_apply:
            return "error"
        return ""

    @staticmethod
    def _answer(op: str, after: str) -> None:
        """The answer of a call that took effect: none (a timeout), a 500, or success."""
        if after == "timeout":
            raise ApiTimeout(f"{op}: read timed out after the change applied (injected)")
        if after == "error":
            raise ApiError(500, f"{op}: etcdserver: request timed out, but the change was committed (injected)",
                           "InternalError")

    def _pod_for_write(self, namespace: str, name: str, uid: str) -> Obj:
        pod = self._pods.get((namespace, name))
        if pod is None and self.adopt is not None:
            raw = self.adopt(uid)
            if raw is not None:
                meta = {**(raw.get("metadata") or {}), "namespace": namespace, "name": name, "uid": uid}
                pod = self._stamp({**raw, "metadata": meta})
                self._pods[(namespace, name)] = pod
                self._record("pod", "ADDED", pod)
        if pod is None:
            raise ApiError(404, f'pods "{name}" not found', "NotFound")
        if uid and pod["metadata"].get("uid") != uid:
            raise ApiError(409, f'Operation cannot be fulfilled on pods "{name}": Precondition failed: '
                                f"UID in precondition: {uid}, UID in object meta: {pod['metadata'].get('uid')}",
                           "Conflict")
        return pod

    def patch_pod_annotations(self, namespace: str, name: str, uid: str, annotations: dict[str, str | None]) -> None:
        """Merge-patch annotations (None removes a key): how a test or controller changes a pod."""
        after = self._fault("patch")
        with self._cv:
            pod = self._pod_for_write(namespace, name, uid)
            ann = dict(pod["metadata"].get("annotations") or {})
            for k, v in annotations.items():
                if v is None:
                    ann.pop(k, None)
                else:
                    ann[k] = v
            self._pods[(namespace, name)] = obj = self._stamp({**pod, "metadata": {**pod["metadata"],
                                                                                   "annotations": ann}})
            self._record("pod", "MODIFIED", obj)
        self._answer("patch", after)

    def create_event(self, namespace: str, body: Obj) -> None:
        with self._cv:
            self._count("event")
            self.events.append({**body, "metadata": {**(body.get("metadata") or {}), "namespace": namespace}})

    def create_binding(self, namespace: str, name: str, uid: str, node: str,
                       annotations: Mapping[str, str] | None = None) -> None:
        after = self._fault("bind")
        with self._cv:
            pod = self._pod_for_write(namespace, name, uid)
            bound = (pod.get("spec") or {}).get("nodeName")
            if bound:
                raise ApiError(409, f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is '
                                    f'already assigned to node "{bound}"', "Conflict")
            spec: dict[str, Any] = {**(pod.get("spec") or {}), "nodeName": node}
            meta = pod["metadata"]
            if annotations:  # merged in the same write as nodeName (kube-apiserver's Binding does the same)
                meta = {**meta, "annotations": {**(meta.get("annotations") or {}), **annotations}}
            self._pods[(namespace, name)] = obj = self._stamp({**pod, "metadata": meta, "spec": spec})
            self._record("pod", "MODIFIED", obj)
        self._answer("bind", after)
