"""A claim-only pod's GPU ask, at the edge: its ResourceClaims' requests -> one binpack Demand.

`gpu.nvidia.com` requests of ExactCount N are N whole GPUs; `mig.nvidia.com` requests with a
`profile == '...'` selector are MIG instances of that profile; a `productName == '...'` selector
names the model. Claims already allocated ask for nothing more (their devices are booked as taken,
claims.py), so a pod whose claims DRA allocated earlier is not counted twice. What gpupack cannot
express (All, firstAvailable, a MIG request without a profile, whole GPUs and MIG together) leaves
the pod to DRA alone: gpupack then passes every node DRA sent and scores them evenly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from binpack import Demand, DemandKind
from scheduler.dra.claims import GPU_CLASS, MIG_CLASS, Claim
from scheduler.translate.pod import PodRequest


@dataclass(frozen=True, slots=True)
class ClaimRefs:
    """The claims a pod uses, by name in its namespace; `pending` names pod claims not created yet."""

    names: tuple[str, ...]
    pending: tuple[str, ...] = ()


def claim_refs(pod: Mapping[str, Any]) -> ClaimRefs:
    """Claims named in spec.resourceClaims (directly, or made from a template and named in
    status.resourceClaimStatuses), and the extended-resource claim kube-scheduler made."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if not isinstance(spec, Mapping) or not isinstance(status, Mapping):
        return ClaimRefs(())
    made = {str(s.get("name")): s.get("resourceClaimName") for s in status.get("resourceClaimStatuses") or []
            if isinstance(s, Mapping)}
    names: list[str] = []
    pending: list[str] = []
    for rc in spec.get("resourceClaims") or []:
        if not isinstance(rc, Mapping):
            continue
        direct = rc.get("resourceClaimName")
        got = direct or made.get(str(rc.get("name")))
        if got:
            names.append(str(got))
        elif rc.get("resourceClaimTemplateName") and str(rc.get("name")) not in made:
            pending.append(str(rc.get("name")))
        # a template claim whose status entry has no name: the pod needs no claim for it (KEP: "not needed")
    ext = status.get("extendedResourceClaimStatus") or {}
    if isinstance(ext, Mapping) and ext.get("resourceClaimName"):
        names.append(str(ext["resourceClaimName"]))
    return ClaimRefs(tuple(names), tuple(pending))


def uses_claims(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return isinstance(spec, Mapping) and bool(spec.get("resourceClaims"))


def claims_demand(req: PodRequest, claims: Sequence[Claim]) -> tuple[PodRequest, str]:
    """The pod's request with the GPU demand of its unallocated claims; and, when gpupack leaves the
    pod to DRA alone, why (the request then keeps its own, GPU-less, demand)."""
    base = req.demand
    whole = 0
    migs: dict[str, int] = {}
    models: set[str] = set()
    for c in claims:
        if c.allocated:
            continue
        for r in c.requests:
            if r.device_class not in (GPU_CLASS, MIG_CLASS):
                continue
            if r.mode != "ExactCount":
                return req, f"claim {c.name} request {r.name}: allocation mode {r.mode} is left to DRA"
            if r.model:
                models.add(r.model)
            if r.device_class == GPU_CLASS:
                whole += r.count
            elif r.profile:
                migs[r.profile] = migs.get(r.profile, 0) + r.count
            else:
                return req, f"claim {c.name} request {r.name}: a MIG request without a profile selector is left to DRA"
    if not whole and not migs:
        return req, ""
    if base.kind is not DemandKind.NONE:
        return req, "the pod asks for GPUs both as resources and as claims; gpupack reads the resources"
    if (whole and migs) or len(migs) > 1:
        return req, "claims ask for more than one kind of GPU device; left to DRA"
    common: dict[str, Any] = {"models": frozenset(models) or base.models, "cpu_milli": base.cpu_milli,
                              "host_memory_mib": base.host_memory_mib}
    try:
        if whole:
            demand = Demand.whole(whole, topology=base.topology, **common)
        else:
            (profile, n), = migs.items()
            demand = Demand.mig(profile, n, **common)
    except ValueError as e:
        return req, f"claims: {e}; left to DRA"
    return replace(req, demand=demand), ""
