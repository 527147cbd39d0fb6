"""Bind in allocate mode: gpupack is the only allocator of the GPU classes (the gpupack-scheduler profile
disables DynamicResources), so bind chooses the devices and writes the claims itself, as KAI-Scheduler does.

Order (tests/data/dra/README.md items 6 and 7): under the node lock, the pod's claims are read fresh, devices
are chosen for the unallocated ones against the newest ledger (allocate.py: all claims of the pod or none)
and booked at once (DraState.assume_claim: racing binds on the node see them taken). Then, per claim: PUT the
claim with the `resource.kubernetes.io/delete-protection` finalizer (without it the resourceclaim controller
never frees the devices), PUT `/status` with `allocation` (results with request, driver, pool, device; the
node's nodeSelector; `allocationTimestamp`, without which kube-scheduler can never use the claim) and
`reservedFor` the pod; then the Binding. Every write carries the resourceVersion read, so a claim changed
meanwhile is a 409, never an overwrite; the apiserver does not stop two claims naming one device (V2), only
gpupack's ledger does. Any failure reverts what was written (allocation cleared, our reservation and finalizer
removed, re-read first when a write timed out) and answers Error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from binpack import Placement, Snapshot, allocate
from scheduler.dra.allocate import (
    Allocation,
    ClaimSpec,
    NodeDevices,
    Unallocatable,
    allocate_claims,
    claim_spec,
    without,
)
from scheduler.dra.bind import ClaimBinder
from scheduler.dra.cel import CelRefused
from scheduler.dra.claims import InvalidClaim, read_claim
from scheduler.dra.demand import claim_refs, uses_claims
from scheduler.dra.group_alloc import siblings, within
from scheduler.dra.routing import Routing
from scheduler.dra.slices import DRIVER
from scheduler.dra.state import DraState
from scheduler.state.binder import BindResult
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import ApiError, DraApi, KubeApi, Obj

log = logging.getLogger("gpupack.dra")
FINALIZER = "resource.kubernetes.io/delete-protection"


@runtime_checkable
class ClaimWriter(Protocol):
    """The claim writes allocate mode needs (KubernetesApi and DraMemoryApi have them)."""

    def update_resource_claim(self, namespace: str, name: str, obj: Obj) -> Obj: ...

    def update_resource_claim_status(self, namespace: str, name: str, obj: Obj) -> Obj: ...


def node_selector(node: str) -> Obj:
    """The allocation's nodeSelector, in the form kube-scheduler writes (README item 5)."""
    return {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}


