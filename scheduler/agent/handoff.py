"""The device hand-off's decisions, pure: what the node advertises, which pod kubelet is admitting,
and what Allocate answers. No gRPC, no Kubernetes client, no clock (scheduler/agent/plugin.py
serves these over kubelet's device plugin API).

kubelet's calls carry no pod identity, so the pod is found from gpupack's records: the device ids
kubelet asks to allocate are compared with the bookings of the pods bound to this node. gpupack
never books a device twice, so for whole GPUs and MIG an exact match names one booking. When
kubelet allocated other devices than the record (a restart, a race, an ambiguous preference),
kubelet wins: the container gets what kubelet allocated, and the answer carries a correction for
the record. docs/handoff.md says how each ambiguous case resolves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from binpack import DemandKind, Gpu, MigMode
from scheduler.agent.cdi import NVIDIA_KIND, qualified
from scheduler.translate.devices import InvalidDevices, Record, record_from
from scheduler.translate.pod import SHARE_SLOT

GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
SHARE_RESOURCE = SHARE_SLOT
SLOT_SEP = "::"  # a share slot's id is <GPU UUID>::<n>, as NVIDIA's time-slicing replicas are named
DEVICES_ENV = "GPUPACK_DEVICES"


class Mode(StrEnum):
    """How Allocate hands devices to the runtime."""

    CDI_CRI = "cdi-cri"  # CDIDevices in the CRI request (containerd >= 1.7, CRI-O >= 1.28)
    CDI_ANNOTATIONS = "cdi-annotations"  # cdi.k8s.io/* container annotations (older runtimes with CDI on)
    ENVVAR = "envvar"  # legacy: NVIDIA_VISIBLE_DEVICES for the nvidia runtime's envvar strategy


@dataclass(frozen=True, slots=True)
class Device:
    """One device kubelet can allocate: its id, health, and the CDI device name it stands for."""

    id: str
    healthy: bool
    cdi_name: str  # the device's name in NVIDIA's spec (a GPU or MIG UUID); a share slot names its GPU


def mig_resource(profile: str) -> str:
    """NVIDIA's mixed-strategy resource for a profile ('+' is not allowed: 1g.10gb+me -> mig-1g.10gb.me)."""
    return MIG_PREFIX + profile.replace("+", ".")


def offers(gpus: Sequence[Gpu], share_slots: int) -> dict[str, tuple[Device, ...]]:
    """Every resource this node advertises, with its devices: whole GPUs (not in MIG mode), MIG
    instances by UUID under their profile's resource, and `share_slots` share slots per whole GPU."""
    out: dict[str, list[Device]] = {GPU_RESOURCE: [], SHARE_RESOURCE: []}
    for g in gpus:
        if not g.uuid:
            continue  # no UUID, no CDI name: NVML always has one, a GFD-only node is not the agent's
        if g.mig_mode is MigMode.NONE:
            out[GPU_RESOURCE].append(Device(g.uuid, g.healthy, g.uuid))
            out[SHARE_RESOURCE].extend(Device(f"{g.uuid}{SLOT_SEP}{k}", g.healthy, g.uuid) for k in range(share_slots))
            continue
        for inst in g.mig_instances:
            if inst.uuid:
                out.setdefault(mig_resource(inst.profile), []).append(Device(inst.uuid, g.healthy, inst.uuid))
    if share_slots <= 0:
        del out[SHARE_RESOURCE]
    return {r: tuple(d) for r, d in out.items()}


def cdi_names(devices: Iterable[Device]) -> list[str]:
    """The qualified CDI names of devices, each once, in order."""
    return list(dict.fromkeys(qualified(NVIDIA_KIND, d.cdi_name) for d in devices))


@dataclass(frozen=True, slots=True)
class Booking:
    """One container's booked devices of one resource, from the record on its pod."""

    uid: str
    namespace: str
    name: str
    container: str
    resource: str
    devices: tuple[str, ...]  # kubelet ids; for a share, the GPU UUID (any free slot of it will do)
    order: tuple[str, int, str, int] = ("", 0, "", 0)  # creation time, bind time, ns/name, container index
    memory_mib: int = 0
    compute_milli: int = 0
    problem: str = ""  # why it cannot be served as booked (names a device this node lacks, ...)

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.namespace, self.name, self.container


