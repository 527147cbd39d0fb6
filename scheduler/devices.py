"""Placement <-> pod annotations: the record of what gpupack booked, and what each container sees.

`gpupack.io/devices` holds the whole placement as JSON (the ledger is rebuilt from it).
Per container, `gpupack.io/visible-devices.<container>` is the list NVIDIA_VISIBLE_DEVICES wants
(GPU or MIG UUIDs; indices when the inventory has no UUIDs), and for shares
`gpupack.io/mps-thread-percentage.<container>` / `gpupack.io/mps-memory-limit.<container>` carry
the MPS limits. The webhook points each container's env at these through downward-API fieldRefs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from binpack import DemandKind, MigSlot, Node, Placement
from scheduler.podspec import PodRequest

DEVICES = "gpupack.io/devices"
VISIBLE = "gpupack.io/visible-devices."
MPS_THREADS = "gpupack.io/mps-thread-percentage."
MPS_MEMORY = "gpupack.io/mps-memory-limit."
ENV_FOR_PREFIX = {
    VISIBLE: "NVIDIA_VISIBLE_DEVICES",
    MPS_THREADS: "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
    MPS_MEMORY: "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
}


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


def annotations_for(req: PodRequest, p: Placement, node: Node) -> dict[str, str]:
    """Every annotation bind writes: the devices record and each container's device settings."""
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
            ids = [_mig_id(node, m) for m in p.mig[start:start + c.count]]
        if not c.init:
            cursor += c.count
        per[c.name] = {"devices": ids}
    doc = {
        "v": 1, "node": p.node, "kind": p.kind.value, "gpus": list(p.gpus),
        "mig": [{"gpu": m.gpu, "profile": m.profile, "start": m.start} for m in p.mig],
        "memoryMiB": p.memory_mib, "computeMilli": p.compute_milli,
        "cpuMilli": p.cpu_milli, "hostMemoryMiB": p.host_memory_mib, "containers": per,
    }
    out = {DEVICES: orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()}
    for name, info in per.items():
        out[VISIBLE + name] = ",".join(info["devices"]) or "void"
        if p.kind is DemandKind.SHARE:
            if info["computeMilli"]:
                out[MPS_THREADS + name] = str(max(info["computeMilli"] // 10, 1))
            if info["memoryMiB"]:
                out[MPS_MEMORY + name] = f"0={info['memoryMiB']}M"
    return out


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
