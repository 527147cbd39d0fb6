"""Pod JSON -> what the pod asks of gpupack: the one pod translation, shared by extender and webhook.

Reads GPU resources (`nvidia.com/gpu`, `nvidia.com/mig-<profile>`, `gpupack.io/gpu-memory` MiB,
`gpupack.io/gpu-compute` percent) from limits (requests where limits are silent) and the
annotations of DESIGN.md (gpu-fraction, gpu-memory, gpu-model, topology, pod-group). A pod that
asks for something gpupack cannot serve raises InvalidPod with a message saying what to write; a body
that is not a pod's shape at all (containers not a list, a container not an object) raises PodShape,
which the extender answers with a 400. Every amount is range-checked here (scheduler/translate/quantity.py), so
what reaches binpack is always in 0..MAX_AMOUNT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from binpack import Demand, DemandKind, Topology
from binpack.catalog import FULL_MILLI, largest_memory_mib, mig_profile_names
from binpack.types import MAX_AMOUNT
from scheduler.translate.quantity import bytes_to_mib, parse_quantity, to_int, to_milli

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
MEMORY = "gpupack.io/gpu-memory"
COMPUTE = "gpupack.io/gpu-compute"
A_FRACTION = "gpupack.io/gpu-fraction"
A_MEMORY = "gpupack.io/gpu-memory"
A_MODEL = "gpupack.io/gpu-model"
A_TOPOLOGY = "gpupack.io/topology"
A_GROUP = "gpupack.io/pod-group"
A_GROUP_MIN = "gpupack.io/pod-group-min"
GPU_RESOURCES = (GPU, MEMORY, COMPUTE)
# One slot of gpupack's device plugin per share container (the webhook adds it): it sends the
# container through kubelet's Allocate, which hands over the GPU the share was booked on.
SHARE_SLOT = "gpupack.io/gpu-share"


class InvalidPod(ValueError):
    """The pod's GPU request is malformed; the message says what to write instead."""


class PodShape(InvalidPod):
    """The object is not shaped like a Kubernetes Pod (the API server never stores such a pod)."""


@dataclass(frozen=True, slots=True)
class ContainerAsk:
    """What one container asks: whole GPUs or MIG instances (`count`), or its part of a share."""

    name: str
    count: int = 0
    memory_mib: int = 0
    compute_milli: int = 0
    init: bool = False


@dataclass(frozen=True, slots=True)
class PodRequest:
    """A pod as gpupack reads it."""

    uid: str
    namespace: str
    name: str
    demand: Demand
    containers: tuple[ContainerAsk, ...]
    group: str = ""
    group_min: int = 0
    priority: int = 0
    # the pod states soft scheduling preferences of its own (preferred affinity, ScheduleAnyway spread):
    # kube-scheduler's scores must then see every fitting node (scheduler/extender/shortlist.py)
    soft: bool = False

    @property
    def managed(self) -> bool:
        """Whether gpupack has anything to place for this pod."""
        return self.demand.kind is not DemandKind.NONE


def _resources(c: Mapping[str, Any]) -> dict[str, Any]:
    res = _or_empty(c.get("resources"))
    if not isinstance(res, Mapping):
        raise PodShape(f"container {_name(c)!r}: resources must be an object")
    limits = _or_empty(res.get("limits"))
    requests = _or_empty(res.get("requests"))
    if not isinstance(limits, Mapping) or not isinstance(requests, Mapping):
        raise PodShape(f"container {_name(c)!r}: resources.limits/requests must be objects")
    merged = dict(requests)
    merged.update(limits)
    return merged


def _or_empty(v: Any) -> Any:
    """A field that may be null (Go's nil map): {} for null, the value itself otherwise (its type is
    checked by the caller, so `[]` or `""` where an object belongs is a shape error, not "empty")."""
    return {} if v is None else v


def _name(c: Mapping[str, Any]) -> str:
    name = c.get("name", "")
    return name[:253] if isinstance(name, str) else ""  # a DNS label at most; never a huge or odd value


