"""DraState: ResourceSlices and ResourceClaims, kept in step with ClusterState's ledger.

Slices replace the GPUs of their node (the Node object still gives CPU and memory), so the ledger's
node is the one DRA allocates from; claims with an allocation are bookings (`claim:<uid>:<n>`, one
per node and device kind), whoever allocated them, so DRA pods and device-plugin pods never share a
device in gpupack's view. A claim whose allocation goes away, or that is deleted, frees its devices.
A slice change re-books the claims of its pools (device names may now map elsewhere). Everything
here runs under ClusterState's lock (from its event queue, or inside `state.atomic()`), and reaches the
ledger only through ClusterState's methods (state/claims.py: `book_claims`, `refresh_node`...). Per slice
or claim, what cannot be read is logged once (per resourceVersion) and left out; nothing here raises into
the watch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from binpack import Node, Placement
from scheduler.dra.allocate import NodeDevices
from scheduler.dra.cel import device_env
from scheduler.dra.claims import Claim, InvalidClaim, placements, read_claim
from scheduler.dra.demand import claim_refs, claims_demand
from scheduler.dra.nvlink import nvlink_by_uuid
from scheduler.dra.slices import DRIVER, DraInventory, InvalidSlice, ParsedSlice, inventory, parse_slice
from scheduler.logfmt import about
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import Obj, WatchEvent
from scheduler.translate.pod import PodRequest

log = logging.getLogger("gpupack.dra")
SLICES, CLAIMS = "resourceslices", "resourceclaims"
POD_CLAIM_NAME = "resource.kubernetes.io/pod-claim-name"


class DraState:
    """The DRA half of the cluster state. `install` hooks it into a ClusterState."""

    def __init__(self, state: ClusterState, request_cache: int = 4096) -> None:
        self.state = state
        self.slices: dict[str, ParsedSlice] = {}
        self._slice_objs: dict[str, Obj] = {}  # allocate mode reads the devices' attributes and capacities
        self._node_devices: dict[str, NodeDevices] = {}
        self.claim_objs: dict[str, Obj] = {}  # claim uid -> as last read (allocate mode reads its spec)
        # claim uid -> the allocation an in-flight bind wrote (allocate mode): older events do not undo it
        self._assumed: dict[str, Obj] = {}
        self.inventories: dict[str, DraInventory] = {}
        self.claims: dict[str, Claim] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._pools: dict[str, str] = {}  # pool -> node, from the slices
        self._by_pool: dict[str, set[str]] = {}  # pool -> uids of allocated claims with devices there
        self._reserved: dict[str, set[str]] = {}  # pod uid -> uids of claims reserved for it
        self._keys: dict[str, tuple[str, ...]] = {}  # claim uid -> its booking keys
        self._base: dict[str, Node] = {}  # node -> as its Node object says (CPU, memory, GPUs from labels)
        self._said: set[tuple[str, str, str]] = set()  # (object uid, resourceVersion, message) already logged
        self._demands: OrderedDict[tuple[str, str, tuple[str, ...]], PodRequest] = OrderedDict()
        self._request_cache = request_cache
        # pod uid -> (the pod or its claims view, its request before translation), for every pod translated: a
        # claim that arrives after its pod (a relist lists pods first; the resourceclaim controller makes claims
        # after the pod) re-translates the pending ones; bounded, and bound or deleted pods leave at once
        self._waiting: OrderedDict[str, tuple[Obj, PodRequest]] = OrderedDict()

    def install(self) -> None:
        """Feed slice and claim events through the state's queue; translate claim pods at the edge."""
        st = self.state
        st.handlers[SLICES] = self._on_slices
        st.handlers[CLAIMS] = self._on_claims
        st.synced.setdefault(SLICES, False)
        st.synced.setdefault(CLAIMS, False)
        st.node_hook = self._node
        st.translate = self.translate
        st.claimed_by = self.claimed_by

    # -- nodes and slices -------------------------------------------------------------------------------
    def is_dra_node(self, name: str) -> bool:
        with self.state.atomic():
            return name in self.inventories

    def _node(self, node: Node) -> Node:
        """The ledger's node: GPUs from the node's slices when it has any (ClusterState's node hook)."""
        self._base[node.name] = node
        inv = self.inventories.get(node.name)
        if inv is None:
            return node
        # the driver publishes no NVLink: the agent's annotation gives it when it runs there too (nvlink.py)
        return replace(node, gpus=inv.gpus, nvlink=nvlink_by_uuid(node, inv.gpus), pcie=inv.pcie)

    def _on_slices(self, what: WatchEvent | list[Obj]) -> None:
        touched: set[str] = set()
        if isinstance(what, list):
            touched = {s.node for s in self.slices.values()}
            self.slices.clear()
            self._slice_objs.clear()
            for obj in what:
                touched |= self._put_slice(obj)
        else:
            name = str(_meta(what.obj).get("name") or "")
            old = self.slices.pop(name, None)
            self._slice_objs.pop(name, None)
            if old is not None:
                touched.add(old.node)
            if what.type in ("ADDED", "MODIFIED"):
                touched |= self._put_slice(what.obj)
        for node in sorted(touched):
            self._rebuild(node)

    def _put_slice(self, obj: Obj) -> set[str]:
        meta = _meta(obj)
        try:
            s = parse_slice(obj)
        except InvalidSlice as e:
            self._say(meta, f"ignored: {e}")
            return set()
        for why in s.skipped:
            self._say(meta, f"resourceslice {s.name}: {why}")
        if s.driver != DRIVER:
            return set()
        self.slices[s.name] = s
        self._slice_objs[s.name] = obj
        return {s.node}

    def _rebuild(self, node: str) -> None:
        """Recompute the node's inventory from its newest-generation slices; re-put it, re-book its claims."""
        mine = [s for s in self.slices.values() if s.node == node]
        newest: dict[str, int] = {}
        for s in mine:
            newest[s.pool] = max(newest.get(s.pool, 0), s.generation)
        live = [s for s in mine if s.generation == newest[s.pool]]  # older generations are being replaced
        pools = {p for p, n in self._pools.items() if n == node} | set(newest)
        for p in pools:
            self._pools.pop(p, None)
        if live:
            inv = inventory(d for s in sorted(live, key=lambda s: s.name) for d in s.devices)
            for why in inv.skipped:
                log.warning("node %s: DRA device left out: %s", node, why, extra=about(node=node))
            self.inventories[node] = inv
            self._pools.update((s.pool, node) for s in live)
        else:
            self.inventories.pop(node, None)
        if node in self._base:
            self.state.refresh_node(self._node(self._base[node]))
        for uid in sorted({u for p in pools for u in self._by_pool.get(p, ())}):
            self._book(self.claims[uid])

    def node_devices(self, node: str) -> NodeDevices | None:
        """The node's devices for allocate mode (inventory places, slice JSON, CEL view); None without slices."""
        with self.state.atomic():
            inv = self.inventories.get(node)
            if inv is None:
                return None
            hit = self._node_devices.get(node)
            if hit is not None and hit.inventory is inv:
                return hit
            mine = [s for s in self.slices.values() if s.node == node]
            newest = {s.pool: max(t.generation for t in mine if t.pool == s.pool) for s in mine}
            raw: dict[str, Obj] = {}
            pools: dict[str, str] = {}
            for s in sorted(mine, key=lambda s: s.name):
                if s.generation != newest[s.pool]:
                    continue
                for d in ((self._slice_objs.get(s.name) or {}).get("spec") or {}).get("devices") or []:
                    if isinstance(d, Mapping) and d.get("name") in inv.devices:
                        raw[str(d["name"])] = dict(d)
                        pools[str(d["name"])] = s.pool
            env = {n: device_env(DRIVER, d) for n, d in raw.items()}
            nd = self._node_devices[node] = NodeDevices(node, inv, raw, env, pools)
            return nd

    def _node_of_pool(self, pool: str) -> str:
        return self._pools.get(pool, "")

    # -- claims -----------------------------------------------------------------------------------------
    def _on_claims(self, what: WatchEvent | list[Obj]) -> None:
        if isinstance(what, list):
            assumed = dict(self._assumed)  # in-flight binds' allocations outlive a relist that predates them
            for uid in list(self.claims):
                self._drop_claim(uid)
            self._assumed.update(assumed)
            for obj in what:
                self._put_claim(obj)
            for uid, obj in assumed.items():
                if uid in self._assumed and uid not in self.claims:
                    self._put_claim(obj)
            self._retranslate(None)
            return
        if what.type == "DELETED":
            self._drop_claim(str(_meta(what.obj).get("uid") or ""))
        elif what.type in ("ADDED", "MODIFIED"):
            self._put_claim(what.obj)
        self._retranslate(what.obj)

    def _retranslate(self, claim: Obj | None) -> None:
        """Pending pods using this claim (None: any claim) ask what their claims ask now: the watch's entry, and
        so pod groups' members, follow (ClusterState.replace_request)."""
        meta = _meta(claim) if claim is not None else {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        owners = {str(o.get("uid")) for o in meta.get("ownerReferences") or [] if isinstance(o, Mapping)}
        for uid, (obj, base) in list(self._waiting.items()):
            entry = self.state.pod(uid)
            if entry is None or entry.node:
                if entry is not None:  # bound: its claims are bookings now, not its demand
                    del self._waiting[uid]
                continue  # not seen by the watch yet (filter came first): its pod event translates it
            if claim is not None and uid not in owners and \
                    not any((entry.namespace, n) == key for n in claim_refs(obj).names):
                continue
            req = self._translate(obj, base, self._claim_names(obj, base))
            if req != entry.request:
                self.state.replace_request(uid, req)

    def adopt(self, obj: Obj) -> None:
        """A claim read at bind, newer than the watch may have brought yet: the truth from now on."""
        with self.state.atomic():
            self.state.drain()
            self._put_claim(obj)

    def assume_claim(self, obj: Obj) -> None:
        """Allocate mode: the claim as a bind is writing it (allocated); its devices are taken at once and stay
        taken while the watch still brings the claim's older states, until `forget_claim` or a newer state."""
        with self.state.atomic():
            self.state.drain()
            uid = str(_meta(obj).get("uid") or "")
            self._assumed[uid] = obj
            self._put_claim(obj)

    def forget_claim(self, uid: str, back_to: Obj | None = None) -> None:
        """Undo `assume_claim` (the writes failed): the claim as it was before, or as the watch said last."""
        with self.state.atomic():
            self._assumed.pop(uid, None)
            if back_to is not None:
                self._put_claim(back_to)

    def _put_claim(self, obj: Obj) -> None:
        try:
            c = read_claim(obj)
        except InvalidClaim as e:
            self._say(_meta(obj), f"ignored: {e}")
            return
        assumed = self._assumed.get(c.uid)
        if assumed is not None and assumed is not obj:
            if not c.allocated and not _newer(c.resource_version, str(_meta(assumed).get("resourceVersion") or "")):
                return  # an older state than the one our bind wrote: the devices stay taken
            del self._assumed[c.uid]
        self.claim_objs[c.uid] = obj
        old = self.claims.get(c.uid)
        if old is not None and old == c:
            return
        self.claims[c.uid] = c
        self._by_name[(c.namespace, c.name)] = c.uid
        if old is not None:
            self._unindex(old)
        for r in c.results:
            self._by_pool.setdefault(r.pool, set()).add(c.uid)
        for pod in c.reserved_for:
            self._reserved.setdefault(pod, set()).add(c.uid)
        self._book(c)

    def _unindex(self, c: Claim) -> None:
        for r in c.results:
            self._by_pool.get(r.pool, set()).discard(c.uid)
        for pod in c.reserved_for:
            held = self._reserved.get(pod)
            if held is not None:
                held.discard(c.uid)
                if not held:
                    del self._reserved[pod]

    def _drop_claim(self, uid: str) -> None:
        self._assumed.pop(uid, None)
        self.claim_objs.pop(uid, None)
        c = self.claims.pop(uid, None)
        if c is None:
            return
        self._by_name.pop((c.namespace, c.name), None)
        self._unindex(c)
        self.state.unbook_claims(self._keys.pop(uid, ()))

    def _book(self, c: Claim) -> None:
        """The claim's devices as ledger bookings (none when it is not allocated)."""
        ps, skipped = placements(c, self._node_of_pool, self.inventories) if c.allocated else ([], [])
        for why in skipped if self.state.synced.get(SLICES) else ():  # before the slices are listed, expected
            self._say({"uid": c.uid, "resourceVersion": c.resource_version,
                       "name": f"{c.namespace}/{c.name}"}, f"resourceclaim {c.namespace}/{c.name}: {why}")
        keys = tuple(f"claim:{c.uid}:{i}" for i in range(len(ps)))
        # a device someone else holds too: kept unapplied, counted in the ledger's conflicts
        gone = [k for k in self._keys.get(c.uid, ()) if k not in keys]
        self.state.book_claims(zip(keys, ps, strict=True), drop=gone)
        if keys:
            self._keys[c.uid] = keys
        else:
            self._keys.pop(c.uid, None)

    def claimed_by(self, pod_uid: str) -> list[Placement]:
        """The devices of the claims reserved for this pod alone (freed when it goes: the resourceclaim
        controller deallocates a claim nobody reserves), as applied in the ledger."""
        with self.state.atomic():
            out = []
            for uid in sorted(self._reserved.get(pod_uid, ())):
                c = self.claims.get(uid)
                if c is not None and c.reserved_for == (pod_uid,):
                    out += self.state.applied_placements(self._keys.get(uid, ()))
            return out

    def generated_claim(self, namespace: str, pod_uid: str, pod_claim: str) -> str:
        """The name of the claim the resourceclaim controller made for the pod's template claim `pod_claim`
        (owned by the pod, annotated with the pod claim's name), before the pod's status names it; "" if none."""
        with self.state.atomic():
            for obj in self.claim_objs.values():
                meta = _meta(obj)
                if str(meta.get("namespace") or "") != namespace:
                    continue
                owned = any(isinstance(o, Mapping) and o.get("uid") == pod_uid and o.get("controller")
                            for o in meta.get("ownerReferences") or [])
                ann = meta.get("annotations") or {}
                if owned and isinstance(ann, Mapping) and ann.get(POD_CLAIM_NAME) == pod_claim:
                    return str(meta.get("name") or "")
            return ""

    def claim(self, namespace: str, name: str) -> Claim | None:
        with self.state.atomic():
            uid = self._by_name.get((namespace, name))
            return self.claims.get(uid) if uid else None

    # -- pods -------------------------------------------------------------------------------------------
    def translate(self, pod: Obj, req: PodRequest) -> PodRequest:
        """The request of a pod that asks for GPUs through claims: their demand (ClusterState's translate hook)."""
        refs = claim_refs(pod)
        if not refs.names and not refs.pending:
            return req
        with self.state.atomic():
            self._waiting[req.uid] = (pod, req)
            self._waiting.move_to_end(req.uid)
            if len(self._waiting) > self._request_cache:
                self._waiting.popitem(last=False)
            return self._translate(pod, req, self._claim_names(pod, req))

    def _claim_names(self, pod: Obj, req: PodRequest) -> tuple[str, ...]:
        """The pod's claims by name; without DynamicResources (allocate mode) nothing waits for the pod's status
        to name those the resourceclaim controller made from its templates: found by owner and pod claim name."""
        refs = claim_refs(pod)
        return (*refs.names, *(self.generated_claim(req.namespace, req.uid, p) for p in refs.pending))

    def _translate(self, pod: Obj, req: PodRequest, names: tuple[str, ...]) -> PodRequest:
        ns = req.namespace
        found = [self.claims.get(self._by_name.get((ns, n), "")) for n in names]
        claims = [c for c in found if c is not None]
        key = (req.uid, str((pod.get("metadata") or {}).get("resourceVersion") or ""),
               tuple(f"{c.uid}@{c.resource_version}" for c in claims))
        hit = self._demands.get(key)
        if hit is not None:
            self._demands.move_to_end(key)
            return hit
        if len(claims) < len(names):
            missing = [n for n, c in zip(names, found, strict=True) if c is None]
            log.debug("pod %s/%s: claims %s not seen yet; DRA alone decides for now", ns, req.name, missing)
            return req  # not cached: the claims arrive soon
        out, why = claims_demand(req, claims)
        if why:
            log.info("pod %s/%s: %s", ns, req.name, why, extra=about(f"{ns}/{req.name}"))
        self._demands[key] = out
        if len(self._demands) > self._request_cache:
            self._demands.popitem(last=False)
        return out

    def _say(self, m: Mapping[str, Any], msg: str) -> None:
        key = (str(m.get("uid") or m.get("name") or ""), str(m.get("resourceVersion") or ""), msg)
        if key in self._said:
            return
        if len(self._said) > 100_000:
            self._said.clear()
        self._said.add(key)
        log.warning("DRA: %s", msg)


def _newer(rv: str, than: str) -> bool:
    """Whether resourceVersion `rv` is newer (etcd's are integers; anything else counts as newer)."""
    if rv.isdigit() and than.isdigit():
        return int(rv) > int(than)
    return True


def _meta(obj: Obj) -> Mapping[str, Any]:
    """The object's metadata, or {} when it is not an object (a bad event must not stop the queue)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    return meta if isinstance(meta, Mapping) else {}
