"""Admission policy for one pod: allow it untouched, deny it with a message, or allow it with a patch.

The pod is read by scheduler.translate.pod.read_pod, the one pod -> demand translation the extender uses;
this module only adds the checks that belong at admission (requests == limits, the largest node,
what the annotation rewrite and the per-container annotations can express) and decides the
Mutation that patch.build_patch turns into JSONPatch. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from binpack import DemandKind
from scheduler.translate.devices import DEVICES
from scheduler.translate.pod import (
    A_FRACTION,
    A_GROUP,
    A_MEMORY,
    A_MODEL,
    A_TOPOLOGY,
    COMPUTE,
    GPU,
    MEMORY,
    SHARE_SLOT,
    InvalidPod,
    PodRequest,
    gpu_resource_names,
    read_pod,
)
from scheduler.translate.quantity import parse_quantity
from webhook.dra import convert
from webhook.patch import Mutation, Op, build_patch
from webhook.products import product_values, unknown_models

PREFIX = "gpupack: "
DEFAULT_SCHEDULER = "default-scheduler"
VISIBLE_ENV = "NVIDIA_VISIBLE_DEVICES"
_HARMLESS = ("", "void", "none")  # values under which the NVIDIA runtime injects no GPU
# Annotations only gpupack writes (the record) or that once carried it, and CDI injection requests.
_RESERVED_PREFIXES = ("gpupack.io/visible-devices.", "gpupack.io/mps-thread-percentage.",
                      "gpupack.io/mps-memory-limit.")
_CDI_PREFIX = "cdi.k8s.io/"


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings that shape a mutation (from WebhookSettings)."""

    scheduler_name: str = "gpupack-scheduler"
    runtime_class: str = ""
    max_gpus_per_node: int = 8
    model_affinity: bool = True
    dra_namespaces: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one pod. `result` labels the metric: patched, unchanged, skipped or denied."""

    allowed: bool
    result: str
    patch: tuple[Op, ...] = ()
    message: str = ""
    warnings: tuple[str, ...] = ()


def _deny(msg: str) -> Decision:
    return Decision(False, "denied", message=PREFIX + msg)


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for key in ("containers", "initContainers"):
        items = spec.get(key)
        if isinstance(items, list):
            out.extend(c for c in items if isinstance(c, Mapping))
    return out


def _sections(c: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    res = c.get("resources")
    res = res if isinstance(res, Mapping) else {}
    lim, req = res.get("limits"), res.get("requests")
    return (lim if isinstance(lim, Mapping) else {}), (req if isinstance(req, Mapping) else {})


def asks_for_gpu(pod: Mapping[str, Any]) -> bool:
    """Whether the pod names a GPU resource in any container or the share annotations at all."""
    ann = _annotations(pod)
    if A_FRACTION in ann or A_MEMORY in ann:
        return True
    spec = pod.get("spec")
    return isinstance(spec, Mapping) and any(
        gpu_resource_names(lim) or gpu_resource_names(req) for lim, req in map(_sections, _containers(spec)))


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata")
    ann = meta.get("annotations") if isinstance(meta, Mapping) else None
    return ann if isinstance(ann, Mapping) else {}


def _limits_problem(spec: Mapping[str, Any]) -> str:
    """GPU resources cannot be overcommitted: requests, when written, must equal limits."""
    for c in _containers(spec):
        lim, req = _sections(c)
        where = f"container {c.get('name')!r}"
        for name in sorted(set(gpu_resource_names(req))):
            if name not in lim:
                return (f"{where}: {name} is in requests but not in limits; write it under limits "
                        f"(requests may be left out, they default to limits)")
            try:
                same = parse_quantity(lim[name]) == parse_quantity(req[name])
            except ValueError:
                continue  # read_pod names the bad quantity
            if not same:
                return (f"{where}: {name} requests {req[name]} but limits {lim[name]}; GPUs cannot be "
                        f"overcommitted: make requests equal to limits, or leave requests out")
    return ""


def _has_share_resources(spec: Mapping[str, Any]) -> bool:
    for c in _containers(spec):
        lim, req = _sections(c)
        for k in (MEMORY, COMPUTE):
            for sec in (lim, req):
                try:
                    if k in sec and parse_quantity(sec[k]) > 0:
                        return True
                except ValueError:
                    return True
    return False


def _share_resources(req: PodRequest, spec: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], str]:
    """The KAI-style annotations as resources for the first container, or the reason they cannot be."""
    d = req.demand
    if d.kind is not DemandKind.SHARE or _has_share_resources(spec):
        return (), ""
    first = spec.get("containers")
    if not isinstance(first, list) or not first or not isinstance(first[0], Mapping):
        return (), f"{A_FRACTION}/{A_MEMORY} need a container to carry the share; the pod has none"
    if d.compute_milli % 10:
        pct = d.compute_milli / 10
        if d.compute_milli < 10:
            return (), f"{A_FRACTION}: {pct:g}% of a GPU is under 1%; write at least 0.01"
        lo, hi = d.compute_milli // 10 / 100, (d.compute_milli // 10 + 1) / 100
        return (), (f"{A_FRACTION}: {pct:g}% of a GPU is finer than whole percents ({COMPUTE} is an integer "
                    f"resource); write {lo:g} or {hi:g}")
    out = []
    if d.memory_mib:
        out.append((MEMORY, str(d.memory_mib)))
    if d.compute_milli:
        out.append((COMPUTE, str(d.compute_milli // 10)))
    return tuple(out), ""


def _share_slots(req: PodRequest) -> tuple[str, ...]:
    """The containers of a share pod that get a `gpupack.io/gpu-share` slot (each that holds a share)."""
    return tuple(c.name for c in req.containers) if req.demand.kind is DemandKind.SHARE else ()


def _all_containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out = _containers(spec)
    eph = spec.get("ephemeralContainers")
    if isinstance(eph, list):
        out.extend(c for c in eph if isinstance(c, Mapping))
    return out


def handoff_problem(pod: Mapping[str, Any]) -> str:
    """Why a pod may not be admitted: it writes what only gpupack writes, or reaches for GPUs around
    the device plugin (NVIDIA_VISIBLE_DEVICES, CDI annotations). Checked for every pod, GPU or not:
    under the NVIDIA runtime's envvar strategy any container setting the variable gets the GPUs."""
    for key in _annotations(pod):
        k = str(key)
        if k == DEVICES or k.startswith(_RESERVED_PREFIXES):
            return (f"annotation {k} is written by gpupack only (at bind, the record of the devices it booked); "
                    f"remove it and ask for GPUs with resources ({GPU}, nvidia.com/mig-<profile>, {MEMORY})")
        if k.startswith(_CDI_PREFIX):
            return (f"annotation {k} asks the runtime to inject CDI devices, around gpupack's device plugin; "
                    f"remove it and ask for GPUs with resources ({GPU}: N, nvidia.com/mig-<profile>, {MEMORY})")
    spec = pod.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    for c in _all_containers(spec):
        where = f"container {c.get('name')!r}"
        env = c.get("env")
        for e in env if isinstance(env, list) else []:
            if not isinstance(e, Mapping) or e.get("name") != VISIBLE_ENV:
                continue
            if "valueFrom" in e or str(e.get("value") or "").strip().lower() not in _HARMLESS:
                return (f"{where}: sets {VISIBLE_ENV}, which would reach GPUs gpupack did not book for it; remove "
                        f"it and ask for GPUs with resources ({GPU}: N); gpupack's device plugin gives each "
                        "container exactly its GPUs (CUDA_VISIBLE_DEVICES may still re-order them)")
        env_from = c.get("envFrom")
        for src in env_from if isinstance(env_from, list) else []:
            prefix = str(src.get("prefix") or "") if isinstance(src, Mapping) else ""
            if prefix and VISIBLE_ENV.startswith(prefix):
                return (f"{where}: envFrom with prefix {prefix!r} can set {VISIBLE_ENV}; use another prefix, and "
                        f"ask for GPUs with resources ({GPU}: N)")
    return ""


