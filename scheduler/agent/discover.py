"""Discovery: one read-only pass over NVML that yields the node's inventory.

NVML errors are facts, not crashes: no library or driver gives an inventory whose status is
"unavailable"; a GPU that answers GPU_IS_LOST (or any other error) is kept at its index, marked
unhealthy, with no links; NOT_SUPPORTED for NVLink (PCIe cards) means no links; MIG instances the
catalog cannot name are left out with a note. Only a bug in this module can raise.

    python -m scheduler.agent.discover --print            # the real GPUs, no Kubernetes
    python -m scheduler.agent.discover --print --fake dgx1-v100
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field

import orjson

from binpack import Gpu, MigInstance, MigMode
from scheduler.agent import links, migdev
from scheduler.agent import nvml as nv
from scheduler.agent.metrics import NVML_ERRORS
from scheduler.agent.nvml import Handle, Nvml
from scheduler.translate.inventory import encode_inventory

Matrix = tuple[tuple[int, ...], ...]
_MIB = 1024 * 1024
_MIG_ENABLE = 1


@dataclass(frozen=True, slots=True)
class Inventory:
    """What the agent found: the annotation's content plus notes worth a log line."""

    gpus: tuple[Gpu, ...] = ()
    nvlink: Matrix = ()
    pcie: Matrix = ()
    status: str = "ok"
    message: str = ""
    switch_links: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()

    def annotation(self) -> str:
        """The `gpupack.io/gpu-inventory` text (stable, so equal inventories compare equal)."""
        return encode_inventory(self.gpus, self.nvlink, self.pcie, self.status, self.message)

    def summary(self) -> str:
        """One log line: what the node has."""
        if self.status != "ok":
            return f"GPU inventory {self.status}: {self.message}"
        if not self.gpus:
            return "GPU inventory: no GPUs"
        models = ", ".join(f"{n} x {m}" for m, n in sorted(Counter(g.model for g in self.gpus).items()))
        sick = [g.index for g in self.gpus if not g.healthy]
        mig = [g for g in self.gpus if g.mig_mode is not MigMode.NONE]
        n = len(self.gpus)
        pairs = [self.nvlink[i][j] for i in range(n) for j in range(i + 1, n)]
        linked = sum(1 for c in pairs if c)
        parts = [f"GPU inventory: {models}"]
        parts.append(f"unhealthy {sick}" if sick else "all healthy")
        if mig:
            insts = sum(len(g.mig_instances) for g in mig)
            kinds = sorted({g.mig_mode.name.lower() for g in mig})
            parts.append(f"MIG on {len(mig)} GPUs ({'/'.join(kinds)}, {insts} instances)")
        if linked:
            via = " via NVSwitch" if any(self.switch_links) else ""
            lo, hi = min(c for c in pairs if c), max(pairs)
            parts.append(f"NVLink {linked}/{len(pairs)} pairs, {lo if lo == hi else f'{lo}-{hi}'} links{via}")
        else:
            parts.append("no NVLink")
        known = sum(1 for i in range(n) for j in range(i + 1, n) if self.pcie[i][j])
        parts.append(f"PCIe levels {known}/{len(pairs)} pairs")
        if self.notes:
            parts.append(f"{len(self.notes)} notes: " + "; ".join(self.notes))
        return ", ".join(parts)


def unavailable(message: str) -> Inventory:
    return Inventory(status="unavailable", message=message)


@dataclass
class _Probe:
    """What one GPU answered; None fields are what it did not."""

    index: int
    handle: Handle | None = None
    model: str | None = None
    memory_mib: int | None = None
    uuid: str = ""
    bus: str | None = None
    mig_mode: MigMode = MigMode.NONE
    instances: tuple[MigInstance, ...] = ()
    healthy: bool = True
    notes: list[str] = field(default_factory=list)


