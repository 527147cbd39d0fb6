"""ClusterState: what gpupack knows of the cluster, fed by list/watch and read by the verbs.

Nodes become binpack Nodes (inventory annotation or GFD labels, scheduler/translate/inventory.py); pods
become bookings (bound, non-terminal pods with `gpupack.io/devices`, scheduler/translate/devices.py) or
foreign whole GPUs (bound pods holding nvidia.com/gpu without that record). Watch events are queued
by the watcher threads and applied in order under one lock; every verb drains the queue first, so
filter never answers from a state older than the events gpupack has received. DRA (scheduler/dra)
plugs in through `handlers` (more kinds), `node_hook`, `translate` and `claimed_by`, and books its claims
through state/claims.py. Node heartbeats that
change nothing gpupack reads are skipped before parsing. The workload mix is learned from every
pod seen, once per pod UID.

The one gate: no module outside scheduler/state touches the ledger, the lock or the pods; they ask these
methods (`holds`, `holdings`, `reserve_all`, `group_bookings`, `release_group`, `renew`, `book_claims`,
`atomic`...). The lock
is made by state/locks.py, which holds the lock order.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import orjson

from binpack import Conflict, DemandKind, Mix, MixLearner, Node, Placement, Snapshot, allocate, set_foreign
from scheduler.state.claims import ClaimBookings
from scheduler.state.group_state import PodGroupState
from scheduler.state.holdings import Hold, NodeHoldings
from scheduler.state.kubeapi import Obj, WatchEvent
from scheduler.state.ledger import Booking, Ledger
from scheduler.state.locks import STATE, ordered
from scheduler.state.parsed import MAX_ERROR, TERMINAL, Parsed, PodEntry, node_key, pod_claims_view
from scheduler.translate.devices import InvalidDevices, placement_from
from scheduler.translate.inventory import InvalidInventory, node_from_k8s
from scheduler.translate.pod import InvalidPod, PodRequest, PodShape, read_pod, whole_gpus_held


@dataclass(frozen=True)
class StateView:
    """One consistent reading of the state for a request."""

    snapshot: Snapshot
    invalid: Mapping[str, str]  # node name -> why its inventory cannot be read
    mix: Mix
    ready: bool


RAW_CACHE_BYTES = 64 * 2**20  # demo mode's raw pods (bind adopts them), bounded by their JSON size


class ClusterState(PodGroupState, ClaimBookings):
    """Nodes, pods, the ledger and the learned mix, behind one lock."""

    def __init__(self, assume_ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 mix_refresh_s: float = 2.0, request_cache: int = 4096, keep_raw: bool = False,
                 raw_cache_bytes: int = RAW_CACHE_BYTES) -> None:
        self.lock = ordered(STATE, threading.RLock())  # others hold it only through atomic()
        self.clock = clock
        self.assume_ttl_s = assume_ttl_s
        self.ledger = Ledger()
        self.synced = {"nodes": False, "pods": False}
        self.on_event_lag: Callable[[float], None] | None = None
        self._init_groups()
        # further kinds (DRA's resourceslices, resourceclaims: scheduler/dra) applied from the same queue
        self.handlers: dict[str, Callable[[WatchEvent | list[Obj]], None]] = {}
        self.node_hook: Callable[[Node], Node] | None = None  # the ledger's node from the parsed one (DRA slices)
        self.translate: Callable[[Obj, PodRequest], PodRequest] | None = None  # a pod's request, with its claims
        self.claimed_by: Callable[[str], list[Placement]] | None = None  # devices only this pod's claims hold
        self._inbox: deque[tuple[str, WatchEvent | list[Obj], float]] = deque()
        self._node_keys: dict[str, tuple[Any, ...]] = {}
        self._invalid: dict[str, str] = {}
        self._pods: dict[str, PodEntry] = {}
        self._learner = MixLearner()
        self._observed: OrderedDict[str, None] = OrderedDict()
        self._mix = self._learner.mix()
        self._mix_at = -1e18
        self._mix_refresh_s = mix_refresh_s
        self._requests: OrderedDict[str, Parsed] = OrderedDict()
        self._request_cache = request_cache
        # the raw pods the verbs were sent, only where bind must adopt them (demo and standalone mode,
        # where no API server holds them), bounded by their JSON size
        self.keep_raw = keep_raw
        self._raw: OrderedDict[str, tuple[Obj, int]] = OrderedDict()
        self._raw_bytes = 0
        self._raw_cap = raw_cache_bytes

    # -- the watch side ---------------------------------------------------------------------------------
    def push(self, kind: str, event: WatchEvent) -> None:
        """Queue one watch event ("nodes" or "pods") and apply whatever is queued."""
        self._inbox.append((kind, event, self.clock()))
        self.drain()

    def replace(self, kind: str, items: list[Obj]) -> None:
        """A fresh list: the state for that kind becomes exactly these objects."""
        self._inbox.append((kind, items, self.clock()))
        self.drain()

    def drain(self) -> None:
        with self.lock:
            while self._inbox:
                kind, what, t = self._inbox.popleft()
                if kind in self.handlers:
                    self.handlers[kind](what)
                    if isinstance(what, list):
                        self.synced[kind] = True
                elif isinstance(what, list):
                    self._relist(kind, what)
                elif kind == "nodes":
                    self._node_event(what)
                else:
                    self._pod_event(what)
                if self.on_event_lag is not None:
                    self.on_event_lag(self.clock() - t)

    def _relist(self, kind: str, items: list[Obj]) -> None:
        if kind == "nodes":
            self._node_keys.clear()
            self._invalid.clear()
            self.ledger.set_nodes({})
            for obj in items:
                self._put_node(obj)
        else:
            seen = {str((o.get("metadata") or {}).get("uid") or "") for o in items}
            for uid in [u for u in self._pods if u not in seen]:
                self._set_pod(uid, None)
            for obj in items:
                self._pod_event(WatchEvent("ADDED", obj))
        self.synced[kind] = True

    def _node_event(self, ev: WatchEvent) -> None:
        name = str((ev.obj.get("metadata") or {}).get("name") or "")
        if ev.type == "DELETED":
            self._node_keys.pop(name, None)
            self._invalid.pop(name, None)
            self.ledger.drop_node(name)
        elif ev.type in ("ADDED", "MODIFIED"):
            self._put_node(ev.obj)

    def _put_node(self, obj: Obj) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        key = node_key(obj)
        if not name or self._node_keys.get(name) == key:
            return
        self._node_keys[name] = key
        try:
            node = node_from_k8s(obj)
        except InvalidInventory as e:
            self._invalid[name] = str(e)
            self.ledger.drop_node(name)
            return
        self._invalid.pop(name, None)
        self.ledger.put_node(self.node_hook(node) if self.node_hook is not None else node)

    def _pod_event(self, ev: WatchEvent) -> None:
        meta = ev.obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not uid or ev.type not in ("ADDED", "MODIFIED", "DELETED"):
            return
        self._set_pod(uid, None if ev.type == "DELETED" else self._entry(uid, ev.obj), ev.obj)

    def _entry(self, uid: str, obj: Obj) -> PodEntry:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        try:
            req: PodRequest | None = read_pod(obj)
        except InvalidPod:
            req = None
        node = str(spec.get("nodeName") or "")
        try:
            placement = placement_from(meta.get("annotations") or {})
        except InvalidDevices:
            placement = None
        if placement is not None and placement.node != node:
            placement = None  # a record for another node (a failed bind's leftover): not this pod's devices
        foreign = 0
        if placement is None and not (obj.get("status") or {}).get("extendedResourceClaimStatus"):
            # (a pod whose nvidia.com/gpu a DRA claim serves holds that claim's devices, booked by scheduler/dra)
            foreign = req.demand.count if req and req.demand.kind is DemandKind.WHOLE else whole_gpus_held(obj)
        if req is not None and self.translate is not None and not node and spec.get("resourceClaims"):
            # a pending claim pod asks what its claims ask (scheduler/dra): pod groups plan members with it
            req = self.translate(obj, req)
        if req is not None and req.managed:
            self._observe(uid, req)
        return PodEntry(uid, str(meta.get("namespace") or ""), str(meta.get("name") or ""), node,
                        str((obj.get("status") or {}).get("phase") or ""), req, placement, foreign,
                        str(meta.get("creationTimestamp") or ""))

    def _set_pod(self, uid: str, new: PodEntry | None, obj: Obj | None = None) -> None:
        old = self._pods.pop(uid, None)
        if new is not None:
            self._pods[uid] = new
        if old is not None and old.active:
            self.ledger.add_foreign(old.node, -old.foreign)
        if new is not None and new.active:
            self.ledger.add_foreign(new.node, new.foreign)
        cur = self.ledger.get(uid)
        if new is not None and new.active and new.placement is not None:
            demand = new.request.demand if new.request else None
            self.ledger.put(Booking(uid, new.placement, demand))
        elif cur is not None and (new is None or new.node or new.phase in TERMINAL or not cur.assumed):
            # deleted, finished, bound without our record, or a stale record: its devices are free
            self.ledger.drop(uid, bound=new is not None and new.active)
        self._index_member(uid, new)

    def replace_request(self, uid: str, req: PodRequest) -> None:
        """A pending pod's request changed without a pod event (scheduler/dra: its claims arrived): its entry,
        and pod groups' index of it, follow. Under the state's lock, from its event queue."""
        old = self._pods.get(uid)
        if old is not None and not old.node:
            self._set_pod(uid, replace(old, request=req))

    def _observe(self, uid: str, req: PodRequest) -> None:
        if uid in self._observed:
            return
        self._observed[uid] = None
        if len(self._observed) > 200_000:
            self._observed.popitem(last=False)
        self._learner.observe(req.demand)

    def atomic(self) -> AbstractContextManager[Any]:
        """Hold the state still across several calls (re-entrant; the lock order is in state/locks.py)."""
        return self.lock

    # -- the request side -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return all(self.synced.values())

    def view(self) -> StateView:
        """Apply queued events, expire old assumptions, and read the newest snapshot."""
        with self.lock:
            self.drain()
            self.expire()
            now = self.clock()
            if now - self._mix_at >= self._mix_refresh_s:
                # the mix moves slowly; refreshing it per pod would defeat the score cache
                self._mix, self._mix_at = self._learner.mix(), now
            return StateView(self.ledger.snapshot(), dict(self._invalid), self._mix, self.ready)

    def request(self, pod: Obj) -> PodRequest:
        """The pod's request, parsed once per (UID, resourceVersion); InvalidPod when malformed, PodShape
        (never cached) when the object is not shaped like a pod."""
        meta = pod.get("metadata") if isinstance(pod, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        uid, rv = str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")
        with self.lock:
            hit = self._requests.get(uid) if uid else None
            if hit is not None and hit.rv == rv:
                self._requests.move_to_end(uid)
            else:
                created = str(meta.get("creationTimestamp") or "")[:64]
                try:
                    hit = Parsed(rv, read_pod(pod), "", created, pod_claims_view(pod))
                except PodShape:
                    raise  # not a pod at all: a bad request (400) that leaves no trace here
                except InvalidPod as e:
                    hit = Parsed(rv, None, str(e)[:MAX_ERROR], created)
                if uid:
                    self._requests[uid] = hit
                    if len(self._requests) > self._request_cache:
                        self._requests.popitem(last=False)
                    if self.keep_raw:
                        self._keep_raw(uid, pod)
                    if hit.request is not None and hit.request.managed:
                        self._observe(uid, hit.request)
        if hit.request is None:
            raise InvalidPod(hit.error)
        if self.translate is None or hit.claims is None:  # a pod naming no claim: nothing to translate
            return hit.request
        req = self.translate(pod, hit.request)  # DRA: a claim-only pod's demand, from its claims
        if req is not hit.request and req.managed:
            with self.lock:
                self._observe(uid, req)
        return req

    def request_for(self, uid: str) -> PodRequest | None:
        """The request of a pod by UID: from the verbs' cache, else from the watched pods."""
        with self.lock:
            hit = self._requests.get(uid)
            if hit is not None:
                if hit.request is not None and self.translate is not None and hit.claims is not None:
                    return self.translate(hit.claims, hit.request)
                return hit.request
            entry = self._pods.get(uid)
            return entry.request if entry is not None else None

    def _keep_raw(self, uid: str, pod: Obj) -> None:
        old = self._raw.pop(uid, None)
        if old is not None:
            self._raw_bytes -= old[1]
        size = len(orjson.dumps(pod))
        if size > self._raw_cap:
            return
        self._raw[uid] = (pod, size)
        self._raw_bytes += size
        while self._raw_bytes > self._raw_cap:
            _, (_, n) = self._raw.popitem(last=False)
            self._raw_bytes -= n

    def claims_view(self, uid: str) -> Obj | None:
        """The claim fields of a pod the verbs were sent (spec.resourceClaims, its claim statuses), kept for
        every pod that names a claim even when raw pods are not kept; None for a pod naming none."""
        with self.lock:
            hit = self._requests.get(uid)
            if hit is not None and hit.claims is not None:
                return hit.claims
            raw = self._raw.get(uid)
        return pod_claims_view(raw[0]) if raw is not None else None

    def raw_pod(self, uid: str) -> Obj | None:
        """The pod object a verb was last sent for this UID (kept with keep_raw: demo mode binds it
        into memory); None when not kept."""
        with self.lock:
            hit = self._raw.get(uid)
            return hit[0] if hit is not None else None

    def created(self, uid: str) -> str:
        """The creationTimestamp of a pod the verbs were sent ("" when unknown)."""
        with self.lock:
            hit = self._requests.get(uid)
            return hit.created if hit is not None else ""

    def pod(self, uid: str) -> PodEntry | None:
        with self.lock:
            return self._pods.get(uid)

    def node(self, name: str) -> Node | None:
        with self.lock:
            return self.ledger.nodes.get(name)

    # -- assumptions (bind, and later pod groups) ---------------------------------------------------------
    def assume(self, uid: str, placement: Placement, req: PodRequest | None, ttl_s: float | None = None) -> None:
        """Book the placement for the pod until confirmed or expired; Conflict if it does not fit now."""
        with self.lock:
            deadline = self.clock() + (self.assume_ttl_s if ttl_s is None else ttl_s)
            self.ledger.assume(Booking(uid, placement, req.demand if req else None, True, deadline))

    def confirm(self, uid: str) -> None:
        """The Binding exists: keep the assumption until the watch shows the pod bound (or it expires)."""
        with self.lock:
            b = self.ledger.get(uid)
            if b is not None and b.assumed:
                self.ledger.update(uid, confirmed=True, unsettled=False, deadline=self.clock() + self.assume_ttl_s)

    def unsettle(self, uid: str) -> None:
        """Whether the Binding exists is unknown: keep the devices booked with no expiry. The watch settles
        it (pod bound, deleted or finished), or a later bind of the pod does; nothing else frees it, since a
        pod bound without its record must never see its devices handed to another pod. The deadline is
        when a bind of the pod to another node may give the booking up (after a read-back shows it unbound)."""
        with self.lock:
            b = self.ledger.get(uid)
            if b is not None and b.assumed:
                self.ledger.update(uid, unsettled=True, confirmed=False, deadline=self.clock() + self.assume_ttl_s)

    def unassume(self, uid: str, settled: bool = False) -> None:
        """Forget an assumption. An unsettled one is only forgotten when the caller `settled` it (knows
        that the pod's Binding does not exist and never will)."""
        with self.lock:
            b = self.ledger.get(uid)
            if b is not None and b.assumed and (settled or not b.unsettled):
                self.ledger.drop(uid)

    def expire(self) -> int:
        """Drop assumptions past their deadline (never an unsettled one); how many."""
        with self.lock:
            now = self.clock()
            old = [u for u in self.ledger.assumed
                   if self.ledger.bookings[u].deadline < now and not self.ledger.bookings[u].unsettled]
            for u in old:
                self.ledger.drop(u)
            return len(old)

    def booking(self, uid: str) -> Booking | None:
        with self.lock:
            return self.ledger.get(uid)

    def assumed(self) -> dict[str, Booking]:
        with self.lock:
            return {u: self.ledger.bookings[u] for u in self.ledger.assumed}

    def pending(self) -> list[PodEntry]:
        """GPU pods not bound to a node and not finished, bind in flight excluded (the metrics read them)."""
        with self.lock:
            return [p for p in self._pods.values() if not p.node and p.phase not in TERMINAL
                    and p.request is not None and p.request.managed and self.ledger.get(p.uid) is None]

    def pods_on(self, node: str) -> list[PodEntry]:
        with self.lock:
            return [p for p in self._pods.values() if p.node == node and p.active]

    # -- what pods hold (preempt) ------------------------------------------------------------------------
    def holds(self, node: str, uids: Iterable[str]) -> tuple[list[Hold], set[str]]:
        """Of these pods, those holding devices gpupack counts on `node` (state/holdings.py), and the UIDs of
        the others (proposed as victims for what only kube-scheduler sees: CPU, memory, pod count)."""
        holds: list[Hold] = []
        others: set[str] = set()
        with self.lock:
            self.ledger.snapshot()  # `applied` is current only with the snapshot
            for uid in uids:
                b = self.ledger.get(uid)
                entry = self._pods.get(uid)
                prio = entry.request.priority if entry is not None and entry.request is not None else None
                if b is not None and b.node == node and uid in self.ledger.applied:
                    holds.append(Hold(uid, b.placement, 0, prio))
                elif entry is not None and entry.active and entry.node == node and entry.foreign:
                    holds.append(Hold(uid, None, entry.foreign, prio))
                elif claimed := [p for p in (self.claimed_by(uid) if self.claimed_by else ()) if p.node == node]:
                    holds.append(Hold(uid, None, 0, prio, tuple(claimed)))  # evicted, its claims are deallocated
                else:
                    others.add(uid)
        return holds, others

    def holdings(self, node: str) -> NodeHoldings | None:
        """The node on its own: a one-node snapshot with the bookings and foreign GPUs the ledger has there, so a
        preempt check costs one node's fit, not the cluster's; None for a node the ledger does not have."""
        with self.lock:
            inv = self.ledger.nodes.get(node)
            if inv is None:
                return None
            base = Snapshot.build([inv])
            for b in self.ledger.on_node(node):
                try:
                    base = allocate(base, b.placement)
                except Conflict:  # cannot happen for applied bookings; never let it abort preemption
                    continue
            foreign = self.ledger.foreign.get(node, 0)
        return NodeHoldings(set_foreign(base, node, foreign) if foreign else base, foreign)
