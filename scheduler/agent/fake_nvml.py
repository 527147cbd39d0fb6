"""A fake NVML: pynvml's function names over an in-memory board, for tests and for trying the agent
on a machine without GPUs (`gpupack agent --once --print --fake dgx1-v100`).

It models what the agent reads and writes: devices (name, UUID, memory, PCI bus id), the PCIe
tree (socket, PCIe switch), NVLink links with their far ends (a GPU, an NVSwitch, or down), MIG
GPU and compute instances with NVML's profile IDs and legal placements for an 8-slot A100-80GB
(tests/data/shared/reference/mig.md), and the failures: no library, no driver, a lost GPU, old drivers.
Errors are pynvml's own NVMLError, so `except nvml.NVMLError` means the same on both.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

_LOST, _NOT_SUPPORTED, _INVALID, _NOT_FOUND, _IN_USE, _NO_ROOM = 15, 3, 2, 6, 19, 23
_FUNCTION_NOT_FOUND = 13
_TIMEOUT = 10

# A100-80GB GI profiles: enum -> (NVML profile id, compute slices, memory slices, name, legal starts, max).
A100_80GB_PROFILES: dict[int, tuple[int, int, int, str, tuple[int, ...], int]] = {
    0: (19, 1, 1, "1g.10gb", (0, 1, 2, 3, 4, 5, 6), 7),
    7: (20, 1, 1, "1g.10gb+me", (0, 1, 2, 3, 4, 5, 6), 1),
    9: (15, 1, 2, "1g.20gb", (0, 2, 4, 6), 4),
    1: (14, 2, 2, "2g.20gb", (0, 2, 4), 3),
    2: (9, 3, 4, "3g.40gb", (0, 4), 2),
    3: (5, 4, 4, "4g.40gb", (0,), 1),
    4: (0, 7, 8, "7g.80gb", (0,), 1),
}
_CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6}  # CI profile enum (= fake CI profile id) -> slices


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass
class FakeCi:
    ci_id: int
    slices: int
    uuid: str
    busy: bool = False


@dataclass
class FakeGi:
    gi_id: int
    enum: int
    start: int
    cis: list[FakeCi] = field(default_factory=list)
    busy: bool = False


@dataclass
class FakeGpu:
    """One GPU. `links` lists each NVLink's far end: ("gpu", index), ("switch", n) or ("down", 0);
    None means the GPU has no NVLink (NVML answers NOT_SUPPORTED). `lost`: "" (fine), "handle"
    (no handle at all) or "calls" (a handle, then GPU_IS_LOST on every call)."""

    name: str
    memory_mib: int
    uuid: str
    bus: str
    socket: int
    pcie_switch: int
    links: list[tuple[str, int]] | None = None
    mig_capable: bool = False
    mig_enabled: bool = False
    gis: list[FakeGi] = field(default_factory=list)
    lost: str = ""


@dataclass(frozen=True)
class _H:
    """A handle: a GPU, one of its GPU instances, one compute instance, or a MIG device."""

    gpu: int
    gi: int = -1
    ci: int = -1
    kind: str = "gpu"


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


@dataclass
class _EventSet:
    queue: list[_Obj] = field(default_factory=list)
    registered: set[int] = field(default_factory=set)


class FakeNvml:
    """An object that answers pynvml's calls for one board. Only the calls below exist, so code that
    reaches for anything else fails loudly instead of touching a real GPU."""

    NVMLError = pynvml.NVMLError
    c_nvmlGpuInstance_t = ctypes.py_object
    c_nvmlComputeInstance_t = ctypes.py_object
    c_nvmlGpuInstancePlacement_t = pynvml.c_nvmlGpuInstancePlacement_t

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None, old_driver: bool = False,
                 partitions: list[set[int]] | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.old_driver = old_driver  # no remote device type, no P2P status
        self.partitions = partitions  # NVLink fabric partitions (P2P status says no across them)
        self.calls: list[str] = []  # names of the mutating calls, for tests
        self.inits = 0
        self._event_sets: list[_EventSet] = []
        self._events = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("NVML_", "c_nvml")):  # constants and ctypes structs are pynvml's own
            return getattr(pynvml, name)
        raise AttributeError(f"fake NVML has no {name}")

    # --- events: XID errors (tests inject them with inject_xid)
    def nvmlEventSetCreate(self) -> _EventSet:
        es = _EventSet()
        with self._events:
            self._event_sets.append(es)
        return es

    def nvmlDeviceRegisterEvents(self, h: _H, event_types: int, es: _EventSet) -> None:
        g = self._gpu(h)
        if g.lost or not event_types & pynvml.nvmlEventTypeXidCriticalError:
            raise _err(_NOT_SUPPORTED)
        with self._events:
            es.registered.add(h.gpu)

    def nvmlEventSetWait_v2(self, es: _EventSet, timeout_ms: int) -> _Obj:
        with self._events:
            if not es.queue:
                self._events.wait(timeout_ms / 1000)
            if not es.queue:
                raise _err(_TIMEOUT)
            return es.queue.pop(0)

    def nvmlEventSetFree(self, es: _EventSet) -> None:
        with self._events:
            if es in self._event_sets:
                self._event_sets.remove(es)

    def inject_xid(self, index: int, xid: int) -> None:
        """An XID error on GPU `index`, as the driver would report it to every registered event set."""
        with self._events:
            for es in self._event_sets:
                if index in es.registered:
                    es.queue.append(_Obj(device=_H(index), eventType=pynvml.nvmlEventTypeXidCriticalError,
                                         eventData=xid, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF))
            self._events.notify_all()

    # --- life cycle and devices
    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise _err(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> _H:
        if not 0 <= i < len(self.gpus):
            raise _err(_INVALID)
        if self.gpus[i].lost == "handle":
            raise _err(_LOST)
        return _H(i)

    def _gpu(self, h: _H) -> FakeGpu:
        g = self.gpus[h.gpu]
        if g.lost:
            raise _err(_LOST)
        return g

    def nvmlDeviceGetName(self, h: _H) -> str:
        return self._gpu(h).name

    def nvmlDeviceGetUUID(self, h: _H) -> str:
        g = self._gpu(h)
        return g.uuid if h.kind == "gpu" else self._ci(h).uuid

    def nvmlDeviceGetMemoryInfo(self, h: _H) -> _Obj:
        return _Obj(total=self._gpu(h).memory_mib * 1024 * 1024, used=0, free=0)

    def nvmlDeviceGetPciInfo(self, h: _H) -> _Obj:
        return _Obj(busId=self._gpu(h).bus.encode())  # bytes, as older bindings answer

    def nvmlDeviceGetTopologyCommonAncestor(self, a: _H, b: _H) -> int:
        ga, gb = self._gpu(a), self._gpu(b)
        if ga.pcie_switch == gb.pcie_switch:
            return 10  # SINGLE: the same PCIe switch
        return 40 if ga.socket == gb.socket else 50  # NODE / SYSTEM

    # --- NVLink
    def _link(self, h: _H, link: int) -> tuple[str, int]:
        g = self._gpu(h)
        if g.links is None:
            raise _err(_NOT_SUPPORTED)
        if not 0 <= link < len(g.links):
            raise _err(_INVALID)
        return g.links[link]

    def nvmlDeviceGetNvLinkState(self, h: _H, link: int) -> int:
        return 0 if self._link(h, link)[0] == "down" else 1

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h: _H, link: int) -> int:
        if self.old_driver:
            raise _err(_FUNCTION_NOT_FOUND)
        return {"gpu": 0, "switch": 2}.get(self._link(h, link)[0], 255)

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: _H, link: int) -> _Obj:
        kind, far = self._link(h, link)
        if kind == "gpu":  # the far end spelled with a short domain, as some drivers do
            return _Obj(busId=("0000:" + self.gpus[far].bus.split(":", 1)[1]).encode())
        return _Obj(busId=f"00000000:{0xc0 + far:02x}:00.0".encode())

    def nvmlDeviceGetP2PStatus(self, a: _H, b: _H, index: int) -> int:
        self._gpu(a), self._gpu(b)
        if self.old_driver:
            raise _err(_NOT_SUPPORTED)
        if self.partitions and not any(a.gpu in p and b.gpu in p for p in self.partitions):
            return 5  # NVML_P2P_STATUS_NOT_SUPPORTED
        return 0

    # --- MIG: reading
    def nvmlDeviceGetMigMode(self, h: _H) -> list[int]:
        g = self._gpu(h)
        if not g.mig_capable:
            raise _err(_NOT_SUPPORTED)
        return [int(g.mig_enabled), int(g.mig_enabled)]

    def nvmlDeviceGetGpuInstanceProfileInfo(self, h: _H, enum: int, version: int = 2) -> _Obj:
        self._gpu(h)
        if enum not in A100_80GB_PROFILES:
            raise _err(_NOT_SUPPORTED)
        pid, slices, mem, name, _, mx = A100_80GB_PROFILES[enum]
        return _Obj(id=pid, sliceCount=slices, instanceCount=mx, memorySizeMB=mem * 10240, name=f"MIG {name}".encode())

    def _profile(self, pid: int) -> tuple[int, tuple[int, int, int, str, tuple[int, ...], int]]:
        for enum, row in A100_80GB_PROFILES.items():
            if row[0] == pid:
                return enum, row
        raise _err(_INVALID)

    def _mig_devices(self, g: FakeGpu) -> list[tuple[FakeGi, FakeCi]]:
        return [(gi, ci) for gi in sorted(g.gis, key=lambda x: x.gi_id) for ci in sorted(gi.cis, key=lambda c: c.ci_id)]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: _H) -> int:
        return 7 if self._gpu(h).mig_capable else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _H, k: int) -> _H:
        devs = self._mig_devices(self._gpu(h))
        if not 0 <= k < len(devs):
            raise _err(_NOT_FOUND)
        gi, ci = devs[k]
        return _H(h.gpu, gi.gi_id, ci.ci_id, "mig")

    def nvmlDeviceGetGpuInstanceId(self, h: _H) -> int:
        return h.gi

    def nvmlDeviceGetComputeInstanceId(self, h: _H) -> int:
        return h.ci

    def nvmlDeviceGetAttributes(self, h: _H) -> _Obj:
        gi, ci = self._gi(h), self._ci(h)
        return _Obj(gpuInstanceSliceCount=A100_80GB_PROFILES[gi.enum][1], computeInstanceSliceCount=ci.slices)

    def _gi(self, h: _H) -> FakeGi:
        for gi in self._gpu(h).gis:
            if gi.gi_id == h.gi:
                return gi
        raise _err(_NOT_FOUND)

    def _ci(self, h: _H) -> FakeCi:
        for ci in self._gi(h).cis:
            if ci.ci_id == h.ci:
                return ci
        raise _err(_NOT_FOUND)

    def nvmlDeviceGetGpuInstanceById(self, h: _H, gi_id: int) -> _H:
        return _H(h.gpu, self._gi(_H(h.gpu, gi_id)).gi_id, kind="gi")

    def nvmlGpuInstanceGetInfo(self, h: _H) -> _Obj:
        gi = self._gi(h)
        pid, _, mem, *_ = A100_80GB_PROFILES[gi.enum]
        return _Obj(id=gi.gi_id, profileId=pid, placement=_Obj(start=gi.start, size=mem), device=_H(h.gpu))

    def nvmlDeviceGetGpuInstances(self, h: _H, pid: int, arr: Any, count_ref: Any) -> int:
        enum, _ = self._profile(pid)
        found = [gi for gi in self._gpu(h).gis if gi.enum == enum]
        for k, gi in enumerate(found):
            arr[k] = _H(h.gpu, gi.gi_id, kind="gi")
        count_ref._obj.value = len(found)
        return 0

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, h: _H, enum: int, eng: int, version: int = 2) -> _Obj:
        gi = self._gi(h)
        if _CI_SLICES.get(enum, 99) > A100_80GB_PROFILES[gi.enum][1]:
            raise _err(_NOT_SUPPORTED)
        return _Obj(id=enum, sliceCount=_CI_SLICES[enum])

    def nvmlGpuInstanceGetComputeInstances(self, h: _H, pid: int, arr: Any, count_ref: Any) -> int:
        found = [ci for ci in self._gi(h).cis if ci.slices == _CI_SLICES[pid]]
        for k, ci in enumerate(found):
            arr[k] = _H(h.gpu, h.gi, ci.ci_id, "ci")
        count_ref._obj.value = len(found)
        return 0

    # --- MIG: writing
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, h: _H, pid: int, placement_ref: Any) -> _H:
        g = self._gpu(h)
        p = getattr(placement_ref, "_obj", placement_ref)
        enum, (_, _, mem, _, starts, mx) = self._profile(pid)
        if not g.mig_enabled or p.start not in starts or p.size != mem:
            raise _err(_INVALID)
        used = 0
        for gi in g.gis:
            used |= ((1 << A100_80GB_PROFILES[gi.enum][2]) - 1) << gi.start
        same = sum(1 for gi in g.gis if gi.enum == enum)
        if used & (((1 << mem) - 1) << p.start) or same >= mx:
            raise _err(_NO_ROOM)
        gi_id = min(set(range(1, 15)) - {gi.gi_id for gi in g.gis})
        g.gis.append(FakeGi(gi_id, enum, p.start))
        self.calls.append(f"create-gi {h.gpu} {A100_80GB_PROFILES[enum][3]}@{p.start}")
        return _H(h.gpu, gi_id, kind="gi")

    def nvmlGpuInstanceCreateComputeInstance(self, h: _H, ci_pid: int) -> _H:
        gi = self._gi(h)
        slices = _CI_SLICES[ci_pid]
        if sum(c.slices for c in gi.cis) + slices > A100_80GB_PROFILES[gi.enum][1]:
            raise _err(_NO_ROOM)
        ci_id = len(gi.cis) and max(c.ci_id for c in gi.cis) + 1
        gi.cis.append(FakeCi(ci_id, slices, mig_uuid(self.gpus[h.gpu].uuid, gi.gi_id, ci_id)))
        self.calls.append(f"create-ci {h.gpu} gi{gi.gi_id}")
        return _H(h.gpu, gi.gi_id, ci_id, "ci")

    def nvmlComputeInstanceDestroy(self, h: _H) -> int:
        gi, ci = self._gi(h), self._ci(h)
        if ci.busy:
            raise _err(_IN_USE)
        gi.cis.remove(ci)
        self.calls.append(f"destroy-ci {h.gpu} gi{gi.gi_id}")
        return 0

    def nvmlGpuInstanceDestroy(self, h: _H) -> int:
        g, gi = self._gpu(h), self._gi(h)
        if gi.cis or gi.busy:
            raise _err(_IN_USE)
        g.gis.remove(gi)
        self.calls.append(f"destroy-gi {h.gpu} gi{gi.gi_id}")
        return 0


def mig_uuid(gpu_uuid: str, gi: int, ci: int) -> str:
    """Unique per GPU (its last two hex digits are kept), GI and CI, as real MIG UUIDs are per node."""
    body = gpu_uuid.removeprefix("GPU-")
    return f"MIG-{body[:-6]}{body[-2:]}{gi:02x}{ci:02x}"


def _gpu_uuid(board: int, i: int) -> str:
    return f"GPU-{board:08x}-0000-4000-8000-{i:012x}"


def add_instance(g: FakeGpu, profile: str, start: int, cis: int = 1) -> None:
    """Put a GI (and `cis` equal compute instances filling it) on a fake GPU, as nvidia-smi would."""
    enum = next(e for e, row in A100_80GB_PROFILES.items() if row[3] == profile)
    gi = FakeGi(len(g.gis) + 1, enum, start)
    slices = A100_80GB_PROFILES[enum][1] // cis
    gi.cis = [FakeCi(k, slices, mig_uuid(g.uuid, gi.gi_id, k)) for k in range(cis)]
    g.gis.append(gi)


# --- boards -----------------------------------------------------------------------------------

# DGX-1 V100 hybrid cube-mesh as each GPU's six links (topology.md: NV2 on 0-3 0-4 1-2 1-5 2-3 4-7 5-6 6-7).
DGX1_WIRING = ((1, 2, 3, 3, 4, 4), (0, 2, 2, 3, 5, 5), (0, 1, 1, 3, 3, 6), (0, 0, 1, 2, 2, 7),
               (0, 0, 5, 6, 7, 7), (1, 1, 4, 6, 6, 7), (2, 4, 5, 5, 7, 7), (3, 4, 4, 5, 6, 6))
# Mixed MIG layouts on the NVSwitch A100 box, per GPU: (profile, start, compute instances).
A100_LAYOUTS: tuple[tuple[tuple[str, int, int], ...] | None, ...] = (
    None,  # MIG off: a whole GPU
    tuple(("1g.10gb", s, 1) for s in range(7)),
    (("3g.40gb", 0, 1), ("3g.40gb", 4, 1)),
    (("4g.40gb", 0, 1), ("2g.20gb", 4, 1), ("1g.10gb", 6, 1)),
    (("1g.20gb", 0, 1), ("1g.20gb", 2, 1), ("1g.20gb", 4, 1), ("1g.10gb+me", 6, 1)),
    (),  # MIG on, no instances yet
    (("7g.80gb", 0, 1),),
    (("3g.40gb", 0, 3), ("3g.40gb", 4, 1)),  # the first GI is split into 3 compute instances
)


def a100_nvswitch(**kw: Any) -> FakeNvml:
    """HGX A100 8-GPU: 12 NVLinks per GPU, two to each of 6 NVSwitches; mixed MIG layouts."""
    gpus = []
    for i, layout in enumerate(A100_LAYOUTS):
        g = FakeGpu("NVIDIA A100-SXM4-80GB", 81920, _gpu_uuid(0xA100, i), f"00000000:{0x07 + 0x10 * i:02x}:00.0",
                    i // 4, i // 2, [("switch", k // 2) for k in range(12)], True, layout is not None)
        for profile, start, cis in layout or ():
            add_instance(g, profile, start, cis)
        gpus.append(g)
    return FakeNvml(gpus, **kw)


def dgx1_v100(lost: dict[int, str] | None = None) -> FakeNvml:
    """DGX-1 with 8 V100: hybrid cube-mesh NVLink, PLX switch pairs, two sockets."""
    gpus = [FakeGpu("Tesla V100-SXM2-16GB", 16160, _gpu_uuid(0xD61, i), f"00000000:{0x10 * (i + 1):02x}:00.0",
                    i // 4, i // 2, [("gpu", j) for j in DGX1_WIRING[i]] + [("down", 0)],
                    lost=(lost or {}).get(i, "")) for i in range(8)]
    return FakeNvml(gpus)


def t4_pcie(lost: dict[int, str] | None = None) -> FakeNvml:
    """4 x T4 on PCIe, two per socket behind one switch each; no NVLink."""
    gpus = [FakeGpu("Tesla T4", 15360, _gpu_uuid(0x74, i), f"00000000:{0x3b + 0x40 * i:02x}:00.0", i // 2, i // 2,
                    lost=(lost or {}).get(i, "")) for i in range(4)]
    return FakeNvml(gpus)


BOARDS: dict[str, Callable[[], FakeNvml]] = {
    "a100-nvswitch": a100_nvswitch,
    "a100-nvswitch-old-driver": lambda: a100_nvswitch(old_driver=True),
    "a100-nvswitch-partitioned": lambda: a100_nvswitch(partitions=[{0, 1, 2, 3}, {4, 5, 6, 7}]),
    "dgx1-v100": dgx1_v100,
    "dgx1-v100-gpu5-lost": lambda: dgx1_v100({5: "handle"}),
    "t4-pcie": t4_pcie,
    "t4-pcie-gpu2-lost": lambda: t4_pcie({2: "calls"}),
    "no-library": lambda: FakeNvml([], init_error=12),
    "no-driver": lambda: FakeNvml([], init_error=9),
}


def board(name: str) -> FakeNvml:
    """A fresh fake board by name (see BOARDS)."""
    try:
        return BOARDS[name]()
    except KeyError:
        raise ValueError(f"unknown fake board {name!r}; known: {', '.join(sorted(BOARDS))}") from None
