"""ResourceClaim JSON -> Claim, and an allocated claim's devices -> binpack Placements on their nodes.

Whoever allocated a claim (kube-scheduler's DynamicResources plugin, another scheduler, a person),
its `status.allocation.devices.results` name the devices it holds: each result of driver
`gpu.nvidia.com` is mapped through its pool's node inventory (slices.py) to a whole GPU or a MIG
slot. A result gpupack cannot map (another driver, a pool no slice publishes, a device not in the
slice, the same device twice) is skipped with a reason; the rest still count as taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from binpack import DemandKind, MigSlot, Placement
from scheduler.dra.slices import DRIVER, DraInventory

GPU_CLASS = "gpu.nvidia.com"
MIG_CLASS = "mig.nvidia.com"
EXTENDED = "resource.kubernetes.io/extended-resource-claim"
# the only CEL selectors read: one equality on the driver's profile or productName attribute
_CEL = re.compile(r"""^\s*device\.attributes\[\s*['"]gpu\.nvidia\.com['"]\s*\]\.(profile|productName)\s*==\s*"""
                  r"""(['"])([^'"]+)\2\s*$""")


class InvalidClaim(ValueError):
    """A ResourceClaim that cannot be read; the message names the field."""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One request of a claim's spec, as far as gpupack reads it."""

    name: str
    device_class: str
    mode: str  # ExactCount, All, or FirstAvailable (a list of subrequests gpupack does not translate)
    count: int
    profile: str = ""  # from a `profile == '...'` selector
    model: str = ""  # from a `productName == '...'` selector
    other_selectors: bool = False  # selectors gpupack does not read (DRA still applies them)


@dataclass(frozen=True, slots=True)
class Result:
    """One allocated device."""

    request: str
    driver: str
    pool: str
    device: str


@dataclass(frozen=True, slots=True)
class Claim:
    uid: str
    namespace: str
    name: str
    resource_version: str
    requests: tuple[ClaimRequest, ...]
    allocated: bool
    results: tuple[Result, ...] = ()
    node: str = ""  # from the allocation's nodeSelector (metadata.name In [node]); "" when absent
    reserved_for: tuple[str, ...] = ()  # pod UIDs
    extended: bool = False  # made by kube-scheduler for an extended resource (DRAExtendedResource)


def _str(d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    return str(v) if isinstance(v, str | int) and not isinstance(v, bool) else ""


def read_claim(obj: Mapping[str, Any]) -> Claim:
    """The claim; InvalidClaim when it is not a readable ResourceClaim."""
    if not isinstance(obj, Mapping):
        raise InvalidClaim("resourceclaim: not an object")
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if not all(isinstance(x, Mapping) for x in (meta, spec, status)):
        raise InvalidClaim("resourceclaim: metadata, spec and status must be objects")
    uid, name = _str(meta, "uid"), _str(meta, "name")
    if not uid or not name:
        raise InvalidClaim("resourceclaim: metadata.uid and metadata.name are needed")
    where = f"resourceclaim {_str(meta, 'namespace')}/{name}"
    try:
        requests = tuple(_request(r) for r in ((spec.get("devices") or {}).get("requests") or []))
        alloc = status.get("allocation")
        results: tuple[Result, ...] = ()
        node = ""
        if alloc is not None:
            raw = (alloc.get("devices") or {}).get("results") or []
            results = tuple(Result(_str(r, "request"), _str(r, "driver"), _str(r, "pool"), _str(r, "device"))
                            for r in raw)
            node = _selected_node(alloc.get("nodeSelector") or {})
        reserved = tuple(_str(r, "uid") for r in status.get("reservedFor") or []
                         if _str(r, "resource") == "pods" and _str(r, "uid"))
    except (AttributeError, TypeError, ValueError) as e:
        raise InvalidClaim(f"{where}: {e}") from None
    ann = meta.get("annotations") or {}
    return Claim(uid, _str(meta, "namespace"), name, _str(meta, "resourceVersion"), requests, alloc is not None,
                 results, node, reserved, isinstance(ann, Mapping) and ann.get(EXTENDED) == "true")


def _request(r: Mapping[str, Any]) -> ClaimRequest:
    name = _str(r, "name")
    if "firstAvailable" in r:
        return ClaimRequest(name, "", "FirstAvailable", 0)
    ex = r.get("exactly") or {}
    mode = _str(ex, "allocationMode") or "ExactCount"
    count = int(ex.get("count") or 1) if mode == "ExactCount" else 0
    profile = model = ""
    other = False
    for sel in ex.get("selectors") or []:
        m = _CEL.match(str((sel.get("cel") or {}).get("expression") or ""))
        if m is None:
            other = True
        elif m.group(1) == "profile":
            profile = m.group(3)
        else:
            model = m.group(3)
    return ClaimRequest(name, _str(ex, "deviceClassName"), mode, count, profile, model, other)


def _selected_node(sel: Mapping[str, Any]) -> str:
    """The node of an allocation's nodeSelector when it names exactly one by metadata.name."""
    for term in sel.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            vals = f.get("values") or []
            if f.get("key") == "metadata.name" and f.get("operator") == "In" and len(vals) == 1:
                return str(vals[0])
    return ""


def placements(claim: Claim, node_of_pool: Callable[[str], str],
               inventories: Mapping[str, DraInventory]) -> tuple[list[Placement], list[str]]:
    """The devices an allocated claim holds, one Placement per (node, whole GPUs | MIG), and what was skipped."""
    whole: dict[str, list[int]] = {}
    mig: dict[str, list[MigSlot]] = {}
    skipped: list[str] = []
    seen: set[tuple[str, str]] = set()
    for r in claim.results:
        if r.driver != DRIVER:
            continue  # another driver's device (a NIC, ...): not a GPU
        node = node_of_pool(r.pool)
        inv = inventories.get(node)
        where = inv.devices.get(r.device) if inv is not None else None
        if where is None:
            skipped.append(f"device {r.pool}/{r.device} is not published by any ResourceSlice gpupack read")
            continue
        if (node, r.device) in seen:
            skipped.append(f"device {r.pool}/{r.device} is allocated twice in this claim")
            continue
        seen.add((node, r.device))
        gpu, slot = where
        if slot is None:
            whole.setdefault(node, []).append(gpu)
        else:
            mig.setdefault(node, []).append(slot)
    out = [Placement(n, gpus=tuple(sorted(g)), kind=DemandKind.WHOLE) for n, g in sorted(whole.items())]
    out += [Placement(n, mig=tuple(sorted(s, key=lambda m: (m.gpu, m.start))), kind=DemandKind.MIG)
            for n, s in sorted(mig.items())]
    return out, skipped