@dataclass(frozen=True, slots=True)
class Bookings:
    """Every booking on this node, and the pods whose records could not be read (pod -> why)."""

    items: tuple[Booking, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()


def _mig_ids(rec: Record, ids: Sequence[str], gpus: Sequence[Gpu]) -> tuple[str, list[str], str]:
    """(resource, MIG UUIDs, problem) for a MIG container: a `<gpu>:<start>` placeholder (dynamic MIG)
    is the instance the agent created there, handed over by its real UUID."""
    by_uuid = {i.uuid: i.profile for g in gpus for i in g.mig_instances if i.uuid}
    out: list[str] = []
    profiles: set[str] = set()
    for d in ids:
        if d in by_uuid:
            out.append(d)
            profiles.add(by_uuid[d])
            continue
        gpu, _, start = d.partition(":")
        slot = next((m for m in rec.mig if f"{m.gpu}:{m.start}" == d), None) if start else None
        inst = None
        if slot is not None and gpu.isdigit() and int(gpu) < len(gpus):
            inst = next((i for i in gpus[int(gpu)].mig_instances
                         if i.start == slot.start and i.profile == slot.profile and i.uuid), None)
        if inst is None:
            what = f"MIG slot {d} ({slot.profile})" if slot else f"MIG device {d}"
            return "", [], f"{what} is not on this node (not created yet, or another node's)"
        out.append(inst.uuid)
        profiles.add(inst.profile)
    if len(profiles) != 1:
        return "", [], f"MIG devices of {len(profiles)} profiles in one container"
    return mig_resource(profiles.pop()), out, ""


def _pod_bookings(pod: Mapping[str, Any], rec: Record, gpus: Sequence[Gpu]) -> list[Booking]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    uuids = {g.uuid for g in gpus if g.uuid} | {i.uuid for g in gpus for i in g.mig_instances if i.uuid}
    order_in_pod = [str(c.get("name", "")) for key in ("initContainers", "containers")
                    for c in spec.get(key) or [] if isinstance(c, Mapping)]
    out = []
    for c in rec.containers:
        problem = ""
        if rec.kind is DemandKind.MIG:
            resource, ids, problem = _mig_ids(rec, c.devices, gpus)
            resource = resource or MIG_PREFIX + "?"
            ids = ids or list(c.devices)
        else:
            resource = SHARE_RESOURCE if rec.kind is DemandKind.SHARE else GPU_RESOURCE
            ids = list(c.devices)
            unknown = [d for d in ids if d not in uuids]
            if unknown:
                problem = f"devices {', '.join(unknown)} are not on this node"
        idx = order_in_pod.index(c.name) if c.name in order_in_pod else len(order_in_pod)
        out.append(Booking(
            uid=str(meta.get("uid") or ""), namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""), container=c.name, resource=resource, devices=tuple(ids),
            order=(str(meta.get("creationTimestamp") or ""), rec.bound_ns,
                   f"{meta.get('namespace')}/{meta.get('name')}", idx),
            memory_mib=c.memory_mib, compute_milli=c.compute_milli, problem=problem))
    return out


