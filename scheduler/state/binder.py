"""The bind transaction: node lock, re-check against the newest ledger, assume, POST the Binding
with the `gpupack.io/devices` record in its annotations, confirm.

The Binding's annotations land in the same write as nodeName (kube-apiserver merges them), so a pod
is never bound without its record and there is nothing to undo: DESIGN.md's earlier PATCH-then-Binding
could leave a bound pod with no record after a timed-out Binding and a failed undo, its devices free.
kube-scheduler treats a bind answer of success as final, so success is answered only once the Binding
is known to exist (after an error the pod is read back). When that cannot be known (no answer, a server
error, an unreadable pod), the booking stays, unsettled, until the watch shows the pod bound, deleted
or finished, or a later bind of the pod settles it. The same pod UID bound twice is answered from the
ledger; a second bind of a UID whose bind is in flight is refused. The node lock only covers check +
assume: the assumption itself reserves the devices, so binds to one node overlap their API calls
without ever sharing a device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from binpack import Conflict, fit, place
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import ApiError, KubeApi, Obj
from scheduler.state.ledger import Booking
from scheduler.state.locks import NODE, ordered
from scheduler.state.plugin import Plugins
from scheduler.translate.devices import DEVICES, annotations_for

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
        # asked under the node and state locks (`reserve`): the devices reserved for the pod (a pod group's
        # plan), a refusal, or None; registered once by the app (scheduler/extender/app.py)
        self.plugins = Plugins()
        self._node_locks: dict[str, threading.Lock] = {}
        self._inflight: set[str] = set()
        self._guard = threading.Lock()

    def _node_lock(self, node: str) -> threading.Lock:
        with self._guard:
            lock = self._node_locks.get(node)
            if lock is None:
                lock = self._node_locks[node] = ordered(NODE, threading.Lock())
            return lock

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
        if booked is not None and booked.unsettled:
            settled = self._unsettled(ns, name, uid, node, booked)
            if settled is not None:
                return settled
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
            held = self.plugins.reserve(uid, req, node)
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

    def _unsettled(self, ns: str, name: str, uid: str, node: str, booked: Booking) -> tuple[str, str] | None:
        """A bind of a pod whose earlier Binding may exist. To the same node: POST again with the same
        devices (a 409 then means the first one landed). Elsewhere: only once the booking's deadline has
        passed and the pod reads back unbound is it given up (None: bind afresh)."""
        pod = f"{ns}/{name}"
        if booked.node == node:
            inv = self.state.node(node)
            req = self.state.request_for(uid)
            if inv is None or req is None:
                return f"gpupack: an earlier bind of {pod} to {node} is unsettled; retry later", "unknown"
            record = annotations_for(req, booked.placement, inv, bound_ns=time.time_ns())
            return self._post_binding(ns, name, uid, node, record, again=True)
        try:
            self._step("confirm")
            obj = self.api.get_pod(ns, name)
        except ApiError as e:
            return f"gpupack: an earlier bind of {pod} to {booked.node} is unsettled and the pod unreadable: {e}", \
                "unknown"
        if obj is not None and (obj.get("metadata") or {}).get("uid") != uid:
            obj = None  # recreated: the old pod's Binding cannot land on this one (its UID is checked)
        spec = (obj or {}).get("spec") or {}
        if obj is not None and spec.get("nodeName"):
            return f"gpupack: pod {pod} is already bound to {spec['nodeName']}", "conflict"  # the watch settles it
        if obj is not None and self.state.clock() < booked.deadline:
            return (f"gpupack: an earlier bind of {pod} to {booked.node} is unsettled; its devices stay booked "
                    "a while in case that Binding lands"), "unknown"
        self.state.unassume(uid, settled=True)  # long unbound (or gone): that Binding never landed
        return None

    def _post_binding(self, ns: str, name: str, uid: str, node: str, ann: dict[str, str],
                      keep: bool = False, again: bool = False) -> tuple[str, str]:
        """POST the Binding with the devices record in its annotations: one write binds and records, so
        there is nothing to undo. `again`: an earlier POST of this pod's Binding may have landed."""
        try:
            self._step("bind")
            self.api.create_binding(ns, name, uid, node, ann)
        except ApiError as e:
            return self._settle(ns, name, uid, node, ann, e, keep, again)
        self.state.confirm(uid)
        return "", "ok"

    def _settle(self, ns: str, name: str, uid: str, node: str, ann: dict[str, str], e: ApiError,
                keep: bool, again: bool) -> tuple[str, str]:
        """After a failed POST: read the pod back. Bound here with our record: success. Gone, bound
        elsewhere, or refused outright: the booking is freed. Otherwise (no answer, a server error, or a
        409 that may be our own earlier Binding) the Binding may exist or still land: the booking stays,
        unsettled, until the watch or a later bind settles it; it is never freed on a guess."""
        pod = f"{ns}/{name}"
        failed = f"gpupack: binding {pod} to {node} failed: {e.message or e}"
        try:
            self._step("confirm")
            obj: Obj | None = self.api.get_pod(ns, name)
            read = True
        except ApiError as r:
            log.warning("bind %s: %s, and reading the pod back failed: %s", pod, e, r)
            obj, read = None, False
        if read:
            meta = (obj or {}).get("metadata") or {}
            if obj is None or meta.get("uid") != uid:
                self._drop(uid, keep)
                return f"gpupack: binding {pod} to {node} failed: the pod is gone ({e.message or e})", "failed"
            bound = (obj.get("spec") or {}).get("nodeName")
            if bound == node and (meta.get("annotations") or {}).get(DEVICES) == ann.get(DEVICES):
                log.info("bind %s: %s, but the pod is bound to %s as asked", pod, e, node)
                self.state.confirm(uid)
                return "", "ok"
            if bound:  # bound by someone else, or elsewhere: these devices are not the pod's
                self._drop(uid, keep)
                return f"gpupack: pod {pod} is already bound to {bound}", "conflict"
            if not e.ambiguous:  # refused, and the pod is not bound: no Binding exists or will
                self._drop(uid, keep)
                return failed, "conflict" if e.status == 409 else "failed"
        elif not (e.ambiguous or again):
            self._drop(uid, keep)  # a first POST refused outright created nothing
            return failed, "conflict" if e.status == 409 else "failed"
        self.state.unsettle(uid)
        return (f"gpupack: binding {pod} to {node}: outcome unknown ({e.message or e}); its devices stay "
                "booked until the pod is seen bound or gone"), "unknown"

    def _drop(self, uid: str, keep: bool) -> None:
        """The Binding does not exist: free the booking. `keep`: a pod group's reservation stays until its
        deadline, so kube-scheduler's retry gets the same devices."""
        if not keep:
            self.state.unassume(uid, settled=True)

    def _step(self, name: str) -> None:
        if self.hook is not None:
            self.hook(name)