def _ignored_annotations(pod: Mapping[str, Any]) -> tuple[str, ...]:
    names = [a for a in (A_MODEL, A_TOPOLOGY, A_GROUP) if a in _annotations(pod)]
    return tuple(f"{PREFIX}{a} is set but the pod asks for no GPU; gpupack ignores it" for a in names)


def _model_affinity(pod: Mapping[str, Any], policy: Policy) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The nvidia.com/gpu.product values for the pod's models, or a warning saying why there are none."""
    if not policy.model_affinity:
        return (), ()
    raw = str(_annotations(pod).get(A_MODEL, "")).split("|")
    unknown = unknown_models(raw)
    if unknown:  # one unlisted spelling would keep the pod off nodes the extender accepts
        return (), (f"{PREFIX}{A_MODEL}: {', '.join(unknown)} not in gpupack's catalog: no node affinity on "
                    f"nvidia.com/gpu.product written; the extender still matches the model by name",)
    return product_values(raw), ()


def admit(pod: Mapping[str, Any], policy: Policy, namespace: str = "") -> Decision:
    """Allow a pod that asks for no GPU untouched; deny a malformed GPU request or one that reaches
    for GPUs around the device plugin; patch a good one (in a DRA namespace: into claims, webhook/dra.py)."""
    problem = handoff_problem(pod)
    if problem:
        return _deny(problem)
    if not asks_for_gpu(pod):
        return Decision(True, "skipped", warnings=_ignored_annotations(pod))
    spec = pod.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    sched = spec.get("schedulerName")
    if sched not in (None, "", DEFAULT_SCHEDULER, policy.scheduler_name):
        return Decision(True, "skipped", warnings=(
            f"{PREFIX}pod names scheduler {sched!r}: gpupack leaves it alone and will not place its GPUs",))
    problem = _limits_problem(spec)
    if problem:
        return _deny(problem)
    try:
        req = read_pod(pod)
    except InvalidPod as e:
        return _deny(str(e))
    except (TypeError, AttributeError, KeyError) as e:  # shapes the apiserver never sends; say so, do not crash
        return _deny(f"pod: cannot be read ({type(e).__name__}: {e})")
    if not req.managed:
        return Decision(True, "skipped", warnings=_ignored_annotations(pod))
    d = req.demand
    if d.kind is DemandKind.WHOLE and d.count > policy.max_gpus_per_node:
        return _deny(f"pod requests {d.count} {GPU} but max per node is {policy.max_gpus_per_node}; ask for at "
                     f"most {policy.max_gpus_per_node}, or split the job into pods of a {A_GROUP}")
    dra: tuple[Op, ...] = ()
    if namespace and namespace in policy.dra_namespaces:
        dra, problem = convert(pod, req)
        if problem:
            return _deny(problem)
    share, problem = _share_resources(req, spec) if not dra else ((), "")
    if problem:
        return _deny(problem)
    products, notes = _model_affinity(pod, policy) if d.models else ((), ())
    m = Mutation(scheduler_name=policy.scheduler_name, runtime_class=policy.runtime_class, products=products,
                 share_resources=(*share, (SHARE_SLOT, "1")) if share else (),
                 slots=() if share else _share_slots(req))  # one write per container: patch ops see the original
    p = build_patch(pod, m)
    ops = p.ops + dra
    return Decision(True, "patched" if ops else "unchanged", patch=ops,
                    warnings=notes + tuple(PREFIX + w for w in p.warnings))
