"""Bind in observe mode: kube-scheduler's DynamicResources plugin allocated the pod's claims in PreBind,
before the extender's bind is called; gpupack adopts those devices as the truth and posts the Binding.

A pod goes this way when it uses ResourceClaims, or when its node's GPUs are published by DRA (a
`nvidia.com/gpu` ask there is served by an extended-resource claim kube-scheduler made). The pod and
its claims are read fresh from the API server (the watch may not have brought PreBind's writes yet);
a GPU claim that is not allocated, or allocated on another node, is refused with a reason and nothing
is written. Every other pod binds as before (scheduler/state/binder.py picks and records devices).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from binpack import DemandKind
from scheduler.dra.claims import GPU_CLASS, MIG_CLASS, InvalidClaim, read_claim
from scheduler.dra.demand import claim_refs, uses_claims
from scheduler.dra.state import DraState
from scheduler.logfmt import about
from scheduler.state.binder import Binder, BindResult
from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import ApiError, DraApi, KubeApi, Obj

log = logging.getLogger("gpupack.dra")
NOT_ALLOCATED = ("gpupack: resourceclaim {claim} is not allocated at bind: in observe mode kube-scheduler's "
                 "DynamicResources plugin allocates claims (is it enabled in the gpupack-scheduler profile?)")


class ClaimBinder(Binder):
    """Binder that adopts DRA allocations for claim pods and pods on DRA nodes."""

    def __init__(self, state: ClusterState, api: KubeApi, dra: DraState,
                 on_result: Callable[[BindResult], None] | None = None,
                 hook: Callable[[str], None] | None = None) -> None:
        super().__init__(state, api, on_result, hook)
        self.dra = dra

    def _unbound_pod(self, ns: str, name: str, uid: str, node: str,
                     raw: Obj | None) -> tuple[Obj | None, tuple[str, str]]:
        """The pod read fresh (filter's copy in standalone mode), or None and the answer: an error, or
        success when it is already bound to `node`."""
        pod = f"{ns}/{name}"
        try:
            self._step("read")
            fresh = self.api.get_pod(ns, name)
        except ApiError as e:
            return None, (f"gpupack: reading pod {pod} failed: {e.message or e}", "failed")
        obj = fresh if fresh is not None else raw  # standalone mode: only filter's copy exists
        if obj is None or str((obj.get("metadata") or {}).get("uid") or "") != uid:
            return None, (f"gpupack: pod {pod} is unknown (not found with UID {uid})", "failed")
        bound = str((obj.get("spec") or {}).get("nodeName") or "")
        if bound:
            return None, (("", "ok") if bound == node else (f"gpupack: pod {pod} is already bound to {bound}",
                                                             "conflict"))
        return obj, ("", "")

    def _bind(self, ns: str, name: str, uid: str, node: str) -> tuple[str, str]:
        raw = self.state.raw_pod(uid)
        req = self.state.request_for(uid)
        # shares and device-plugin MIG asks are gpupack's own to place and record, wherever they land
        plugin = req is not None and req.demand.kind in (DemandKind.SHARE, DemandKind.MIG)
        view = self.state.claims_view(uid)
        asks = view is not None and uses_claims(view)
        if not (asks or (self.dra.is_dra_node(node) and not plugin)):
            return super()._bind(ns, name, uid, node)
        obj, done = self._unbound_pod(ns, name, uid, node, raw)
        if obj is None:
            return done
        claims, error = self._claims(ns, obj, node)
        if error:
            return error
        for c in claims:
            self.dra.adopt(c)  # the devices DRA picked are taken from now on, whatever the watch says yet
        # devices gpupack reserved for the pod itself (a pod group's plan) are not the ones DRA allocated
        self.state.unassume(uid)
        return self._post_binding(ns, name, uid, node, {})

    def _claims(self, ns: str, pod: Obj, node: str) -> tuple[list[Obj], tuple[str, str] | None]:
        """The pod's claims, read fresh; or the refusal (error, outcome)."""
        refs = claim_refs(pod)
        if refs.pending:
            return [], (f"gpupack: the pod's claims {list(refs.pending)} are not created yet", "failed")
        api = self.api
        if refs.names and not isinstance(api, DraApi):
            return [], ("gpupack: the API in use serves no ResourceClaims", "failed")
        out: list[Obj] = []
        for cname in refs.names:
            try:
                self._step("read-claim")
                obj = api.get_resource_claim(ns, cname) if isinstance(api, DraApi) else None
            except ApiError as e:
                return [], (f"gpupack: reading resourceclaim {ns}/{cname} failed: {e.message or e}", "failed")
            if obj is None:
                return [], (f"gpupack: resourceclaim {ns}/{cname} not found", "failed")
            try:
                c = read_claim(obj)
            except InvalidClaim as e:
                return [], (f"gpupack: {e}", "failed")
            gpu = any(r.device_class in (GPU_CLASS, MIG_CLASS) for r in c.requests)
            if gpu and not c.allocated:
                return [], (NOT_ALLOCATED.format(claim=f"{ns}/{cname}"), "failed")
            if c.node and c.node != node:
                return [], (f"gpupack: resourceclaim {ns}/{cname} is allocated on {c.node}, not {node}", "conflict")
            out.append(obj)
        if not out and not uses_claims(pod):
            name = (pod.get("metadata") or {}).get("name")
            log.info("pod %s/%s on DRA node %s has no claim; bound as kube-scheduler chose", ns, name, node,
                     extra=about(f"{ns}/{name}", node))
        return out, None
