"""The JSONPatch (RFC 6902) that brings a GPU pod to what gpupack needs: one pure function, build_patch.

`Mutation` says what the pod must carry (scheduler, toleration, product affinity, runtime class,
share resources on the first container, a `gpupack.io/gpu-share` slot on each share container, so
that kubelet admits it through gpupack's device plugin); build_patch compares it
with the pod and emits only the operations still missing, so the patch for an already mutated pod
is empty (safe with reinvocationPolicy IfNeeded). Every path is escaped per RFC 6901. Operations
refer to the original document and never move array members, so they apply in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.translate.pod import SHARE_SLOT
from webhook.products import PRODUCT_LABEL

Op = dict[str, Any]
GPU_TAINT = "nvidia.com/gpu"
TOLERATION: Mapping[str, str] = {"key": GPU_TAINT, "operator": "Exists", "effect": "NoSchedule"}
MARK = "gpupack.io/mutated"  # for people reading the pod; decisions never rely on it
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


@dataclass(frozen=True, slots=True)
class Mutation:
    """What a GPU pod must carry. `slots` names the containers that get one share slot each."""

    scheduler_name: str
    runtime_class: str = ""
    products: tuple[str, ...] = ()
    share_resources: tuple[tuple[str, str], ...] = ()
    slots: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Patch:
    ops: tuple[Op, ...] = ()
    warnings: tuple[str, ...] = ()


def escape(token: str) -> str:
    """One RFC 6901 reference token: '~' -> '~0', then '/' -> '~1'."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    return "".join("/" + escape(str(t)) for t in tokens)


def _obj(x: object) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _list(x: object) -> list[Any]:
    return x if isinstance(x, list) else []


def _covers(t: object) -> bool:
    """Whether an existing toleration already tolerates the nvidia.com/gpu:NoSchedule taint, any value."""
    if not isinstance(t, Mapping) or t.get("operator") != "Exists":
        return False
    return t.get("key") in (None, "", GPU_TAINT) and t.get("effect") in (None, "", "NoSchedule")


def _scheduler(spec: Mapping[str, Any], name: str, ops: list[Op]) -> None:
    if spec.get("schedulerName") != name:
        op = "replace" if "schedulerName" in spec else "add"
        ops.append({"op": op, "path": "/spec/schedulerName", "value": name})


def _toleration(spec: Mapping[str, Any], ops: list[Op]) -> None:
    tols = spec.get("tolerations")
    if not isinstance(tols, list):
        ops.append({"op": "add", "path": "/spec/tolerations", "value": [dict(TOLERATION)]})
    elif not any(_covers(t) for t in tols):
        ops.append({"op": "add", "path": "/spec/tolerations/-", "value": dict(TOLERATION)})


def _affinity(spec: Mapping[str, Any], values: Sequence[str], ops: list[Op]) -> None:
    """AND the product requirement into every required nodeSelectorTerm (terms are ORed by Kubernetes)."""
    expr = {"key": PRODUCT_LABEL, "operator": "In", "values": list(values)}
    term = {"matchExpressions": [expr]}
    affinity = spec.get("affinity")
    node_aff = _obj(affinity).get("nodeAffinity")
    required = _obj(node_aff).get(_REQUIRED)
    terms = _obj(required).get("nodeSelectorTerms")
    base = ("spec", "affinity", "nodeAffinity", _REQUIRED)
    if not isinstance(affinity, Mapping):
        ops.append({"op": "add", "path": "/spec/affinity", "value": {"nodeAffinity": {_REQUIRED: {
            "nodeSelectorTerms": [term]}}}})
    elif not isinstance(node_aff, Mapping):
        ops.append({"op": "add", "path": pointer(*base[:3]), "value": {_REQUIRED: {"nodeSelectorTerms": [term]}}})
    elif not isinstance(required, Mapping):
        ops.append({"op": "add", "path": pointer(*base), "value": {"nodeSelectorTerms": [term]}})
    elif not isinstance(terms, list) or not terms:
        ops.append({"op": "add", "path": pointer(*base, "nodeSelectorTerms"), "value": [term]})
    else:
        for i, t in enumerate(terms):
            exprs = _obj(t).get("matchExpressions")
            if not isinstance(t, Mapping):
                ops.append({"op": "replace", "path": pointer(*base, "nodeSelectorTerms", i), "value": term})
            elif not isinstance(exprs, list):
                ops.append({"op": "add", "path": pointer(*base, "nodeSelectorTerms", i, "matchExpressions"),
                            "value": [expr]})
            elif expr not in exprs:
                ops.append({"op": "add", "path": pointer(*base, "nodeSelectorTerms", i, "matchExpressions", "-"),
                            "value": expr})