def discover(nvml: Nvml, dynamic_mig: bool = False) -> Inventory:
    """The node's inventory. Never raises for an NVML error; `dynamic_mig` publishes MIG-enabled
    GPUs as dynamic (no fixed layout: the extender picks placements, the agent creates them)."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        NVML_ERRORS.labels("init").inc()
        return unavailable(f"NVML did not start: {nv.describe(e)}; is the NVIDIA driver loaded and the pod "
                           "running with the nvidia runtime class?")
    except OSError as e:  # a broken libnvidia-ml.so that ctypes cannot load
        NVML_ERRORS.labels("init").inc()
        return unavailable(f"NVML library could not be loaded: {e}")
    try:
        return _discover(nvml, dynamic_mig)
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _discover(nvml: Nvml, dynamic_mig: bool) -> Inventory:
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as e:
        NVML_ERRORS.labels("device_count").inc()
        return unavailable(f"NVML could not count GPUs: {nv.describe(e)}")
    probes = [_probe(nvml, i, dynamic_mig) for i in range(count)]
    readable = Counter((p.model, p.memory_mib) for p in probes if p.model and p.memory_mib)
    if count and not readable:
        return unavailable(f"none of the {count} GPUs answered NVML: " + "; ".join(probes[0].notes))
    fallback = readable.most_common(1)[0][0] if readable else ("", 0)
    gpus = tuple(_gpu(p, fallback) for p in probes)
    live = [p.handle if p.healthy else None for p in probes]
    found = links.nvlink_matrix(nvml, live, [p.bus for p in probes])
    pcie = links.pcie_matrix(nvml, live)
    notes = tuple(n for p in probes for n in p.notes) + found.notes
    return Inventory(gpus, found.nvlink, pcie, switch_links=found.switch_links, notes=notes)


def _probe(nvml: Nvml, i: int, dynamic_mig: bool) -> _Probe:
    p = _Probe(i)
    try:
        p.handle = nvml.nvmlDeviceGetHandleByIndex(i)
        p.model = nv.text(nvml.nvmlDeviceGetName(p.handle))
        p.memory_mib = int(nvml.nvmlDeviceGetMemoryInfo(p.handle).total) // _MIB
        p.uuid = nv.text(nvml.nvmlDeviceGetUUID(p.handle))
        p.bus = nv.bus_key(nv.text(nvml.nvmlDeviceGetPciInfo(p.handle).busId))
    except nvml.NVMLError as e:
        NVML_ERRORS.labels("device").inc()
        p.healthy = False
        p.notes.append(f"GPU {i} is unhealthy: {nv.describe(e)}")
        return p
    try:
        _read_mig(nvml, p, dynamic_mig)
    except nvml.NVMLError as e:
        NVML_ERRORS.labels("mig").inc()
        p.healthy = False  # a MIG-enabled GPU whose layout is unknown cannot be handed out whole
        p.mig_mode, p.instances = MigMode.NONE, ()
        p.notes.append(f"GPU {i}: MIG layout unreadable, marked unhealthy: {nv.describe(e)}")
    return p


def _read_mig(nvml: Nvml, p: _Probe, dynamic_mig: bool) -> None:
    try:
        current, pending = nvml.nvmlDeviceGetMigMode(p.handle)
    except nvml.NVMLError as e:
        if nv.code(e) in (nv.NOT_SUPPORTED, nv.FUNCTION_NOT_FOUND):
            return  # not a MIG-capable GPU
        raise
    if int(pending) != int(current):
        p.notes.append(f"GPU {p.index}: MIG mode change pending (a GPU reset applies it)")
    if int(current) != _MIG_ENABLE:
        return
    assert p.model is not None
    if dynamic_mig:
        p.mig_mode = MigMode.DYNAMIC
        return
    p.mig_mode = MigMode.STATIC
    p.instances, notes = migdev.read_instances(nvml, p.handle, p.model, p.index)
    p.notes.extend(notes)


def _gpu(p: _Probe, fallback: tuple[str | None, int | None]) -> Gpu:
    """The binpack GPU; a lost GPU borrows the node's usual model so its index stays in place."""
    model = p.model or fallback[0] or "unknown"
    memory = p.memory_mib or fallback[1] or 0
    try:
        return Gpu(p.index, model, memory, p.uuid, p.mig_mode, p.instances, p.healthy)
    except ValueError as e:  # e.g. MIG enabled on a model the catalog does not know as MIG-capable
        p.notes.append(f"GPU {p.index}: {e}; marked unhealthy")
        return Gpu(p.index, model, memory, p.uuid, MigMode.NONE, (), False)


def to_json(inv: Inventory) -> str:
    """The inventory as indented JSON (the annotation's content, for people and tests/data)."""
    return orjson.dumps(orjson.loads(inv.annotation()), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scheduler.agent.discover", description=__doc__.split("\n")[0])
    ap.add_argument("--print", action="store_true", dest="show", help="print the inventory JSON (default)")
    ap.add_argument("--dynamic-mig", action="store_true", help="report MIG-enabled GPUs as dynamic")
    ap.add_argument("--fake", metavar="BOARD", help="read a fake board instead of the GPUs (see fake_nvml.BOARDS)")
    args = ap.parse_args(argv)
    if args.fake:
        from scheduler.agent.fake_nvml import board

        nvml = board(args.fake)
    else:
        nvml = nv.load()
    inv = discover(nvml, args.dynamic_mig)
    print(to_json(inv))
    print(inv.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
