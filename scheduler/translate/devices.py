"""Placement <-> pod annotations: the record of what gpupack booked for a pod.

`gpupack.io/devices` holds the whole placement as JSON (the ledger is rebuilt from it) and, per
container, the devices it gets (GPU or MIG UUIDs; indices when the inventory has no UUIDs;
`<gpu>:<start>` for a dynamic MIG instance not created yet) and, for shares, its memory and
compute. Only gpupack writes it: the extender at bind, the node agent when kubelet allocated other
devices (kubelet wins; see docs/handoff.md). The node agent's device plugin reads it in Allocate and
hands those devices to the container as CDI devices; there are no per-container annotations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from binpack import DemandKind, Gpu, MigSlot, Node, Placement
from scheduler.translate.pod import PodRequest

DEVICES = "gpupack.io/devices"
_MAX_RECORD = 64 * 1024  # a record for 8 GPUs with MIG is about 2 KiB; anything far larger is not ours


class InvalidDevices(ValueError):
    """A `gpupack.io/devices` annotation that cannot be read."""


def _gpu_id(node: Node, g: int) -> str:
    return node.gpus[g].uuid or str(g) if g < len(node.gpus) else str(g)


def _mig_id(node: Node, m: MigSlot) -> str:
    if m.gpu < len(node.gpus):
        for inst in node.gpus[m.gpu].mig_instances:
            if inst.profile == m.profile and inst.start == m.start and inst.uuid:
                return inst.uuid
    return f"{m.gpu}:{m.start}"  # dynamic MIG: no UUID until the agent creates the instance


def annotations_for(req: PodRequest, p: Placement, node: Node, bound_ns: int = 0) -> dict[str, str]:
    """Every annotation bind writes: the devices record. `bound_ns` (the bind's wall clock) orders pods
    bound in the same second for the node agent."""
    per: dict[str, dict[str, Any]] = {}
    cursor = 0
    for c in req.containers:
        if p.kind is DemandKind.SHARE:
            ids = [_gpu_id(node, g) for g in p.gpus]
            per[c.name] = {"devices": ids, "memoryMiB": c.memory_mib, "computeMilli": c.compute_milli}
            continue
        start = 0 if c.init else cursor
        if p.kind is DemandKind.WHOLE:
            ids = [_gpu_id(node, g) for g in p.gpus[start:start + c.count]]
        else:
            slots = p.mig[start:start + c.count]
            ids = [_mig_id(node, m) for m in slots]
        if not c.init:
            cursor += c.count
        per[c.name] = {"devices": ids}
    doc = {
        "v": 1, "node": p.node, "kind": p.kind.value, "gpus": list(p.gpus),
        "mig": [{"gpu": m.gpu, "profile": m.profile, "start": m.start} for m in p.mig],
        "memoryMiB": p.memory_mib, "computeMilli": p.compute_milli,
        "cpuMilli": p.cpu_milli, "hostMemoryMiB": p.host_memory_mib, "containers": per,
    }
    if bound_ns:
        doc["boundNs"] = bound_ns
    return {DEVICES: orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()}


def placement_from(annotations: Mapping[str, str]) -> Placement | None:
    """The placement recorded on a pod, or None when it has no devices annotation."""
    text = annotations.get(DEVICES)
    if text is None:
        return None
    try:
        doc = orjson.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise InvalidDevices(f"{DEVICES}: unknown version")
        return Placement(
            node=str(doc["node"]), gpus=tuple(int(g) for g in doc.get("gpus", [])),
            mig=tuple(MigSlot(int(m["gpu"]), str(m["profile"]), int(m["start"])) for m in doc.get("mig", [])),
            memory_mib=int(doc.get("memoryMiB", 0)), compute_milli=int(doc.get("computeMilli", 0)),
            cpu_milli=int(doc.get("cpuMilli", 0)), host_memory_mib=int(doc.get("hostMemoryMiB", 0)),
            kind=DemandKind(doc["kind"]),
        )
    except InvalidDevices:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InvalidDevices(f"{DEVICES}: {e}") from None


@dataclass(frozen=True, slots=True)
class ContainerDevices:
    """What one container of a pod was booked: device ids, and for a share its memory and compute."""

    name: str
    devices: tuple[str, ...]
    memory_mib: int = 0
    compute_milli: int = 0


@dataclass(frozen=True, slots=True)
class Record:
    """A pod's `gpupack.io/devices` as the node agent reads it."""

    node: str
    kind: DemandKind
    containers: tuple[ContainerDevices, ...]
    mig: tuple[MigSlot, ...] = ()
    bound_ns: int = 0

    def container(self, name: str) -> ContainerDevices | None:
        return next((c for c in self.containers if c.name == name), None)


def _load(text: str) -> dict[str, Any]:
    if len(text) > _MAX_RECORD:
        raise InvalidDevices(f"{DEVICES}: {len(text)} characters, more than a record can hold ({_MAX_RECORD})")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise InvalidDevices(f"{DEVICES}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise InvalidDevices(f"{DEVICES}: unknown version")
    return doc


def record_from(annotations: Mapping[str, str]) -> Record | None:
    """The per-container record on a pod, or None when it has no devices annotation."""
    text = annotations.get(DEVICES)
    if text is None:
        return None
    doc = _load(str(text))
    try:
        per = doc.get("containers", {})
        if not isinstance(per, dict):
            raise TypeError("containers is not an object")
        containers = []
        for name, info in per.items():
            ids = info["devices"]
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                raise TypeError(f"container {name!r}: devices must be a list of non-empty strings")
            containers.append(ContainerDevices(str(name), tuple(ids), int(info.get("memoryMiB", 0)),
                                               int(info.get("computeMilli", 0))))
        mig = tuple(MigSlot(int(m["gpu"]), str(m["profile"]), int(m["start"])) for m in doc.get("mig", []))
        return Record(node=str(doc["node"]), kind=DemandKind(doc["kind"]), containers=tuple(containers), mig=mig,
                      bound_ns=int(doc.get("boundNs", 0)))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidDevices(f"{DEVICES}: {e}") from None


def corrected(text: str, container: str, devices: list[str], gpus: Sequence[Gpu]) -> str:
    """The record `text` with `container` holding `devices` (what kubelet allocated), and the
    placement's GPUs / MIG slots re-derived from every container so the ledger follows."""
    doc = _load(text)
    per = doc.get("containers")
    if not isinstance(per, dict) or container not in per:
        raise InvalidDevices(f"{DEVICES}: no container {container!r}")
    per[container] = {**per[container], "devices": list(devices)}
    by_uuid = {g.uuid: g.index for g in gpus if g.uuid}
    mig_by_uuid = {i.uuid: MigSlot(g.index, i.profile, i.start) for g in gpus for i in g.mig_instances if i.uuid}
    ids = list(dict.fromkeys(d for info in per.values() for d in info.get("devices", [])))
    if doc.get("kind") == DemandKind.MIG.value:
        slots = [mig_by_uuid[d] for d in ids if d in mig_by_uuid]
        if len(slots) == len(ids):
            doc["mig"] = [{"gpu": m.gpu, "profile": m.profile, "start": m.start} for m in slots]
    else:
        indices = [by_uuid[d] if d in by_uuid else int(d) for d in ids if d in by_uuid or d.isdigit()]
        if len(indices) == len(ids):
            doc["gpus"] = indices
    doc["correctedBy"] = "node-agent"
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
