"""Admission policy for one pod: allow it untouched, deny it with a message, or allow it with a patch.

The pod is read by scheduler.podspec.read_pod, the one pod -> demand translation the extender uses;
this module only adds the checks that belong at admission (requests == limits, the largest node,
what the annotation rewrite and the per-container annotations can express) and decides the
Mutation that patch.build_patch turns into JSONPatch. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from binpack import DemandKind
from scheduler.devices import ENV_FOR_PREFIX, MPS_MEMORY, MPS_THREADS, VISIBLE
from scheduler.podspec import (
    A_FRACTION,
    A_GROUP,
    A_MEMORY,
    A_MODEL,
    A_TOPOLOGY,
    COMPUTE,
    GPU,
    MEMORY,
    InvalidPod,
    PodRequest,
    gpu_resource_names,
    read_pod,
)
from scheduler.quantity import parse_quantity
from webhook.patch import Mutation, Op, build_patch
from webhook.products import product_values, unknown_models

PREFIX = "gpupack: "
DEFAULT_SCHEDULER = "default-scheduler"
_NAME_MAX = 63  # the name part of a qualified annotation key; the fieldRef path is validated the same way


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings that shape a mutation (from WebhookSettings)."""

    scheduler_name: str = "gpupack-scheduler"
    runtime_class: str = ""
    max_gpus_per_node: int = 8
    model_affinity: bool = True


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


def _env_pairs(req: PodRequest) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Per GPU container: the env vars it gets and the annotation (written at bind) each reads."""
    out = []
    for c in req.containers:
        prefixes = [VISIBLE]
        if req.demand.kind is DemandKind.SHARE:
            prefixes += [p for p, on in ((MPS_THREADS, c.compute_milli), (MPS_MEMORY, c.memory_mib)) if on]
        out.append((c.name, tuple((ENV_FOR_PREFIX[p], p + c.name) for p in prefixes)))
    return tuple(out)


def _name_problem(env: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> str:
    for name, pairs in env:
        for _, key in pairs:
            part = key.split("/", 1)[1]
            if len(part) > _NAME_MAX:
                room = _NAME_MAX - (len(part) - len(name))
                return (f"container {name!r}: its name is {len(name)} characters, too long for the annotation "
                        f"{key.split('/', 1)[0]}/{part[:len(part) - len(name)]}<container> that carries its devices; "
                        f"use at most {room} characters")
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


def admit(pod: Mapping[str, Any], policy: Policy) -> Decision:
    """Allow a pod that asks for no GPU untouched; deny a malformed GPU request; patch a good one."""
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
    share, problem = _share_resources(req, spec)
    env = _env_pairs(req)
    problem = problem or _name_problem(env)
    if problem:
        return _deny(problem)
    products, notes = _model_affinity(pod, policy) if d.models else ((), ())
    m = Mutation(scheduler_name=policy.scheduler_name, runtime_class=policy.runtime_class, products=products,
                 share_resources=share, env=env)
    p = build_patch(pod, m)
    return Decision(True, "patched" if p.ops else "unchanged", patch=p.ops,
                    warnings=notes + tuple(PREFIX + w for w in p.warnings))
