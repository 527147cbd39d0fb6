"""Allocate mode's device choice: a pod's unallocated claims -> exact devices on one node, or why not.

Each request's candidates are the node's published devices that its DeviceClass's selectors and its own
selectors (CEL, cel.py) accept and that no booking holds. binpack then picks among them: the other
devices are booked away on a scratch snapshot, so `place` chooses the best NVLink / PCIe set of whole
GPUs, or the MIG slots that keep the GPU's layout most usable. `matchAttribute` constraints are met by
trying each value of the attribute in turn (the candidates that share it). Requests are allocated one
after another on the scratch snapshot, so no device is given twice; a pod's claims get devices all
together or none (an `Allocation` or a reason). What gpupack does not allocate (firstAvailable,
`allocationMode: All`, classes it does not know, selectors it cannot evaluate, adminAccess) is a reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from binpack import Conflict, Demand, DemandKind, MigSlot, Placement, Snapshot, Topology, allocate, place, release
from scheduler.dra.cel import matches
from scheduler.dra.nvlink import NVLINK_ANNOTATION, known
from scheduler.dra.slices import DRIVER, DraInventory

# the DeviceClasses of NVIDIA's chart (tests/data/dra/driver/deviceclass-*.json): the classes gpupack allocates
CLASSES: dict[str, tuple[str, ...]] = {
    "gpu.nvidia.com": ("device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'",),
    "mig.nvidia.com": ("device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'",),
}
MAX_TRIES = 64  # attribute-value combinations tried per claim; past that the node is refused with a reason


class Unallocatable(ValueError):
    """The claims cannot be allocated on this node; the message says why."""


@dataclass(frozen=True, slots=True)
class Request:
    name: str
    device_class: str
    count: int
    selectors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """What allocating one claim needs from its spec."""

    uid: str
    namespace: str
    name: str
    requests: tuple[Request, ...]
    constraints: tuple[tuple[tuple[str, ...], str], ...]  # (request names, () = all; attribute)
    nvlink: bool = False  # annotation gpupack.io/topology: nvlink: whole GPUs of a request NVLink-connected


@dataclass(frozen=True, slots=True)
class Allocation:
    """The devices chosen, per claim uid: (request, device name), and the placements they book."""

    results: Mapping[str, tuple[tuple[str, str], ...]]
    placements: Mapping[str, tuple[Placement, ...]]
    demands: Mapping[str, tuple[Demand, ...]] = field(default_factory=dict)


def claim_spec(obj: Mapping[str, Any]) -> ClaimSpec:
    """The allocation-relevant part of a claim; Unallocatable for what gpupack does not allocate or cannot read."""
    try:
        return _claim_spec(obj)
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, Unallocatable):
            raise
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}" if isinstance(meta, Mapping) else "?"
        raise Unallocatable(f"resourceclaim {name} cannot be read: {type(e).__name__}: {e}") from None


def _claim_spec(obj: Mapping[str, Any]) -> ClaimSpec:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    where = f"resourceclaim {meta.get('namespace', '')}/{meta.get('name', '')}"
    devices = spec.get("devices") or {}
    reqs: list[Request] = []
    for r in devices.get("requests") or []:
        name = str(r.get("name") or "")
        if "firstAvailable" in r:
            raise Unallocatable(f"{where} request {name}: firstAvailable is not allocated by gpupack")
        ex = r.get("exactly") or {}
        mode = str(ex.get("allocationMode") or "ExactCount")
        if mode != "ExactCount":
            raise Unallocatable(f"{where} request {name}: allocationMode {mode} is not allocated by gpupack")
        if ex.get("adminAccess"):
            raise Unallocatable(f"{where} request {name}: adminAccess is not allocated by gpupack")
        if ex.get("tolerations") or ex.get("capacity"):
            raise Unallocatable(f"{where} request {name}: tolerations and capacity requests are not read by gpupack")
        cls = str(ex.get("deviceClassName") or "")
        if cls not in CLASSES:
            raise Unallocatable(f"{where} request {name}: device class {cls!r} is not one gpupack allocates "
                                f"(it knows {sorted(CLASSES)})")
        sels = []
        for s in ex.get("selectors") or []:
            expr = (s.get("cel") or {}).get("expression") if isinstance(s, Mapping) else None
            if not isinstance(expr, str):
                raise Unallocatable(f"{where} request {name}: a selector that is not CEL")
            sels.append(expr)
        count = int(ex.get("count") or 1)
        if count < 1:
            raise Unallocatable(f"{where} request {name}: count {count}")
        reqs.append(Request(name, cls, count, tuple(sels)))
    cons = []
    for c in devices.get("constraints") or []:
        attr = c.get("matchAttribute")
        if not isinstance(attr, str) or set(c) - {"requests", "matchAttribute"}:
            raise Unallocatable(f"{where}: only matchAttribute constraints are allocated by gpupack")
        cons.append((tuple(str(x) for x in c.get("requests") or ()), attr))
    topo = str((meta.get("annotations") or {}).get(NVLINK_ANNOTATION) or "")
    if topo not in ("", "nvlink", "best-effort"):
        raise Unallocatable(f"{where}: annotation {NVLINK_ANNOTATION}={topo!r} (nvlink or best-effort)")
    return ClaimSpec(str(meta.get("uid") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""),
                     tuple(reqs), tuple(cons), topo == "nvlink")


def _attr(device: Mapping[str, Any], qualified: str) -> Any:
    """A device's attribute value (as JSON) by its qualified name; an unqualified slice name is the driver's."""
    attrs = device.get("attributes") or {}
    domain, _, short = qualified.rpartition("/")
    raw = attrs.get(qualified) if qualified in attrs else (attrs.get(short) if domain == DRIVER else None)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        return None
    return next(iter(raw.items()))


@dataclass
class NodeDevices:
    """A node's devices as allocate mode sees them: where each sits in binpack's node, and its CEL view."""

    node: str
    inventory: DraInventory
    raw: Mapping[str, Mapping[str, Any]]  # device name -> slice JSON of the device
    env: Mapping[str, Any]  # device name -> CEL device
    pools: Mapping[str, str] = field(default_factory=dict)  # device name -> its slice's pool
    _match: dict[tuple[str, str], bool] = field(default_factory=dict)

    def accepts(self, expr: str, name: str) -> bool:
        key = (expr, name)
        hit = self._match.get(key)
        if hit is None:
            hit = self._match[key] = matches(expr, self.env[name])
        return hit


def _candidates(nd: NodeDevices, req: Request) -> list[str]:
    out = []
    for name in sorted(nd.inventory.devices):
        if name not in nd.env:
            continue
        # class selectors first: request selectors are only evaluated on the class's devices (as DRA does)
        if all(nd.accepts(e, name) for e in CLASSES[req.device_class]) and \
                all(nd.accepts(e, name) for e in req.selectors):
            out.append(name)
    return out


def block(snap: Snapshot, node: str, devices: Sequence[tuple[int, MigSlot | None]]) -> Snapshot:
    """The snapshot with these devices booked away (those already taken stay as they are)."""
    for gpu, slot in devices:
        p = (Placement(node, gpus=(gpu,), kind=DemandKind.WHOLE) if slot is None
             else Placement(node, mig=(slot,), kind=DemandKind.MIG))
        try:
            snap = allocate(snap, p)
        except Conflict:
            continue
    return snap


def _pick(snap: Snapshot, nd: NodeDevices, req: Request, cands: list[str],
          nvlink: bool = False) -> tuple[Placement, Demand] | None:
    """binpack's choice of `req.count` devices among the candidates, or None."""
    where = nd.inventory.devices
    allowed = {where[n] for n in cands}
    others = [d for d in where.values() if d not in allowed]
    blocked = block(snap, nd.node, others)
    whole = [where[n] for n in cands if where[n][1] is None]
    migs = [where[n][1] for n in cands if where[n][1] is not None]
    tries: list[Demand] = []
    try:
        if whole and not migs:
            tries.append(Demand.whole(req.count, topology=Topology.NVLINK) if nvlink and req.count > 1
                         else Demand.whole(req.count))
        elif migs and not whole:
            profiles = sorted({s.profile for s in migs if s is not None})
            tries += [Demand.mig(p, req.count) for p in profiles]
    except ValueError:
        return None  # a count binpack cannot express (more GPUs than a node has): no node fits
    for d in tries:
        try:
            p = place(blocked, d, nd.node)
        except (ValueError, KeyError):
            continue
        if p is None:
            continue
        chosen = [(g, None) for g in p.gpus] + [(s.gpu, s) for s in p.mig]
        if all(c in allowed for c in chosen):  # binpack may build a MIG slot no device publishes (dynamic)
            return p, d
    return None


