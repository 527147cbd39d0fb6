"""The bind transaction (DESIGN.md): node lock, re-check against the newest ledger, assume, PATCH
the devices annotations, POST the Binding, confirm; any failure undoes what was done.

kube-scheduler treats a bind answer of success as final, so success is answered only once the
Binding exists (after a 409 or a timeout the pod is read back to find out). The same pod UID bound
twice is answered from the ledger; a second bind of a UID whose bind is in flight is refused. The
node lock only covers check + assume: the assumption itself reserves the devices, so binds to one
node overlap their API calls without ever sharing a device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from binpack import Conflict, Placement, fit, place
from scheduler.devices import DEVICES, annotations_for
from scheduler.podspec import PodRequest
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import ApiError, KubeApi

log = logging.getLogger("gpupack.bind")


@dataclass(frozen=True, slots=True)
class BindResult:
    """`error` empty on success; `outcome` is ok, failed or conflict (the metric's label)."""

    error: str
    outcome: str


class Binder:
    """Binds pods to nodes with exact devices, against a KubeApi."""

    def __init__(self, state: ClusterState, api: KubeApi, on_result: Callable[[BindResult], None] | None = None,
                 hook: Callable[[str], None] | None = None) -> None:
        self.state = state
        self.api = api
        self.on_result = on_result
        self.hook = hook  # test seam: called with the step name before each API call
        self.on_failed: Callable[[str, str, str, str, str], None] | None = None  # (ns, name, uid, node, error)
        # under the node and state locks: the devices reserved for the pod (a pod group's plan), a refusal, or None
        self.reservation: Callable[[str, PodRequest, str], Placement | str | None] | None = None
        self._node_locks: dict[str, threading.Lock] = {}
        self._inflight: set[str] = set()
        self._guard = threading.Lock()

    def _node_lock(self, node: str) -> threading.Lock:
        with self._guard:
            return self._node_locks.setdefault(node, threading.Lock())

    def bind(self, namespace: str, name: str, uid: str, node: str) -> BindResult:
        with self._guard:
            if uid in self._inflight:
                return self._done(f"gpupack: a bind of pod {namespace}/{name} is already in progress", "conflict")
            self._inflight.add(uid)
        try:
            r = self._done(*self._bind(namespace, name, uid, node))
            if r.error and self.on_failed is not None:  # an Event on the pod says why (scheduler/events.py)
                self.on_failed(namespace, name, uid, node, r.error)
            return r
        finally:
            with self._guard:
                self._inflight.discard(uid)

    def _done(self, error: str, outcome: str) -> BindResult:
        r = BindResult(error, outcome)
        if self.on_result is not None:
            self.on_result(r)
        return r

    def _bind(self, ns: str, name: str, uid: str, node: str) -> tuple[str, str]:
        pod = f"{ns}/{name}"
        booked = self.state.booking(uid)
        if booked is not None and (not booked.assumed or booked.confirmed):
            if booked.node == node:
                return "", "ok"  # bound before: answered from the ledger, never booked twice
            return f"gpupack: pod {pod} is already bound to {booked.node}", "conflict"
        entry = self.state.pod(uid)
        if entry is not None and entry.node:
            if entry.node == node:
                return "", "ok"
            return f"gpupack: pod {pod} is already bound to {entry.node}", "conflict"
        req = self.state.request_for(uid)
        if req is None:
            return f"gpupack: pod {pod} is unknown (no filter call for it and not seen by the watch)", "failed"
        if not req.managed:
            return self._post_binding(ns, name, uid, node, {})
        with self._node_lock(node), self.state.lock:  # the newest ledger, checked and booked at once
            view = self.state.view()
            snap = view.snapshot
            if node not in snap.static.index:
                return f"gpupack: node {node} is unknown to gpupack (no inventory yet)", "failed"
            held = self.reservation(uid, req, node) if self.reservation is not None else None
            if isinstance(held, str):
                return held, "conflict"
            p = held or place(snap, req.demand, node, view.mix)  # reserved devices are already booked
            if p is None:
                why = fit(snap, req.demand).message(snap.node_index(node))
                return f"gpupack: pod {pod} no longer fits on {node}: {why}", "conflict"
            try:
                if held is None:
                    self.state.assume(uid, p, req)
            except Conflict as e:
                return f"gpupack: pod {pod} could not be booked on {node}: {e}", "conflict"
            inv = self.state.node(node)
        assert inv is not None
        annotations = annotations_for(req, p, inv, bound_ns=time.time_ns())  # orders same-second binds for the agent
        return self._post_binding(ns, name, uid, node, annotations, keep=held is not None)

    def _post_binding(self, ns: str, name: str, uid: str, node: str, ann: dict[str, str],
                      keep: bool = False) -> tuple[str, str]:
        pod = f"{ns}/{name}"
        patched = False
        try:
            if ann:
                self._step("patch")
                try:
                    self.api.patch_pod_annotations(ns, name, uid, dict(ann))
                finally:
                    patched = True  # even a failed or timed-out patch may have landed: undo it
            self._step("bind")
            try:
                self.api.create_binding(ns, name, uid, node)
            except ApiError as e:
                if not self._bound_as_asked(ns, name, uid, node, ann):
                    raise
                log.info("bind %s: %s, but the pod is bound to %s as asked", pod, e, node)
        except ApiError as e:
            self._undo(ns, name, uid, ann if patched else {}, keep)
            outcome = "conflict" if e.status == 409 else "failed"
            return f"gpupack: binding {pod} to {node} failed: {e.message or e}", outcome
        self.state.confirm(uid)
        return "", "ok"

    def _bound_as_asked(self, ns: str, name: str, uid: str, node: str, ann: dict[str, str]) -> bool:
        """After a 409 or a timeout: is the pod bound to this node with our devices record?"""
        try:
            self._step("confirm")
            obj = self.api.get_pod(ns, name)
        except ApiError:
            return False
        if obj is None or (obj.get("metadata") or {}).get("uid") != uid:
            return False
        got = ((obj.get("metadata") or {}).get("annotations") or {}).get(DEVICES)
        return (obj.get("spec") or {}).get("nodeName") == node and got == ann.get(DEVICES)

    def _undo(self, ns: str, name: str, uid: str, ann: dict[str, str], keep: bool = False) -> None:
        """Forget the assumption and take our annotations off again (best effort, with a timeout).
        `keep`: a reservation stays until its deadline, so kube-scheduler's retry gets the same devices."""
        if not keep:
            self.state.unassume(uid)
        if not ann:
            return
        try:
            self._step("undo")
            self.api.patch_pod_annotations(ns, name, uid, dict.fromkeys(ann))
        except ApiError as e:
            # harmless: a record on an unbound pod is ignored; the next bind overwrites it
            log.warning("bind %s/%s: could not remove the devices annotations: %s", ns, name, e)

    def _step(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)
