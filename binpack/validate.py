"""`validate`: an independent checker of placements against a snapshot, the oracle of every test.

Written in plain Python over the snapshot's Node objects and its free-capacity state, sharing no
logic with fit/place/allocate: capacity per GPU and node, whole GPUs used alone, MIG placements
legal (profile, start, static layout), disjoint and within the +me cap, allowed models, NVLink
requirements, GPUs held by foreign pods (a count, devices unknown: the GPUs that look free must
still outnumber them), and that each placement gives its demand what it asked for.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from binpack.catalog import FULL_MILLI, lookup
from binpack.snapshot import Snapshot
from binpack.types import Demand, DemandKind, MigMode, Placement, Topology


def validate(snapshot: Snapshot, placed: Sequence[tuple[Demand, Placement]]) -> list[str]:
    """Every problem found (empty when the placements are valid together on the snapshot)."""
    errors: list[str] = []
    state = snapshot.state()
    nodes = {n.name: (i, n) for i, n in enumerate(snapshot.static.nodes)}
    mem: dict[tuple[int, int], int] = {}
    comp: dict[tuple[int, int], int] = {}
    slots: dict[tuple[int, int], int] = {}
    me: dict[tuple[int, int], bool] = {}
    cpu: dict[int, int] = {}
    hmem: dict[int, int] = {}
    whole_by: dict[tuple[int, int], int] = {}
    shared: set[tuple[int, int]] = set()
    for n, (d, p) in enumerate(placed):
        where = f"placement {n} on {p.node}"
        if p.node not in nodes:
            errors.append(f"{where}: unknown node")
            continue
        i, node = nodes[p.node]
        gpus = node.gpus

        def gpu_ok(g: int, where: str = where, gpus: tuple = gpus, d: Demand = d) -> bool:
            if not 0 <= g < len(gpus):
                errors.append(f"{where}: no GPU {g}")
                return False
            if not gpus[g].healthy:
                errors.append(f"{where}: GPU {g} is unhealthy")
            if d.models and gpus[g].model not in d.models:
                errors.append(f"{where}: GPU {g} is {gpus[g].model}, not one of {sorted(d.models)}")
            return True

        if p.kind is not d.kind:
            errors.append(f"{where}: placement kind {p.kind.value} for a {d.kind.value} demand")
        if d.kind is DemandKind.NONE and (p.gpus or p.mig):
            errors.append(f"{where}: a demand without GPUs got devices")
        cpu[i] = cpu.get(i, int(state["cpu_free"][i])) - p.cpu_milli
        hmem[i] = hmem.get(i, int(state["hmem_free"][i])) - p.host_memory_mib
        if p.cpu_milli != d.cpu_milli or p.host_memory_mib != d.host_memory_mib:
            errors.append(f"{where}: CPU/memory differ from the demand")
        if d.kind is DemandKind.WHOLE:
            if len(p.gpus) != d.count or p.mig:
                errors.append(f"{where}: wants {d.count} whole GPUs, got {p.gpus}")
            for g in p.gpus:
                if not gpu_ok(g):
                    continue
                key = (i, g)
                if gpus[g].mig_mode is not MigMode.NONE:
                    errors.append(f"{where}: GPU {g} is in MIG mode")
                base_full = int(state["mem_free"][i, g]) == gpus[g].memory_mib and int(
                    state["compute_free"][i, g]) == FULL_MILLI
                if not base_full or key in whole_by or key in shared:
                    errors.append(f"{where}: GPU {g} is not free as a whole GPU")
                whole_by[key] = n
            if d.topology is Topology.NVLINK:
                for a, b in itertools.combinations(p.gpus, 2):
                    if node.nvlink[a][b] <= 0:
                        errors.append(f"{where}: GPUs {a} and {b} have no NVLink")
        elif d.kind is DemandKind.SHARE:
            if len(p.gpus) != 1 or p.mig:
                errors.append(f"{where}: a share takes one GPU, got {p.gpus}")
                continue
            g = p.gpus[0]
            if not gpu_ok(g):
                continue
            key = (i, g)
            if gpus[g].mig_mode is not MigMode.NONE:
                errors.append(f"{where}: GPU {g} is in MIG mode")
            if p.memory_mib != d.memory_mib or p.compute_milli != d.compute_milli:
                errors.append(f"{where}: share amounts differ from the demand")
            if key in whole_by:
                errors.append(f"{where}: GPU {g} is taken whole by placement {whole_by[key]}")
            shared.add(key)
            mem[key] = mem.get(key, int(state["mem_free"][i, g])) - p.memory_mib
            comp[key] = comp.get(key, int(state["compute_free"][i, g])) - p.compute_milli
            if mem[key] < 0 or comp[key] < 0:
                errors.append(f"{where}: GPU {g} over capacity")
        elif d.kind is DemandKind.MIG:
            if len(p.mig) != d.count or p.gpus:
                errors.append(f"{where}: wants {d.count} MIG {d.mig_profile}, got {p.mig}")
            for m in p.mig:
                if not gpu_ok(m.gpu):
                    continue
                gpu = gpus[m.gpu]
                key = (i, m.gpu)
                if m.profile != d.mig_profile:
                    errors.append(f"{where}: slot profile {m.profile} is not {d.mig_profile}")
                gm = lookup(gpu.model)
                prof = gm.mig.profiles.get(m.profile) if gm and gm.mig else None
                if gpu.mig_mode is MigMode.NONE or prof is None:
                    errors.append(f"{where}: GPU {m.gpu} cannot hold MIG {m.profile}")
                    continue
                if m.start not in prof.starts:
                    errors.append(f"{where}: {m.profile} may not start at slot {m.start}")
                    continue
                if gpu.mig_mode is MigMode.STATIC and not any(
                    x.profile == m.profile and x.start == m.start for x in gpu.mig_instances
                ):
                    errors.append(f"{where}: GPU {m.gpu} has no {m.profile} instance at slot {m.start}")
                mask = sum(1 << s for s in range(m.start, m.start + prof.memory_slices))
                cur = slots.get(key, int(state["mig_used"][i, m.gpu]))
                if cur & mask:
                    errors.append(f"{where}: GPU {m.gpu} slots {m.start}..{m.start + prof.memory_slices - 1} overlap")
                slots[key] = cur | mask
                if prof.media_extension:
                    if me.get(key, bool(state["me_used"][i, m.gpu])):
                        errors.append(f"{where}: GPU {m.gpu} has a second +me instance")
                    me[key] = True
        if cpu[i] < 0 or hmem[i] < 0:
            errors.append(f"{where}: node CPU or memory over capacity")
    errors.extend(_foreign(snapshot, state, set(whole_by) | shared))
    return errors


def _foreign(snapshot: Snapshot, state: dict, taken: set[tuple[int, int]]) -> list[str]:
    """Foreign pods hold `foreign` of the GPUs that look whole-free: new work may take only the rest."""
    errors = []
    for i in sorted({i for i, _ in taken}):
        node = snapshot.static.nodes[i]
        looks_free = [
            g.index for g in node.gpus
            if g.healthy and g.mig_mode is MigMode.NONE and int(state["mem_free"][i, g.index]) == g.memory_mib
            and int(state["compute_free"][i, g.index]) == FULL_MILLI
        ]
        foreign = int(state["foreign"][i])
        used = sum((i, g) in taken for g in looks_free)
        if used > max(0, len(looks_free) - foreign):
            errors.append(f"node {node.name}: takes {used} of {len(looks_free)} free-looking GPUs, "
                          f"but pods gpupack did not place hold {foreign} of them")
    return errors