def _runtime_class(spec: Mapping[str, Any], name: str, ops: list[Op], warnings: list[str]) -> None:
    have = spec.get("runtimeClassName")
    if not have:
        ops.append({"op": "add", "path": "/spec/runtimeClassName", "value": name})
    elif have != name:
        warnings.append(f"runtimeClassName {have!r} kept; gpupack is configured for {name!r}")


def _resources(spec: Mapping[str, Any], values: tuple[tuple[str, str], ...], ops: list[Op]) -> None:
    """Write the share resources on the first container, in limits and requests (they must be equal)."""
    first = _obj(_list(spec.get("containers"))[0]) if _list(spec.get("containers")) else {}
    want = dict(values)
    res = first.get("resources")
    if not isinstance(res, Mapping):
        ops.append({"op": "add", "path": "/spec/containers/0/resources",
                    "value": {"limits": dict(want), "requests": dict(want)}})
        return
    for section in ("limits", "requests"):
        have = res.get(section)
        if not isinstance(have, Mapping):
            ops.append({"op": "add", "path": pointer("spec", "containers", 0, "resources", section),
                        "value": dict(want)})
            continue
        for k, v in want.items():
            if have.get(k) != v:
                ops.append({"op": "add", "path": pointer("spec", "containers", 0, "resources", section, k),
                            "value": v})


def _where(spec: Mapping[str, Any], name: str) -> tuple[str, int, Mapping[str, Any]] | None:
    for key in ("containers", "initContainers"):
        for i, c in enumerate(_list(spec.get(key))):
            if isinstance(c, Mapping) and c.get("name") == name:
                return key, i, c
    return None


def _slot(spec: Mapping[str, Any], name: str, ops: list[Op]) -> None:
    """One `gpupack.io/gpu-share` slot in the container's limits and requests."""
    found = _where(spec, name)
    if found is None:
        return
    key, i, c = found
    res = c.get("resources")
    if not isinstance(res, Mapping):
        ops.append({"op": "add", "path": pointer("spec", key, i, "resources"),
                    "value": {"limits": {SHARE_SLOT: "1"}, "requests": {SHARE_SLOT: "1"}}})
        return
    for section in ("limits", "requests"):
        have = res.get(section)
        if not isinstance(have, Mapping):
            ops.append({"op": "add", "path": pointer("spec", key, i, "resources", section), "value": {SHARE_SLOT: "1"}})
        elif have.get(SHARE_SLOT) != "1":
            ops.append({"op": "add", "path": pointer("spec", key, i, "resources", section, SHARE_SLOT), "value": "1"})


def _mark(pod: Mapping[str, Any], ops: list[Op]) -> None:
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        ops.append({"op": "add", "path": "/metadata", "value": {"annotations": {MARK: "true"}}})
        return
    ann = meta.get("annotations")
    if not isinstance(ann, Mapping):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {MARK: "true"}})
    elif ann.get(MARK) != "true":
        ops.append({"op": "add", "path": pointer("metadata", "annotations", MARK), "value": "true"})


def build_patch(pod: Mapping[str, Any], m: Mutation) -> Patch:
    """The operations still needed for `pod` to carry `m`; empty when it already does."""
    spec = _obj(pod.get("spec"))
    ops: list[Op] = []
    warnings: list[str] = []
    _scheduler(spec, m.scheduler_name, ops)
    _toleration(spec, ops)
    if m.products:
        _affinity(spec, m.products, ops)
    if m.runtime_class:
        _runtime_class(spec, m.runtime_class, ops, warnings)
    if m.share_resources:
        _resources(spec, m.share_resources, ops)
    for name in m.slots:
        _slot(spec, name, ops)
    if ops:  # the mark records a mutation; on its own it would make the patch never empty
        _mark(pod, ops)
    return Patch(tuple(ops), tuple(warnings))


__all__ = ["MARK", "TOLERATION", "Mutation", "Op", "Patch", "build_patch", "escape", "pointer"]
