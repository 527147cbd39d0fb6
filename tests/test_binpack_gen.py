"""Shared generators and brute-force oracles for the binpack property tests (no tests of its own).

Random clusters are small on purpose (at most 3 nodes of at most 4 GPUs) so that the oracles can
enumerate every candidate placement and ask `validate`, the independent checker, about each one.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from binpack import (
    Conflict,
    Demand,
    DemandKind,
    Gpu,
    MigInstance,
    MigMode,
    MigSlot,
    Mix,
    Node,
    Placement,
    Snapshot,
    TaskClass,
    Topology,
    allocate,
    fit,
    lookup,
    place,
    set_foreign,
    validate,
)

# Deterministic in CI; no deadline because the first example pays for imports and caches.
# BINPACK_SOAK=N runs N random (not derandomised) examples per test, for hunting bugs locally.
_SOAK = int(os.environ.get("BINPACK_SOAK", "0"))
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def examples(n: int) -> settings:
    if _SOAK:
        return settings(max_examples=_SOAK, deadline=None, derandomize=False, suppress_health_check=_HEALTH)
    return settings(max_examples=n, deadline=None, derandomize=True, suppress_health_check=_HEALTH)


FAST = examples(150)

MODELS = ("A100-SXM4-80GB", "H100-SXM5-80GB", "A30-24GB", "T4")
PROFILES = ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb",
            "1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "4g.24gb")
PCIE_LEVELS = (0, 10, 20, 30, 40, 50)


@st.composite
def gpus(draw: st.DrawFn, index: int) -> Gpu:
    model = draw(st.sampled_from(MODELS))
    geom = lookup(model).mig  # type: ignore[union-attr]
    mode = MigMode.NONE if geom is None else draw(st.sampled_from(list(MigMode)))
    instances: list[MigInstance] = []
    if mode is MigMode.STATIC:
        assert geom is not None
        options = [(p.name, s) for p in geom.profiles.values() for s in p.starts]
        used, me = 0, False
        for name, start in draw(st.lists(st.sampled_from(options), max_size=8)):
            prof = geom.profiles[name]
            mask = ((1 << prof.memory_slices) - 1) << start
            if used & mask or (prof.media_extension and me):
                continue
            used |= mask
            me = me or prof.media_extension
            instances.append(MigInstance(name, start))
    healthy = draw(st.sampled_from((True, True, True, True, False)))
    return Gpu(index, model, mig_mode=mode, mig_instances=tuple(instances), healthy=healthy)


def _symmetric(draw: st.DrawFn, n: int, values: st.SearchStrategy[int]) -> tuple[tuple[int, ...], ...]:
    m = [[0] * n for _ in range(n)]
    for i, j in itertools.combinations(range(n), 2):
        m[i][j] = m[j][i] = draw(values)
    return tuple(tuple(r) for r in m)


@st.composite
def nodes(draw: st.DrawFn, name: str, max_gpus: int = 4) -> Node:
    n = draw(st.integers(0, max_gpus))
    gl = tuple(draw(gpus(i)) for i in range(n))
    nv = _symmetric(draw, n, st.integers(0, 2))
    pc = _symmetric(draw, n, st.sampled_from(PCIE_LEVELS))
    cpu = draw(st.sampled_from((2_000, 16_000, 64_000)))
    mem = draw(st.sampled_from((8_000, 64_000, 512_000)))
    return Node(name, gl, cpu, mem, nv, pc)


@st.composite
def clusters(draw: st.DrawFn, max_nodes: int = 3, max_gpus: int = 4) -> list[Node]:
    k = draw(st.integers(1, max_nodes))
    return [draw(nodes(f"node-{i}", max_gpus)) for i in range(k)]


@st.composite
def demands(draw: st.DrawFn, max_count: int = 4) -> Demand:
    kind = draw(st.sampled_from(list(DemandKind)))
    models = frozenset(draw(st.sets(st.sampled_from(MODELS), max_size=2)))
    common = {"models": models, "cpu_milli": draw(st.sampled_from((0, 1_000, 8_000, 32_000))),
              "host_memory_mib": draw(st.sampled_from((0, 4_000, 32_000)))}
    if kind is DemandKind.NONE:
        return Demand.none(cpu_milli=common["cpu_milli"], host_memory_mib=common["host_memory_mib"])
    if kind is DemandKind.WHOLE:
        topo = draw(st.sampled_from(list(Topology)))
        return Demand.whole(draw(st.integers(1, max_count)), topology=topo, **common)
    if kind is DemandKind.SHARE:
        mem = draw(st.sampled_from((0, 1_000, 5_000, 20_000, 40_000, 80_000)))
        comp = draw(st.sampled_from((0, 100, 250, 500, 1000)))
        return Demand.share(mem, comp or (0 if mem else 100), **common)
    profile = draw(st.sampled_from(PROFILES))
    if not any(p is not None and p.mig is not None and profile in p.mig.profiles
               for p in (lookup(m) for m in models)):
        common["models"] = frozenset()
    return Demand.mig(profile, draw(st.integers(1, min(max_count, 3))), **common)


@st.composite
def mixes(draw: st.DrawFn) -> Mix:
    classes = draw(st.lists(st.tuples(st.integers(1, 4), st.sampled_from((100, 250, 500, 1000)),
                                      st.sampled_from((0, 4_000)), st.sampled_from((0, 16_000)),
                                      st.sets(st.sampled_from(MODELS), max_size=2), st.integers(1, 5),
                                      st.booleans()),
                            max_size=4))
    return Mix.of((TaskClass(c, m, cpu, mem, frozenset(models), linked and c > 1), float(w))
                  for c, m, cpu, mem, models, w, linked in classes)


@st.composite
def states(draw: st.DrawFn, cluster: Sequence[Node]) -> Snapshot:
    """A snapshot of the cluster after a random history of placements and foreign pods."""
    snap = Snapshot.build(cluster)
    for _ in range(draw(st.integers(0, 6))):
        d = draw(demands())
        node = draw(st.sampled_from(snap.names))
        p = place(snap, d, node)
        if p is not None:
            snap = allocate(snap, p)
    for name in snap.names:
        if draw(st.integers(0, 4)) == 0:
            snap = set_foreign(snap, name, draw(st.integers(1, 2)))
    return snap


def _single(d: Demand) -> Demand:
    """The demand for one device of d, without CPU and memory: a necessary condition per device."""
    if d.kind is DemandKind.WHOLE:
        return Demand.whole(1, models=d.models)
    if d.kind is DemandKind.MIG:
        return Demand.mig(d.mig_profile, 1, models=d.models)
    return dataclasses.replace(d, cpu_milli=0, host_memory_mib=0)


def device_options(snap: Snapshot, d: Demand, name: str) -> Iterator[Placement]:
    """Every placement of d on the node that `validate` accepts, by exhaustive enumeration."""
    node = snap.node(name)
    extra = {"cpu_milli": d.cpu_milli, "host_memory_mib": d.host_memory_mib, "kind": d.kind}
    one, bare = _single(d), {"kind": d.kind}
    if d.kind is DemandKind.NONE:
        cands: Iterator[Placement] = iter([Placement(name, **extra)])  # type: ignore[arg-type]
    elif d.kind is DemandKind.WHOLE:
        ok = [g.index for g in node.gpus if not validate(snap, [(one, Placement(name, (g.index,), **bare))])]  # type: ignore[arg-type]
        cands = (Placement(name, c, **extra) for c in itertools.combinations(ok, d.count))  # type: ignore[arg-type]
    elif d.kind is DemandKind.SHARE:
        cands = (Placement(name, (g.index,), memory_mib=d.memory_mib, compute_milli=d.compute_milli, **extra)  # type: ignore[arg-type]
                 for g in node.gpus)
    else:
        slots = []
        for g in node.gpus:
            gm = lookup(g.model)
            prof = gm.mig.profiles.get(d.mig_profile) if gm and gm.mig else None
            for s in prof.starts if prof else ():
                slot = MigSlot(g.index, d.mig_profile, s)
                if not validate(snap, [(one, Placement(name, mig=(slot,), **bare))]):  # type: ignore[arg-type]
                    slots.append(slot)
        cands = (Placement(name, mig=c, **extra) for c in itertools.combinations(slots, d.count))  # type: ignore[arg-type]
    for p in cands:
        if not validate(snap, [(d, p)]):
            yield p


def fits_somewhere(snap: Snapshot, d: Demand, name: str) -> bool:
    return next(device_options(snap, d, name), None) is not None


def node_feasible(snap: Snapshot, members: Sequence[Demand], name: str,
                  seen: dict[tuple, bool] | None = None) -> bool:
    """Whether all members fit on one node together: depth-first over every valid placement
    (remembering node states already explored, so symmetric choices are tried once)."""
    if not members:
        return True
    seen = {} if seen is None else seen
    i = snap.node_index(name)
    key = (tuple(members), tuple(col[i].tobytes() for col in snap.state().values()))
    if key in seen:
        return seen[key]
    first, rest = members[0], members[1:]
    found = False
    for p in device_options(snap, first, name):
        try:
            nxt = allocate(snap, p)
        except Conflict:
            continue
        if node_feasible(nxt, rest, name, seen):
            found = True
            break
    seen[key] = found
    return found


def empty_like(snap: Snapshot) -> Snapshot:
    """The same nodes with nothing booked and no foreign pods."""
    return Snapshot.build(snap.static.nodes)


def verdict_for(snap: Snapshot, d: Demand) -> list[bool]:
    return [bool(x) for x in fit(snap, d).fits]
