"""Node JSON -> binpack Node: the `gpupack.io/gpu-inventory` annotation, or NVIDIA GFD labels.

The agent (scheduler/agent) writes the annotation with `encode_inventory`; the extender reads it
with `node_from_k8s`. Without it, GFD labels (`nvidia.com/gpu.count`, `gpu.product`, `gpu.memory`)
and allocatable give GPUs with no NVLink; advertised MIG devices (mixed strategy) become a static
layout packed onto as few GPUs as legal placements allow, because GFD does not say where they are.

Schema (version 1):
  {"version": 1, "status": "ok" | "unavailable", "message": str,
   "gpus": [{"index": 0, "uuid": "GPU-..", "model": "NVIDIA A100-SXM4-80GB", "memoryMiB": 81920,
             "migMode": "none" | "static" | "dynamic", "healthy": true,
             "migInstances": [{"profile": "1g.10gb", "start": 0, "uuid": "MIG-.."}]}],
   "nvlink": [[0, 12, ...], ...],  # NVLink link counts between GPU indices
   "pcie": [[0, 10, ...], ...]}    # NVML topology level (10 PIX .. 50 SYS), 0 unknown
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from binpack import Gpu, MigInstance, MigMode, Node, lookup
from binpack.types import MAX_GPUS_PER_NODE
from scheduler.translate.pod import mig_profile_of
from scheduler.translate.quantity import bytes_to_mib, to_int, to_milli

INVENTORY = "gpupack.io/gpu-inventory"
SCHEMA_VERSION = 1
_MODES = {"none": MigMode.NONE, "static": MigMode.STATIC, "dynamic": MigMode.DYNAMIC}


class InvalidInventory(ValueError):
    """The node's inventory annotation or labels cannot be read; the message names the field."""