def allocation(results: list[tuple[str, str, str]], node: str, now: float) -> Obj:
    """status.allocation: one result per device (request, driver, pool, device), nodeSelector, timestamp."""
    return {"devices": {"results": [{"request": r, "driver": DRIVER, "pool": p, "device": d} for r, p, d in results]},
            "nodeSelector": node_selector(node),
            "allocationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}


@dataclass
class _Write:
    """One claim this bind writes: as read, what it becomes, and what was done (for the undo)."""

    read: Obj
    alloc: Obj | None  # the allocation to write; None: the claim is allocated already, only reserve it
    pod: Obj  # the pod it is reserved for (a pod group's first bind writes its siblings' claims too)
    last: Obj = field(default_factory=dict)  # the newest version the apiserver answered
    added_finalizer: bool = False
    wrote: bool = False

    @property
    def ns(self) -> str:
        return str(self.read["metadata"].get("namespace") or "")

    @property
    def name(self) -> str:
        return str(self.read["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.read["metadata"]["uid"])


class AllocatingBinder(ClaimBinder):
    """ClaimBinder that allocates unallocated claims itself (allocate mode)."""

    def __init__(self, state: ClusterState, api: KubeApi, dra: DraState,
                 on_result: Callable[[BindResult], None] | None = None,
                 hook: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time,
                 routing: Routing | None = None) -> None:
        super().__init__(state, api, dra, on_result, hook)
        self.clock = clock
        self.routing = routing or Routing()

    def _bind(self, ns: str, name: str, uid: str, node: str) -> tuple[str, str]:
        raw = self.state.raw_pod(uid)
        view = self.state.claims_view(uid)
        if view is None or not uses_claims(view) or not isinstance(self.api, ClaimWriter):
            return super()._bind(ns, name, uid, node)
        obj, done = self._unbound_pod(ns, name, uid, node, raw)
        if obj is None:
            return done
        claims, error = self._read_claims(ns, obj)
        if error:
            return error
        route, why = self._route(obj, claims)
        if route == "refuse":
            return f"gpupack: {why}", "failed"
        if route == "observe":  # a DynamicResources profile: its PreBind allocated, gpupack adopts
            return ClaimBinder._bind(self, ns, name, uid, node)
        jobs, error = self._group(uid, obj, claims, node)
        if error:
            return error
        writes, error = self._plan(jobs)
        if error:
            return error
        error = self._write(writes)
        if error:
            self._revert(writes)
            return error
        req = self.state.request_for(uid)
        if req is None or not req.group:  # a group member keeps its reservation until seen bound (the plan holds)
            self.state.unassume(uid)  # devices gpupack reserved for the pod itself: its claims hold them now
        out = self._post_binding(ns, name, uid, node, {})
        if out[0]:
            self._revert(writes)
        return out

    def _route(self, pod: Obj, claims: list[Obj]) -> tuple[str, str]:
        return self.routing.route(str((pod.get("spec") or {}).get("schedulerName") or ""),
                                  [c for c in claims if not (c.get("status") or {}).get("allocation")])

    def _group(self, uid: str, pod: Obj, claims: list[Obj],
               node: str) -> tuple[list[_Job], tuple[str, str] | None]:
        """The pod's claims, and for a pod group's member the claims of every other reserved member, each on its
        reserved node (group_alloc.py): allocated together or not at all."""
        own = self.state.booking(uid)
        jobs = [_Job(pod, claims, node, own.placement if own is not None and own.assumed else None)]
        for sib in siblings(self.state, uid):
            what = f"gpupack: pod group member {sib.namespace}/{sib.name}"
            try:
                self._step("read-member")
                other = self.api.get_pod(sib.namespace, sib.name)
            except ApiError as e:
                return [], (f"{what}: reading it failed: {e.message or e}", "failed")
            if other is None or str((other.get("metadata") or {}).get("uid") or "") != sib.uid or \
                    (other.get("spec") or {}).get("nodeName") or not uses_claims(other):
                continue  # gone, bound meanwhile, or asking no claim: nothing of it to allocate here
            got, error = self._read_claims(sib.namespace, other)
            if error:
                return [], (f"{what}: {error[0].removeprefix('gpupack: ')}", error[1])
            route, why = self._route(other, got)
            if route != "allocate":
                return [], (f"{what}: {why or 'its claims are not gpupack’s to allocate'}", "failed")
            jobs.append(_Job(other, got, sib.reserved.node, sib.reserved))
        return jobs, None

    def _read_claims(self, ns: str, pod: Obj) -> tuple[list[Obj], tuple[str, str] | None]:
        refs = claim_refs(pod)
        made = [self.dra.generated_claim(ns, str(pod["metadata"]["uid"]), p) for p in refs.pending]
        if not all(made):
            return [], (f"gpupack: the pod's claims {list(refs.pending)} are not created yet", "failed")
        out = []
        for cname in (*refs.names, *made):
            try:
                self._step("read-claim")
                got = self.api.get_resource_claim(ns, cname) if isinstance(self.api, DraApi) else None
            except ApiError as e:
                return [], (f"gpupack: reading resourceclaim {ns}/{cname} failed: {e.message or e}", "failed")
            if got is None:
                return [], (f"gpupack: resourceclaim {ns}/{cname} not found", "failed")
            out.append(got)
        return out, None

    def _plan(self, jobs: list[_Job]) -> tuple[list[_Write], tuple[str, str] | None]:
        """Devices for every job's unallocated claims, chosen and booked at once under the state lock; or the
        refusal, with nothing booked."""
        todo: list[tuple[_Job, Obj, ClaimSpec]] = []
        writes: list[_Write] = []
        for job in jobs:
            uid = str(job.pod["metadata"]["uid"])
            for obj in job.claims:
                try:
                    c = read_claim(obj)
                except InvalidClaim as e:
                    return [], (f"gpupack: {e}", "failed")
                where = f"resourceclaim {c.namespace}/{c.name}"
                if c.allocated:
                    if c.node and c.node != job.node:
                        return [], (f"gpupack: {where} is allocated on {c.node}, not {job.node}", "conflict")
                    if uid not in c.reserved_for:
                        writes.append(_Write(obj, None, job.pod))
                    continue
                try:
                    todo.append((job, obj, claim_spec(obj)))
                except Unallocatable as e:
                    return [], (f"gpupack: {e}", "failed")
        # the bind's node lock, as for any bind; a group's other members' nodes are covered by the state lock,
        # under which their devices are chosen and booked at once (one node lock at a time: state/locks.py)
        with self._node_lock(jobs[0].node), self.state.atomic():
            for job in jobs:
                for obj in job.claims:
                    self.dra.adopt(obj)
            for _, _, spec in todo:
                held = self.dra.claims.get(spec.uid)
                if held is not None and held.allocated:  # another bind allocated it since we read it
                    return [], (f"gpupack: resourceclaim {spec.namespace}/{spec.name} is being allocated by "
                                f"another bind", "conflict")
            first = jobs[0]
            req = self.state.request_for(str(first.pod["metadata"]["uid"]))
            if req is not None and req.group:
                held_by = self.plugins.reserve(str(first.pod["metadata"]["uid"]), req, first.node)
                if isinstance(held_by, str):  # a group member binds only where, and when, its group is reserved
                    return [], (held_by, "conflict")
            if not todo:
                return writes, None
            snap = self.state.view().snapshot
            for job in jobs:  # the group's reservations: its members' claims may take those devices
                own = self.state.booking(str(job.pod["metadata"]["uid"]))
                snap = without(snap, own.placement if own is not None and own.assumed else None)
            now = self.clock()
            for job in jobs:
                specs = [spec for j, _, spec in todo if j is job]
                if not specs:
                    continue
                nd = self.dra.node_devices(job.node)
                if nd is None:
                    return [], (f"gpupack: node {job.node} publishes no ResourceSlices of {DRIVER}", "failed")
                try:
                    plan, snap = _allocate(snap, nd, specs, job.reserved)
                except Unallocatable as e:
                    return [], (f"gpupack: {e}", "conflict")
                except CelRefused as e:
                    return [], (f"gpupack: {e}", "failed")
                for j, obj, spec in todo:
                    if j is not job:
                        continue
                    res = [(r, nd.pools[d], d) for r, d in plan.results[spec.uid]]
                    writes.append(_Write(obj, allocation(res, job.node, now), job.pod))
            for w in writes:
                if w.alloc is not None:
                    self.dra.assume_claim(_with_status(w.read, {"allocation": w.alloc,
                                                                "reservedFor": [_ref(w.pod)]}))
        return writes, None

    def _write(self, writes: list[_Write]) -> tuple[str, str] | None:
        assert isinstance(self.api, ClaimWriter)
        for w in writes:
            cur = w.last = w.read
            where = f"resourceclaim {w.ns}/{w.name}"
            try:
                fins = list(cur["metadata"].get("finalizers") or [])
                if FINALIZER not in fins:
                    self._step("claim-finalizer")
                    w.added_finalizer = True  # even a timed-out write may have landed
                    cur = w.last = self.api.update_resource_claim(
                        w.ns, w.name, {**cur, "metadata": {**cur["metadata"], "finalizers": [*fins, FINALIZER]}})
                old = cur.get("status") or {}
                status = {"allocation": w.alloc if w.alloc is not None else old.get("allocation"),
                          "reservedFor": [*(old.get("reservedFor") or []), _ref(w.pod)]}
                self._step("claim-status")
                w.wrote = True
                cur = w.last = self.api.update_resource_claim_status(w.ns, w.name, _with_status(cur, status))
                if w.alloc is not None:
                    self.dra.assume_claim(cur)  # newer resourceVersion: the watch's older states do not undo it
            except ApiError as e:
                outcome = "conflict" if e.status == 409 else "failed"
                return f"gpupack: writing {where} failed: {e.message or e}", outcome
        return None

    def _revert(self, writes: list[_Write]) -> None:
        """Revert what this bind wrote, newest first; re-read the claim (a timed-out write may have landed)."""
        assert isinstance(self.api, ClaimWriter) and isinstance(self.api, DraApi)
        for w in reversed(writes):
            me = str(w.pod["metadata"]["uid"])
            last = w.read
            try:
                cur = self.api.get_resource_claim(w.ns, w.name) if (w.wrote or w.added_finalizer) else None
                if cur is not None and str(cur["metadata"].get("uid")) == w.uid:
                    last = cur
                    st = cur.get("status") or {}
                    mine = w.alloc is not None and _same_alloc(st.get("allocation"), w.alloc)
                    keep = [r for r in st.get("reservedFor") or [] if r.get("uid") != me]
                    if mine or keep != (st.get("reservedFor") or []):
                        status = {} if mine and not keep else {**st, "reservedFor": keep or None}
                        last = cur = self.api.update_resource_claim_status(w.ns, w.name, _with_status(cur, status))
                    fins = list(cur["metadata"].get("finalizers") or [])
                    if w.added_finalizer and FINALIZER in fins and not (cur.get("status") or {}).get("allocation"):
                        fins.remove(FINALIZER)
                        last = self.api.update_resource_claim(
                            w.ns, w.name, {**cur, "metadata": {**cur["metadata"], "finalizers": fins}})
            except ApiError as e:
                log.warning("bind: could not revert resourceclaim %s/%s: %s", w.ns, w.name, e)
            if w.alloc is not None:
                self.dra.forget_claim(w.uid, back_to=last)  # the ledger follows what the apiserver holds


@dataclass(frozen=True)
class _Job:
    """One pod whose claims this bind allocates: the pod itself, or another reserved member of its group."""

    pod: Obj
    claims: list[Obj]
    node: str
    reserved: Placement | None = None  # a sibling's reservation: its claims take exactly those devices if they fit


def _allocate(snap: Snapshot, nd: NodeDevices, specs: list[ClaimSpec],
              reserved: Placement | None) -> tuple[Allocation, Snapshot]:
    """The claims' devices on the node (within the reservation when they fit there) and the snapshot with them
    booked, so the group's next member cannot be given them again."""
    plan = None
    inside = within(snap, nd, reserved)
    if inside is not None:
        try:
            plan = allocate_claims(inside, nd, specs)
        except Unallocatable:
            plan = None
    if plan is None:
        plan = allocate_claims(snap, nd, specs)
    for ps in plan.placements.values():
        for p in ps:
            snap = allocate(snap, p)
    return plan, snap


def _ref(pod: Obj) -> Obj:
    m = pod["metadata"]
    return {"resource": "pods", "name": m["name"], "uid": m["uid"]}


def _with_status(obj: Obj, status: Obj) -> Obj:
    return {**obj, "status": {k: v for k, v in status.items() if v is not None}}


def _same_alloc(got: object, ours: Obj) -> bool:
    """Whether the stored allocation is the one we wrote (the apiserver stores empty results as {})."""
    if not isinstance(got, dict):
        return False
    return got.get("nodeSelector") == ours["nodeSelector"] and \
        (got.get("devices") or {}).get("results", []) == ours["devices"]["results"] and \
        got.get("allocationTimestamp") == ours["allocationTimestamp"]