def without(snap: Snapshot, own: Placement | None) -> Snapshot:
    """The snapshot with the pod's own reservation (a pod group's plan) freed: its claims may use those devices."""
    if own is None:
        return snap
    try:
        return release(snap, own)
    except (Conflict, KeyError, ValueError):
        return snap


def allocate_claims(snap: Snapshot, nd: NodeDevices, claims: Sequence[ClaimSpec]) -> Allocation:
    """Devices on the node for every request of every claim, all or none; Unallocatable with the reason."""
    back = {v: k for k, v in nd.inventory.devices.items()}
    results: dict[str, tuple[tuple[str, str], ...]] = {}
    placed: dict[str, tuple[Placement, ...]] = {}
    demands: dict[str, tuple[Demand, ...]] = {}
    for c in claims:
        if c.nvlink and not known(snap.node(nd.node).nvlink):
            raise Unallocatable(f"resourceclaim {c.namespace}/{c.name} asks NVLink-connected GPUs "
                                f"({NVLINK_ANNOTATION}: nvlink) and {nd.node}'s NVLink topology is unknown: NVIDIA's "
                                f"DRA driver publishes none and gpupack's agent does not run there (ask "
                                f"matchAttribute resource.kubernetes.io/pcieRoot instead)")
        base = {r.name: _candidates(nd, r) for r in c.requests}  # CelRefused goes up: the claim is refused
        why = ""
        for combo in itertools.islice(_assignments(nd, c, base), MAX_TRIES):
            work, out, ps, ds = snap, [], [], []
            for r in c.requests:
                got = _pick(work, nd, r, combo[r.name], c.nvlink)
                if got is None:
                    why = (f"request {r.name}: {r.count} needed, {len(combo[r.name])} {r.device_class} devices match "
                           f"its selectors{' and constraints' if c.constraints else ''} and too few of them are free"
                           f"{' NVLink-connected' if c.nvlink else ''}")
                    break
                p, d = got
                work = allocate(work, p)
                out += [(r.name, back[(g, None)]) for g in p.gpus] + [(r.name, back[(s.gpu, s)]) for s in p.mig]
                ps.append(p)
                ds.append(d)
            else:
                snap = work
                results[c.uid], placed[c.uid], demands[c.uid] = tuple(out), tuple(ps), tuple(ds)
                break
        else:
            raise Unallocatable(f"resourceclaim {c.namespace}/{c.name} cannot be allocated on {nd.node}: "
                                f"{why or 'no devices match its constraints'}")
    return Allocation(results, placed, demands)


def _assignments(nd: NodeDevices, c: ClaimSpec, base: dict[str, list[str]]) -> Any:
    """Candidate lists per request, one per combination of values of the claim's matchAttribute constraints."""
    if not c.constraints:
        yield base
        return
    choices = []
    for names, attr in c.constraints:
        reqs = names or tuple(r.name for r in c.requests)
        values = sorted({repr(v) for r in reqs for n in base.get(r, ()) if (v := _attr(nd.raw[n], attr)) is not None})
        choices.append([(reqs, attr, v) for v in values])
    for combo in itertools.product(*choices):
        out = dict(base)
        for reqs, attr, v in combo:
            for r in reqs:
                out[r] = [n for n in out.get(r, []) if repr(_attr(nd.raw[n], attr)) == v]
        yield out
