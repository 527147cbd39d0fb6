"""ResourceSlice JSON (driver `gpu.nvidia.com`) -> the GPUs of a node, as binpack Gpus plus a device map.

NVIDIA's driver publishes one device per full GPU (`gpu-<minor>`, type "gpu") and one per existing
MIG device (`gpu-<minor>-mig-<profile>-<giProfileId>-<start>`, type "mig", naming its GPU by
`parentUUID`); a GPU in MIG mode is not published itself, so it is rebuilt from its MIG devices
(static layout, model memory from the catalog). A MIG device's placement is its `memorySliceN`
capacities (start = lowest N, size = how many). GPUs are ordered by minor number (from the device
name), then PCI bus ID, so local indices match nvidia-smi's. PCIe levels come from the standard
`resource.kubernetes.io/pcieRoot`: the same root is at most PHB apart, different roots SYS.
A device gpupack cannot read is left out with a reason (logged by the caller), never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from binpack import Gpu, MigInstance, MigMode, MigSlot, lookup
from binpack.topology import PHB, SYS
from scheduler.translate.quantity import bytes_to_mib, to_int

DRIVER = "gpu.nvidia.com"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
_MINOR = re.compile(r"^gpu-(\d+)(?:-mig-|$)")
_SLICE = re.compile(r"^memorySlice(\d+)$")
_NAME_START = re.compile(r"-(\d+)$")

Matrix = tuple[tuple[int, ...], ...]


class InvalidSlice(ValueError):
    """A ResourceSlice gpupack cannot use at all (wrong kind, no node); the message says why."""


@dataclass(frozen=True, slots=True)
class DraDevice:
    """One published device, as read: a full GPU (profile "") or a MIG device on `parent`."""

    name: str
    uuid: str
    model: str
    memory_mib: int = 0
    parent: str = ""  # the GPU's UUID, for a MIG device
    profile: str = ""
    start: int = 0
    slices: int = 0
    minor: int = -1
    pci_bus_id: str = ""
    pcie_root: str = ""


@dataclass(frozen=True, slots=True)
class ParsedSlice:
    """What one ResourceSlice says: where its devices are, and those gpupack could read."""

    name: str
    driver: str
    node: str
    pool: str
    generation: int
    devices: tuple[DraDevice, ...]
    skipped: tuple[str, ...] = ()  # one reason per device left out


@dataclass(frozen=True, slots=True)
class DraInventory:
    """A node's GPUs from its slices, and where each published device sits in them."""

    gpus: tuple[Gpu, ...]
    pcie: Matrix
    devices: Mapping[str, tuple[int, MigSlot | None]]  # device name -> (local GPU index, MIG slot or None)
    skipped: tuple[str, ...] = ()


def _attr(attrs: Mapping[str, Any], name: str) -> str:
    """An attribute's value as text; the driver's attributes may also be written fully qualified."""
    raw = attrs.get(name, attrs.get(f"{DRIVER}/{name}"))
    if not isinstance(raw, Mapping):
        return ""
    for kind in ("string", "version", "int", "bool"):
        if kind in raw:
            return str(raw[kind])
    return ""


def parse_slice(obj: Mapping[str, Any]) -> ParsedSlice:
    """The slice's devices; InvalidSlice when it is not a node-local ResourceSlice."""
    if not isinstance(obj, Mapping):
        raise InvalidSlice("resourceslice: not an object")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = str(meta.get("name") or "") if isinstance(meta, Mapping) else ""
    if not isinstance(spec, Mapping):
        raise InvalidSlice(f"resourceslice {name}: spec is not an object")
    driver = str(spec.get("driver") or "")
    pool = spec.get("pool") or {}
    pool = pool if isinstance(pool, Mapping) else {}
    node = str(spec.get("nodeName") or "")
    try:
        generation = int(pool.get("generation") or 0)
    except (TypeError, ValueError):
        raise InvalidSlice(f"resourceslice {name}: pool.generation {pool.get('generation')!r}") from None
    if driver != DRIVER:
        return ParsedSlice(name, driver, node, str(pool.get("name") or ""), generation, (),
                           (f"driver {driver!r} is not {DRIVER}",))
    if not node:
        raise InvalidSlice(f"resourceslice {name}: no spec.nodeName (devices not local to one node)")
    devices: list[DraDevice] = []
    skipped: list[str] = []
    for raw in spec.get("devices") or []:
        try:
            devices.append(_device(raw))
        except ValueError as e:
            dev = raw.get("name") if isinstance(raw, Mapping) else raw
            skipped.append(f"device {dev!r}: {e}")
    return ParsedSlice(name, driver, node, str(pool.get("name") or node), generation, tuple(devices), tuple(skipped))


