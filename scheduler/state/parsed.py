"""What ClusterState keeps of a raw object: a pod as the ledger needs it (PodEntry), a pod the verbs were sent,
cut down to the few bounded fields the verbs read (Parsed, pod_claims_view), and the fields of a node that
node_from_k8s reads (node_key)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from binpack import Placement
from scheduler.state.kubeapi import Obj
from scheduler.translate.inventory import INVENTORY
from scheduler.translate.pod import PodRequest

TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class PodEntry:
    """A pod as the ledger needs it."""

    uid: str
    namespace: str
    name: str
    node: str
    phase: str
    request: PodRequest | None
    placement: Placement | None
    foreign: int  # whole GPUs held without a gpupack record
    created: str = ""  # metadata.creationTimestamp (pod groups order by it; RFC 3339 sorts as text)

    @property
    def active(self) -> bool:
        return bool(self.node) and self.phase not in TERMINAL


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the verbs need of a pod they were sent, and nothing more: a raw pod may carry 256 KiB of
    annotations, so 4,096 of them could take a gigabyte. Each entry is small and bounded."""

    rv: str
    request: PodRequest | None
    error: str  # at most MAX_ERROR characters
    created: str  # metadata.creationTimestamp (pod groups order by it)
    claims: Obj | None = None  # DRA: the few fields that name the pod's claims (pod_claims_view), else None


MAX_ERROR = 1024
_MAX_CLAIM_REFS = 128  # a pod names a handful of claims; more is not a real pod


def pod_claims_view(pod: Obj) -> Obj | None:
    """What DRA's translate reads of a pod (claim names, its resourceVersion), bounded; None when the pod
    names no claim, so ordinary pods keep nothing of their raw body."""
    spec: Obj = pod["spec"] if isinstance(pod.get("spec"), dict) else {}
    status: Obj = pod["status"] if isinstance(pod.get("status"), dict) else {}
    refs = spec.get("resourceClaims")
    ext = status.get("extendedResourceClaimStatus")
    if not refs and not ext:
        return None
    meta: Obj = pod["metadata"] if isinstance(pod.get("metadata"), dict) else {}
    return {"metadata": {"resourceVersion": str(meta.get("resourceVersion") or "")[:64]},
            "spec": {"resourceClaims": list(refs or [])[:_MAX_CLAIM_REFS],
                     # DRA allocate mode routes a pod by its profile (scheduler/dra/routing.py)
                     "schedulerName": str(spec.get("schedulerName") or "")[:253]},
            "status": {"resourceClaimStatuses": list(status.get("resourceClaimStatuses") or [])[:_MAX_CLAIM_REFS],
                       "extendedResourceClaimStatus": ext if isinstance(ext, dict) else {}}}


def node_key(obj: Obj) -> tuple[Any, ...]:
    """Everything node_from_k8s reads, so heartbeats that change none of it are skipped."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = obj.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return ((meta.get("annotations") or {}).get(INVENTORY),
            tuple(sorted((k, v) for k, v in labels.items() if k.startswith("nvidia.com/"))),
            tuple(sorted(alloc.items())))