def _containers(spec: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """spec.containers / spec.initContainers: a list of objects, or PodShape."""
    items = spec.get(key)
    items = [] if items is None else items
    if not isinstance(items, list):
        raise PodShape(f"pod: spec.{key} must be a list, got {type(items).__name__}")
    if not all(isinstance(c, Mapping) for c in items):
        raise PodShape(f"pod: spec.{key} entries must be objects")
    return items


def mig_profile_of(resource: str) -> str:
    """The catalog profile of a `nvidia.com/mig-<profile>` resource. NVIDIA's device plugin writes a
    profile's '+' as '.' ('+' is not allowed in a resource name): mig-1g.10gb.me is 1g.10gb+me."""
    profile = resource[len(MIG_PREFIX):]
    return profile[:-3] + "+me" if profile.endswith(".me") else profile


def gpu_resource_names(res: Mapping[str, Any]) -> list[str]:
    return [k for k in res if k in GPU_RESOURCES or k.startswith(MIG_PREFIX)]


@dataclass(frozen=True, slots=True)
class GpuKind:
    """The kind of GPU a container asks for, as binpack names it (`profile` for MIG only)."""

    kind: DemandKind
    profile: str = ""

    def __str__(self) -> str:  # how messages name it: whole, share, mig:<profile>
        return f"mig:{self.profile}" if self.kind is DemandKind.MIG else self.kind.value


def _container(c: Mapping[str, Any], init: bool, ann: Mapping[str, str]) -> tuple[ContainerAsk, GpuKind | None]:
    name = _name(c)
    res = _resources(c)
    where = f"container {name!r}"
    try:
        whole = to_int(res[GPU]) if GPU in res else 0
        mem = to_int(res[MEMORY]) if MEMORY in res else 0
        comp_pct = parse_quantity(res[COMPUTE]) if COMPUTE in res else 0
        migs = {mig_profile_of(k): to_int(v) for k, v in res.items() if k.startswith(MIG_PREFIX)}
    except ValueError as e:
        raise InvalidPod(f"{where}: {e}") from None
    migs = {p: n for p, n in migs.items() if n > 0}
    if whole < 0 or mem < 0 or comp_pct < 0:
        raise InvalidPod(f"{where}: GPU resources must not be negative")
    if len(migs) > 1:
        raise InvalidPod(f"{where}: asks for several MIG profiles {sorted(migs)}; use one profile per pod")
    for p in migs:
        if p not in mig_profile_names():
            raise InvalidPod(f"{where}: unknown MIG profile {p!r}; known: {', '.join(sorted(mig_profile_names()))}")
    comp = int(comp_pct * 10)
    if comp_pct and not 1 <= comp_pct <= 100:
        raise InvalidPod(f"{where}: {COMPUTE} is a percent of one GPU, 1..100; got {comp_pct}")
    kinds = [k for k, on in (("whole", whole), ("share", mem or comp), ("mig", migs)) if on]
    if len(kinds) > 1:
        raise InvalidPod(f"{where}: mixes {' and '.join(kinds)} GPU requests; ask for one kind per container "
                         f"(e.g. only {GPU}, or only {MIG_PREFIX}<profile>, or only {MEMORY}/{COMPUTE})")
    if kinds == ["mig"]:
        (profile, n), = migs.items()
        return ContainerAsk(name, count=n, init=init), GpuKind(DemandKind.MIG, profile)
    if kinds == ["whole"]:
        return ContainerAsk(name, count=whole, init=init), GpuKind(DemandKind.WHOLE)
    if kinds == ["share"]:
        return ContainerAsk(name, memory_mib=mem, compute_milli=comp, init=init), GpuKind(DemandKind.SHARE)
    return ContainerAsk(name, init=init), None


def _annotation_share(ann: Mapping[str, str]) -> tuple[int, int]:
    """(memory MiB, compute milli) from the KAI-style annotations; (0, 0) when absent."""
    mem = comp = 0
    try:
        if A_FRACTION in ann:
            frac = parse_quantity(ann[A_FRACTION])
            if not 0 < frac <= 1:
                raise InvalidPod(f"{A_FRACTION}: a fraction of one GPU is in (0, 1]; got {ann[A_FRACTION]!r}; "
                                 f"for more than one GPU ask for {GPU}")
            comp = max(int(frac * FULL_MILLI), 1)
        if A_MEMORY in ann:
            mem = bytes_to_mib(ann[A_MEMORY])
    except ValueError as e:
        if isinstance(e, InvalidPod):
            raise
        raise InvalidPod(f"annotation: {e}") from None
    return mem, comp


def whole_gpus_held(pod: Mapping[str, Any]) -> int:
    """nvidia.com/gpu held by a pod's containers, read leniently (a pod gpupack did not place is counted, not
    judged): a container whose resources are malformed counts nothing."""
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    total = 0
    for c in containers if isinstance(containers, list) else ():
        try:
            res = _resources(c) if isinstance(c, Mapping) else {}
            total += max(to_int(res[GPU]), 0) if GPU in res else 0
        except (PodShape, ValueError, TypeError):
            continue
    return total


def read_pod(pod: Mapping[str, Any]) -> PodRequest:
    """The one pod -> PodRequest translation; InvalidPod on a malformed GPU request."""
    if not isinstance(pod, Mapping):
        raise PodShape("pod: not an object")
    meta = _or_empty(pod.get("metadata"))
    spec = _or_empty(pod.get("spec"))
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise PodShape("pod: metadata and spec must be objects")
    ann = _or_empty(meta.get("annotations"))
    if not isinstance(ann, Mapping):
        raise PodShape("pod: metadata.annotations must be an object")
    if not all(isinstance(v, str) for v in ann.values()):
        raise PodShape("pod: metadata.annotations values must be strings")
    asks: list[ContainerAsk] = []
    kinds: set[GpuKind] = set()
    cpu = mem = 0
    init_cpu = init_mem = 0
    for key, init in (("containers", False), ("initContainers", True)):
        for c in _containers(spec, key):
            ask, kind = _container(c, init, ann)
            res = _resources(c)
            try:
                c_cpu = to_milli(res["cpu"]) if "cpu" in res else 0
                c_mem = bytes_to_mib(res["memory"]) if "memory" in res else 0
            except ValueError as e:
                raise InvalidPod(f"container {ask.name!r}: {e}") from None
            if init:
                init_cpu, init_mem = max(init_cpu, c_cpu), max(init_mem, c_mem)
            else:
                cpu, mem = cpu + c_cpu, mem + c_mem
            if kind is not None:
                kinds.add(kind)
                asks.append(ask)
    if max(cpu, init_cpu) > MAX_AMOUNT or max(mem, init_mem) > MAX_AMOUNT:
        raise InvalidPod(f"pod: its containers ask for more CPU or memory than any node has "
                         f"(at most {MAX_AMOUNT} milli-CPU / MiB)")
    if len(kinds) > 1:
        raise InvalidPod(f"pod: containers ask for different kinds of GPU ({', '.join(sorted(map(str, kinds)))}); "
                         "a pod asks for one kind")
    a_mem, a_comp = _annotation_share(ann)
    if not kinds and (a_mem or a_comp):
        kinds.add(GpuKind(DemandKind.SHARE))
        first = next(iter(_containers(spec, "containers")), {})
        asks.append(ContainerAsk(_name(first), memory_mib=a_mem, compute_milli=a_comp))
    common = _common(ann, max(cpu, init_cpu), max(mem, init_mem))
    kind = next(iter(kinds), GpuKind(DemandKind.NONE))
    app = [a for a in asks if not a.init]
    inits = [a for a in asks if a.init]
    try:
        if kind.kind is DemandKind.WHOLE:
            n = max(sum(a.count for a in app), max((a.count for a in inits), default=0))
            demand = Demand.whole(n, **common)
        elif kind.kind is DemandKind.MIG:
            n = max(sum(a.count for a in app), max((a.count for a in inits), default=0))
            demand = Demand.mig(kind.profile, n, **{k: v for k, v in common.items() if k != "topology"})
        elif kind.kind is DemandKind.SHARE:
            m = sum(a.memory_mib for a in asks) or a_mem
            comp = sum(a.compute_milli for a in asks) or a_comp
            if comp > FULL_MILLI:
                raise InvalidPod(f"pod: shares add up to {comp / 10:g}% of one GPU; at most 100%, or ask for {GPU}")
            if m > largest_memory_mib():
                raise InvalidPod(f"pod: {m} MiB of GPU memory is more than the largest GPU gpupack knows "
                                 f"({largest_memory_mib()} MiB); ask for whole GPUs with {GPU}")
            demand = Demand.share(m, comp, **{k: v for k, v in common.items() if k != "topology"})
        else:
            demand = Demand.none(cpu_milli=common["cpu_milli"], host_memory_mib=common["host_memory_mib"])
    except InvalidPod:
        raise
    except ValueError as e:
        raise InvalidPod(str(e)) from None
    group, group_min = _group(ann)
    prio = spec.get("priority")
    return PodRequest(
        uid=_text(meta.get("uid"), 128), namespace=_text(meta.get("namespace"), 253),
        name=_text(meta.get("name"), 253),
        demand=demand, containers=tuple(asks), group=group, group_min=group_min,
        # an int32 in Kubernetes; anything else is read as the default, never an unbounded number
        priority=prio if isinstance(prio, int) and not isinstance(prio, bool) and -2**31 <= prio < 2**31 else 0,
        soft=_soft(spec),
    )


def _soft(spec: Mapping[str, Any]) -> bool:
    """Whether the pod states a soft scheduling preference that kube-scheduler's score plugins weigh:
    a preferred node affinity, a preferred pod affinity or anti-affinity, or a topology spread constraint
    with whenUnsatisfiable ScheduleAnyway. Anything unreadable counts as a preference (the safe side)."""
    affinity = _or_empty(spec.get("affinity"))
    if not isinstance(affinity, Mapping):
        return True
    for kind in ("nodeAffinity", "podAffinity", "podAntiAffinity"):
        part = _or_empty(affinity.get(kind))
        if not isinstance(part, Mapping) or part.get("preferredDuringSchedulingIgnoredDuringExecution"):
            return True
    spread = spec.get("topologySpreadConstraints") or []
    if not isinstance(spread, list):
        return True
    return any(not isinstance(c, Mapping) or c.get("whenUnsatisfiable") == "ScheduleAnyway" for c in spread)


def _text(v: object, limit: int) -> str:
    """A metadata string of at most `limit` characters (Kubernetes' own limits; caches key on them)."""
    if v is not None and not isinstance(v, str):
        raise PodShape(f"pod: metadata uid, name and namespace must be strings, got {type(v).__name__}")
    if v and len(v) > limit:
        raise PodShape(f"pod: metadata uid, name or namespace longer than {limit} characters")
    return v or ""


def _common(ann: Mapping[str, str], cpu: int, mem: int) -> dict[str, Any]:
    models = frozenset(m.strip() for m in str(ann.get(A_MODEL, "")).split("|") if m.strip())
    if len(models) > 64 or any(len(m) > 128 for m in models):  # a demand is a cache key: keep it small
        raise InvalidPod(f"{A_MODEL}: at most 64 models of at most 128 characters each")
    topo_raw = str(ann.get(A_TOPOLOGY, Topology.BEST_EFFORT.value)).strip() or Topology.BEST_EFFORT.value
    try:
        topo = Topology(topo_raw)
    except ValueError:
        raise InvalidPod(f"{A_TOPOLOGY}: {topo_raw!r} is not one of nvlink, best-effort") from None
    return {"models": models, "topology": topo, "cpu_milli": cpu, "host_memory_mib": mem}


def _group(ann: Mapping[str, str]) -> tuple[str, int]:
    name = str(ann.get(A_GROUP, "")).strip()
    if len(name) > 253:
        raise InvalidPod(f"{A_GROUP}: at most 253 characters")
    raw = ann.get(A_GROUP_MIN)
    if not name:
        if raw is not None:
            raise InvalidPod(f"{A_GROUP_MIN} is set without {A_GROUP}: name the group too")
        return "", 0
    if raw is None:
        raise InvalidPod(f"{A_GROUP} {name!r} has no size: add {A_GROUP_MIN}: \"<members>\"")
    try:
        size = int(str(raw))
    except ValueError:
        raise InvalidPod(f"{A_GROUP_MIN}: {raw!r} is not a whole number") from None
    if not 1 <= size <= 10000:
        raise InvalidPod(f"{A_GROUP_MIN}: {size} is out of range 1..10000")
    return name, size
