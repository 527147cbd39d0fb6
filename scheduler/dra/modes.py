"""The DRA mode's pieces, picked once at start-up: observe mode binds by adoption (bind.py); allocate mode
also checks at filter that the pod's claims can get devices on each node (`ClaimVeto`) and allocates them
at bind (allocate_bind.py), for the DeviceClasses and profiles routing.py gives gpupack."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scheduler.dra.allocate import Unallocatable, allocate_claims, claim_spec, without
from scheduler.dra.bind import ClaimBinder
from scheduler.dra.cel import CelRefused
from scheduler.dra.demand import claim_refs, uses_claims
from scheduler.dra.routing import Routing
from scheduler.dra.slices import DRIVER
from scheduler.dra.state import DraState
from scheduler.state.binder import BindResult
from scheduler.state.cluster import ClusterState, StateView
from scheduler.state.kubeapi import KubeApi
from scheduler.translate.pod import PodRequest


class ClaimVeto:
    """Filter in allocate mode: the nodes where the pod's unallocated claims cannot all get devices (their
    selectors, counts and constraints, on the devices no booking holds), with the reason. A claim gpupack
    cannot allocate anywhere (unknown class, a selector it cannot evaluate) fails every node, unresolvably."""

    def __init__(self, state: ClusterState, dra: DraState, routing: Routing | None = None) -> None:
        self.state = state
        self.dra = dra
        self.routing = routing or Routing()

    def applies(self, req: PodRequest) -> bool:
        raw = self.state.claims_view(req.uid)
        return raw is not None and uses_claims(raw)

    def __call__(self, req: PodRequest, view: StateView, names: Sequence[str]) -> dict[str, tuple[str, bool]]:
        raw = self.state.claims_view(req.uid)
        if raw is None:
            return {}
        refs = claim_refs(raw)
        made = [self.dra.generated_claim(req.namespace, req.uid, p) for p in refs.pending]
        if not all(made):  # without DynamicResources no PreEnqueue waits for the resourceclaim controller
            return dict.fromkeys(names, (f"the pod's claims {list(refs.pending)} are not created yet", True))
        specs = []
        todo = []
        only = ""
        with self.state.atomic():
            for cname in (*refs.names, *made):
                c = self.dra.claim(req.namespace, cname)
                obj = self.dra.claim_objs.get(c.uid) if c is not None else None
                if c is None or obj is None:
                    return dict.fromkeys(names, (f"resourceclaim {req.namespace}/{cname} not seen yet", True))
                if c.allocated:
                    only = c.node or only
                    continue
                todo.append(obj)
        route, why = self.routing.route(str((raw.get("spec") or {}).get("schedulerName") or ""), todo)
        if route == "refuse":
            return dict.fromkeys(names, (why, False))
        if route == "observe":  # DynamicResources allocates in this profile: it only sent the nodes it can serve
            return {}
        for obj in todo:
            try:
                specs.append(claim_spec(obj))
            except Unallocatable as e:
                return dict.fromkeys(names, (str(e), False))
        out: dict[str, tuple[str, bool]] = {}
        own = self.state.booking(req.uid)
        snap = without(view.snapshot, own.placement if own is not None and own.assumed else None)
        for n in names:
            if only and n != only:
                out[n] = (f"the pod's claims are allocated on {only}", False)
                continue
            if not specs:
                continue
            nd = self.dra.node_devices(n)
            if nd is None:
                out[n] = (f"node {n} publishes no ResourceSlices of {DRIVER}", False)
                continue
            try:
                allocate_claims(snap, nd, specs)
            except Unallocatable as e:
                out[n] = (str(e), True)
            except CelRefused as e:
                return dict.fromkeys(names, (str(e), False))
        return out


def binder_for(mode: str, state: ClusterState, api: KubeApi, dra: DraState,
               on_result: Callable[[BindResult], None] | None = None, routing: Routing | None = None) -> ClaimBinder:
    if mode == "allocate":
        from scheduler.dra.allocate_bind import AllocatingBinder

        return AllocatingBinder(state, api, dra, on_result=on_result, routing=routing)
    return ClaimBinder(state, api, dra, on_result=on_result)