def bookings(pods: Iterable[Mapping[str, Any]], node: str, gpus: Sequence[Gpu]) -> Bookings:
    """The bookings of the live pods bound to `node` that carry a record, oldest first."""
    items: list[Booking] = []
    bad: list[tuple[str, str]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        if not isinstance(meta, Mapping) or not isinstance(spec, Mapping) or spec.get("nodeName") != node:
            continue
        if meta.get("deletionTimestamp") or (isinstance(status, Mapping) and
                                              status.get("phase") in ("Succeeded", "Failed")):
            continue  # going away: kubelet will not admit it, and its devices are being freed
        ann = meta.get("annotations") or {}
        who = f"{meta.get('namespace')}/{meta.get('name')}"
        try:
            rec = record_from(ann if isinstance(ann, Mapping) else {})
        except InvalidDevices as e:
            bad.append((who, str(e)))
            continue
        if rec is None:
            continue
        if rec.node != node:
            bad.append((who, f"its record names node {rec.node!r}, not {node!r}"))
            continue
        items.extend(_pod_bookings(pod, rec, gpus))
    items.sort(key=lambda b: b.order)
    return Bookings(tuple(items), tuple(bad))


def _gpu_of(device_id: str) -> str:
    return device_id.split(SLOT_SEP, 1)[0]


def _wants(b: Booking, resource: str, size: int) -> bool:
    return b.resource == resource and not b.problem and (
        size == 1 if resource == SHARE_RESOURCE else len(b.devices) == size)


def prefer(resource: str, available: Sequence[str], must: Sequence[str], size: int, books: Bookings,
           admitted: Collection[tuple[str, str, str]]) -> list[str]:
    """GetPreferredAllocation: the booked devices of the oldest container still waiting for `size`
    devices of `resource` whose booking kubelet can give; [] (kubelet chooses) when none fits."""
    free = set(available)
    for b in books.items:
        if b.key in admitted or not _wants(b, resource, size):
            continue
        if resource == SHARE_RESOURCE:
            slots = [d for d in available if _gpu_of(d) == b.devices[0]]
            pick = [d for d in must if _gpu_of(d) == b.devices[0]] or slots[:1]
            if pick and all(_gpu_of(m) == b.devices[0] for m in must):
                return pick[:1]
            continue
        if set(b.devices) <= free and set(must) <= set(b.devices):
            return list(b.devices)
    return []


@dataclass(frozen=True, slots=True)
class Answer:
    """Allocate's verdict for one container: the devices it gets, whose booking that is, and the
    record correction when kubelet allocated other devices than booked. `error` fails admission."""

    devices: tuple[str, ...] = ()
    booking: Booking | None = None
    correction: tuple[str, ...] | None = None
    error: str = ""


def allocate(resource: str, ids: Sequence[str], books: Bookings, admitted: Collection[tuple[str, str, str]],
             node: str, taken: Collection[tuple[str, str, str]] = ()) -> Answer:
    """Allocate for one container: kubelet's `ids` matched against the bookings (see the module doc)."""
    if not ids:
        return Answer(error=f"gpupack: kubelet asked for no {resource} device")
    want = set(ids)
    open_ = [b for b in books.items if b.resource == resource and b.key not in taken]
    if resource == SHARE_RESOURCE:
        gpus = {_gpu_of(d) for d in ids}
        exact = [b for b in open_ if len(gpus) == 1 and b.devices == (next(iter(gpus)),)]
    else:
        exact = [b for b in open_ if set(b.devices) == want]
    if exact:  # a restart re-asks for a container already admitted: the same answer again
        b = next((b for b in exact if b.key not in admitted), exact[0])
        return Answer(tuple(ids), b)
    waiting = [b for b in open_ if b.key not in admitted and _wants(b, resource, len(ids))]
    if waiting:
        b = waiting[0]
        return Answer(tuple(ids), b, correction=(_gpu_of(ids[0]),) if resource == SHARE_RESOURCE else tuple(ids))
    return Answer(error=_no_booking(resource, ids, books, node))


def _no_booking(resource: str, ids: Sequence[str], books: Bookings, node: str) -> str:
    """Why no booking matches: the message the pod's admission failure shows."""
    n = len(ids)
    msg = (f"gpupack: kubelet is admitting a container that asks {n} {resource}, and no pod bound to node "
           f"{node} by gpupack-scheduler has a container booked for that")
    broken = [b for b in books.items if b.resource == resource and b.problem]
    if broken:
        b = broken[0]
        msg += f"; pod {b.pod} container {b.container!r} cannot get its booking: {b.problem}"
    elif books.unreadable:
        who, why = books.unreadable[0]
        msg += f"; pod {who} has an unreadable record: {why}"
    return msg + ("; GPU pods on gpupack nodes must be scheduled by gpupack-scheduler (schedulerName): "
                  "delete the pod and create it again so that gpupack places it")


def response_fields(answer: Answer, devices: Mapping[str, Device], mode: Mode) -> dict[str, Any]:
    """The ContainerAllocateResponse fields (envs, annotations, cdi_devices) for a granted answer."""
    got = [devices[d] for d in answer.devices if d in devices]
    names = cdi_names(got)
    uuids = list(dict.fromkeys(d.cdi_name for d in got))
    envs = {DEVICES_ENV: ",".join(uuids)}
    b = answer.booking
    if b is not None and b.resource == SHARE_RESOURCE:
        if b.compute_milli:
            envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(max(b.compute_milli // 10, 1))
        if b.memory_mib:
            envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={b.memory_mib}M"
    out: dict[str, Any] = {"envs": envs, "annotations": {}, "cdi_devices": []}
    if mode is Mode.CDI_CRI:
        out["cdi_devices"] = names
    elif mode is Mode.CDI_ANNOTATIONS:
        key = hashlib.sha256(",".join(answer.devices).encode()).hexdigest()[:16]
        out["annotations"] = {f"cdi.k8s.io/gpupack_{key}": ",".join(names)}
    else:
        envs["NVIDIA_VISIBLE_DEVICES"] = ",".join(uuids)
    return out


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A container whose devices in kubelet's PodResources differ from gpupack's record."""

    namespace: str
    name: str
    container: str
    resource: str
    kubelet: tuple[str, ...]
    record: tuple[str, ...] = field(default=())


def mismatches(books: Bookings,
               allocated: Mapping[tuple[str, str, str], Mapping[str, Sequence[str]]]) -> list[Mismatch]:
    """Containers kubelet admitted (PodResources `allocated`: (ns, pod, container) -> resource -> ids)
    whose devices differ from their booking, and kubelet allocations of gpupack resources that no
    record books."""
    out: list[Mismatch] = []
    booked = {(b.key, b.resource): b for b in books.items}
    pods = {b.key[:2] for b in books.items}
    for key, per in allocated.items():
        for resource, ids in per.items():
            if not (resource in (GPU_RESOURCE, SHARE_RESOURCE) or resource.startswith(MIG_PREFIX)):
                continue
            b = booked.get((key, resource))
            got = tuple(sorted({_gpu_of(i) for i in ids} if resource == SHARE_RESOURCE else set(ids)))
            if b is None:
                if key[:2] not in pods:
                    out.append(Mismatch(*key, resource, got))
                continue
            if got != tuple(sorted(b.devices)):
                out.append(Mismatch(*key, resource, got, b.devices))
    return out


__all__ = [
    "DEVICES_ENV", "GPU_RESOURCE", "MIG_PREFIX", "SHARE_RESOURCE", "SLOT_SEP", "Answer", "Booking", "Bookings",
    "Device", "Mismatch", "Mode", "allocate", "bookings", "cdi_names", "mig_resource", "mismatches", "offers",
    "prefer", "response_fields",
]