def _device(raw: Any) -> DraDevice:
    if not isinstance(raw, Mapping):
        raise ValueError("not an object")
    name = str(raw.get("name") or "")
    attrs = raw.get("attributes") or {}
    cap = raw.get("capacity") or {}
    if not name or not isinstance(attrs, Mapping) or not isinstance(cap, Mapping):
        raise ValueError("needs a name, attributes and capacity")
    kind, uuid, model = _attr(attrs, "type"), _attr(attrs, "uuid"), _attr(attrs, "productName")
    if kind not in ("gpu", "mig"):
        raise ValueError(f"type {kind!r} is not gpu or mig")
    if not uuid or not model:
        raise ValueError("no uuid or productName attribute")
    m = _MINOR.match(name)
    minor = int(m.group(1)) if m else -1
    bus, root = _attr(attrs, PCI_BUS_ID), _attr(attrs, PCIE_ROOT)
    memory = _capacity(cap, "memory")
    if kind == "gpu":
        return DraDevice(name, uuid, model, bytes_to_mib(memory) if memory is not None else 0,
                         minor=minor, pci_bus_id=bus, pcie_root=root)
    parent, profile = _attr(attrs, "parentUUID"), _attr(attrs, "profile")
    if not parent or not profile:
        raise ValueError("a MIG device needs parentUUID and profile attributes")
    slots = sorted(int(s.group(1)) for k in cap if (s := _SLICE.match(str(k))) and _capacity(cap, str(k)))
    if slots:
        if slots != list(range(slots[0], slots[0] + len(slots))):
            raise ValueError(f"memory slices {slots} are not contiguous")
        start, size = slots[0], len(slots)
    else:  # no memorySliceN capacities: the placement start is the name's last number
        n = _NAME_START.search(name)
        if not n:
            raise ValueError("no memorySliceN capacities and no placement start in the name")
        start, size = int(n.group(1)), 0
    return DraDevice(name, uuid, model, 0, parent, profile, start, size, minor, bus, root)


def _capacity(cap: Mapping[str, Any], name: str) -> str | None:
    raw = cap.get(name)
    value = raw.get("value") if isinstance(raw, Mapping) else None
    if value is None:
        return None
    to_int(value)  # ValueError on a malformed quantity
    return str(value)


def inventory(devices: Iterable[DraDevice]) -> DraInventory:
    """The node's GPUs (full GPUs and MIG-mode GPUs rebuilt from their MIG devices), in minor order."""
    skipped: list[str] = []
    full: dict[str, DraDevice] = {}
    migs: dict[str, list[DraDevice]] = {}
    for d in devices:
        if d.profile:
            migs.setdefault(d.parent, []).append(d)
        elif d.uuid in full:
            skipped.append(f"device {d.name!r}: GPU {d.uuid} published twice")
        else:
            full[d.uuid] = d
    for parent in [p for p in migs if p in full]:
        skipped.extend(f"device {d.name!r}: its GPU {parent} is also published as a full GPU" for d in migs.pop(parent))
    # one row per physical GPU: (sort key, uuid, the device that describes it)
    rows = [((d.minor if d.minor >= 0 else 1 << 30, d.pci_bus_id, u), u, d) for u, d in full.items()]
    rows += [((min((d.minor for d in ds if d.minor >= 0), default=1 << 30), ds[0].pci_bus_id, u), u, ds[0])
             for u, ds in migs.items()]
    rows.sort(key=lambda r: r[0])
    gpus: list[Gpu] = []
    roots: list[str] = []
    where: dict[str, tuple[int, MigSlot | None]] = {}
    for _, uuid, d in rows:
        i = len(gpus)
        names: dict[str, tuple[int, MigSlot | None]]
        try:
            if uuid in full:
                gpu = Gpu(i, d.model, d.memory_mib, uuid)
                names = {d.name: (i, None)}
            else:
                gpu, names = _mig_gpu(i, uuid, d.model, migs[uuid])
        except ValueError as e:
            skipped.append(f"GPU {uuid}: {e}")
            continue
        gpus.append(gpu)
        roots.append(d.pcie_root)
        where.update(names)
    pcie = tuple(tuple(0 if i == j or not a or not b else (PHB if a == b else SYS) for j, b in enumerate(roots))
                 for i, a in enumerate(roots))
    return DraInventory(tuple(gpus), pcie, where, tuple(skipped))


def _mig_gpu(i: int, uuid: str, model: str, devs: list[DraDevice]) -> tuple[Gpu, dict[str, tuple[int, MigSlot | None]]]:
    """A GPU in MIG mode from its MIG devices; ValueError when the layout is not one the catalog allows."""
    known = lookup(model)
    if known is None or known.mig is None:
        raise ValueError(f"model {model!r} is not a MIG-capable model gpupack knows")
    insts = []
    for d in sorted(devs, key=lambda d: d.start):
        prof = known.mig.profiles.get(d.profile)
        if prof is None:
            raise ValueError(f"device {d.name!r}: {model} has no MIG profile {d.profile!r}")
        if d.slices and d.slices != prof.memory_slices:
            raise ValueError(f"device {d.name!r}: {d.profile} spans {prof.memory_slices} memory slices, not {d.slices}")
        insts.append(MigInstance(d.profile, d.start, d.uuid))
    gpu = Gpu(i, model, 0, uuid, MigMode.STATIC, tuple(insts))
    return gpu, {d.name: (i, MigSlot(i, d.profile, d.start)) for d in devs}