def encode_inventory(gpus: Sequence[Gpu], nvlink: Sequence[Sequence[int]], pcie: Sequence[Sequence[int]],
                     status: str = "ok", message: str = "") -> str:
    """The annotation text for a node's GPUs (stable key order, so unchanged inventories compare equal)."""
    doc = {
        "version": SCHEMA_VERSION,
        "status": status,
        "message": message,
        "gpus": [
            {
                "index": g.index, "uuid": g.uuid, "model": g.model, "memoryMiB": g.memory_mib,
                "migMode": {v: k for k, v in _MODES.items()}[g.mig_mode], "healthy": g.healthy,
                "migInstances": [{"profile": m.profile, "start": m.start, "uuid": m.uuid} for m in g.mig_instances],
            }
            for g in gpus
        ],
        "nvlink": [list(map(int, r)) for r in nvlink],
        "pcie": [list(map(int, r)) for r in pcie],
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()


def decode_inventory(text: str) -> tuple[tuple[Gpu, ...], tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """GPUs, NVLink matrix and PCIe matrix from the annotation text."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise InvalidInventory(f"{INVENTORY}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise InvalidInventory(f"{INVENTORY}: not an object")
    if doc.get("version") != SCHEMA_VERSION:
        raise InvalidInventory(f"{INVENTORY}: schema version {doc.get('version')!r}, expected {SCHEMA_VERSION}")
    if doc.get("status", "ok") != "ok":
        return (), (), ()  # the agent found no usable NVML: the node has no GPU gpupack can place on
    try:
        gpus = tuple(_gpu(g) for g in doc.get("gpus") or [])
        n = len(gpus)
        nv = tuple(tuple(int(x) for x in r) for r in doc.get("nvlink") or []) or _zeros(n)
        pc = tuple(tuple(int(x) for x in r) for r in doc.get("pcie") or []) or _zeros(n)
    except (TypeError, KeyError, ValueError) as e:
        raise InvalidInventory(f"{INVENTORY}: {e}") from None
    return gpus, nv, pc


def _zeros(n: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(0 for _ in range(n)) for _ in range(n))


def _gpu(g: Mapping[str, Any]) -> Gpu:
    mode = _MODES.get(str(g.get("migMode", "none")))
    if mode is None:
        raise ValueError(f"gpu {g.get('index')}: migMode {g.get('migMode')!r} is not none/static/dynamic")
    insts = tuple(MigInstance(str(m["profile"]), int(m["start"]), str(m.get("uuid", "")))
                  for m in g.get("migInstances") or [])
    return Gpu(int(g["index"]), str(g["model"]), int(g.get("memoryMiB") or 0), str(g.get("uuid", "")),
               mode, insts, bool(g.get("healthy", True)))


def node_from_k8s(obj: Mapping[str, Any]) -> Node:
    """A binpack Node from a Kubernetes Node object (inventory annotation first, GFD labels second)."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise InvalidInventory("node: metadata.name is missing")
    status = obj.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    try:
        cpu = to_milli(alloc.get("cpu", 0))
        mem = bytes_to_mib(alloc.get("memory", 0))
    except ValueError as e:
        raise InvalidInventory(f"node {name}: allocatable {e}") from None
    ann = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    try:
        if INVENTORY in ann:
            gpus, nv, pc = decode_inventory(str(ann[INVENTORY]))
        else:
            gpus, nv, pc = _from_labels(labels, alloc)
        return Node(name, gpus, cpu, mem, nv, pc)
    except InvalidInventory as e:
        raise InvalidInventory(f"node {name}: {e}") from None
    except ValueError as e:
        raise InvalidInventory(f"node {name}: {e}") from None


def _from_labels(labels: Mapping[str, str], alloc: Mapping[str, Any]) -> tuple[
        tuple[Gpu, ...], tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    product = str(labels.get("nvidia.com/gpu.product", "")).removesuffix("-SHARED")
    if not product:
        return (), (), ()
    whole = to_int(alloc.get("nvidia.com/gpu", labels.get("nvidia.com/gpu.count", 0)))
    mem = int(labels.get("nvidia.com/gpu.memory", 0) or 0)
    known = lookup(product)
    if mem == 0 and known is None:
        raise InvalidInventory(f"GPU model {product!r} is unknown and nvidia.com/gpu.memory is not set")
    migs = {mig_profile_of(k): to_int(v) for k, v in alloc.items()
            if k.startswith("nvidia.com/mig-") and to_int(v) > 0}
    # checked before anything is built: a label of 10^12 GPUs must not become a loop of 10^12 steps
    if whole > MAX_GPUS_PER_NODE or sum(migs.values()) > 7 * MAX_GPUS_PER_NODE:
        raise InvalidInventory(f"{whole} GPUs / {sum(migs.values())} MIG instances: more than a node can have "
                               f"({MAX_GPUS_PER_NODE} GPUs)")
    gpus = [Gpu(i, product, mem) for i in range(max(whole, 0))]
    if migs and known is not None and known.mig is not None:
        for layout in _pack_mig(known.mig.profiles, migs):
            gpus.append(Gpu(len(gpus), product, mem, mig_mode=MigMode.STATIC, mig_instances=layout))
    return tuple(gpus), _zeros(len(gpus)), _zeros(len(gpus))


def _pack_mig(profiles: Mapping[str, Any], counts: Mapping[str, int]) -> list[tuple[MigInstance, ...]]:
    """Lay advertised MIG devices onto GPUs, largest first, at their legal starts."""
    layouts: list[tuple[int, list[MigInstance]]] = []
    order = sorted(counts, key=lambda p: -profiles[p].memory_slices if p in profiles else 0)
    for pname in order:
        if pname not in profiles:
            raise InvalidInventory(f"MIG profile {pname!r} is not one this GPU model has")
        prof = profiles[pname]
        for _ in range(counts[pname]):
            for idx, (used, insts) in enumerate(layouts):
                slot = next((s for s, m in zip(prof.starts, prof.masks(), strict=True) if not used & m), None)
                if slot is not None and not (prof.media_extension and any(
                        profiles[i.profile].media_extension for i in insts)):
                    insts.append(MigInstance(pname, slot))
                    layouts[idx] = (used | prof.masks()[prof.starts.index(slot)], insts)
                    break
            else:
                layouts.append((prof.masks()[0], [MigInstance(pname, prof.starts[0])]))
    return [tuple(insts) for _, insts in layouts]
