"""The oracle itself: every rejection branch of binpack.validate fires on a planted bad placement
(a broken validator would let every property test pass), and good placements pass."""

from __future__ import annotations

import pytest

from binpack import Demand, Gpu, MigInstance, MigMode, MigSlot, Node, Placement, Snapshot, allocate, set_foreign
from binpack.types import DemandKind, Topology
from binpack.validate import validate

NV = ((0, 2, 0, 0), (2, 0, 0, 0), (0, 0, 0, 2), (0, 0, 2, 0))  # pairs 0-1 and 2-3 NVLinked
PCIE = ((0, 1, 2, 2), (1, 0, 2, 2), (2, 2, 0, 1), (2, 2, 1, 0))


def _snapshot() -> Snapshot:
    h100 = tuple(Gpu(i, "H100-SXM5-80GB", uuid=f"GPU-h{i}", healthy=i != 3) for i in range(4))
    a100 = (Gpu(0, "A100-SXM4-80GB", uuid="GPU-a0", mig_mode=MigMode.STATIC,
                mig_instances=(MigInstance("3g.40gb", 0, "MIG-0"), MigInstance("1g.10gb", 4, "MIG-4"),
                               MigInstance("1g.10gb+me", 5, "MIG-5"))),
            Gpu(1, "A100-SXM4-80GB", uuid="GPU-a1", mig_mode=MigMode.DYNAMIC))
    t4 = (Gpu(0, "T4", uuid="GPU-t0"), Gpu(1, "T4", uuid="GPU-t1"))
    return Snapshot.build([
        Node("h", h100, 64_000, 512_000, NV, PCIE),
        Node("a", a100, 64_000, 512_000, ((0, 0), (0, 0)), ((0, 1), (1, 0))),
        Node("t", t4, 4_000, 8_000, ((0, 0), (0, 0)), ((0, 1), (1, 0))),
    ])


def whole(n: int, **kw: object) -> Demand:
    return Demand.whole(n, **kw)  # type: ignore[arg-type]


def P(node: str, gpus: tuple[int, ...] = (), mig: tuple[MigSlot, ...] = (), kind: DemandKind = DemandKind.WHOLE,
      **kw: int) -> Placement:
    return Placement(node=node, gpus=gpus, mig=mig, kind=kind, **kw)


GOOD = [
    (whole(2, topology=Topology.NVLINK), P("h", (0, 1))),
    (Demand.share(20_000, 300), P("h", (2,), kind=DemandKind.SHARE, memory_mib=20_000, compute_milli=300)),
    (Demand.mig("3g.40gb", 1), P("a", mig=(MigSlot(0, "3g.40gb", 0),), kind=DemandKind.MIG)),
    (Demand.mig("3g.40gb", 1), P("a", mig=(MigSlot(1, "3g.40gb", 4),), kind=DemandKind.MIG)),  # dynamic
]

# (why, the placements that together must be rejected, a phrase of the error)
BAD: list[tuple[str, list[tuple[Demand, Placement]], str]] = [
    ("unknown node", [(whole(1), P("nope", (0,)))], "unknown node"),
    ("no such GPU", [(whole(1), P("h", (9,)))], "no GPU 9"),
    ("unhealthy GPU", [(whole(1), P("h", (3,)))], "GPU 3 is unhealthy"),
    ("wrong model", [(whole(1, models=frozenset({"T4"})), P("h", (0,)))], "not one of ['T4']"),
    ("kind mismatch", [(whole(1), P("h", (0,), kind=DemandKind.SHARE))], "placement kind share"),
    ("no-GPU demand given GPUs", [(Demand.none(), P("h", (0,), kind=DemandKind.NONE))], "got devices"),
    ("CPU differs", [(whole(1), P("h", (0,), cpu_milli=5))], "CPU/memory differ"),
    ("count differs", [(whole(2), P("h", (0,)))], "wants 2 whole GPUs"),
    ("whole GPU in MIG mode", [(whole(1), P("a", (0,)))], "is in MIG mode"),
    ("whole GPU twice", [(whole(1), P("h", (0,))), (whole(1), P("h", (0,)))], "not free as a whole GPU"),
    ("whole GPU under a share", [(Demand.share(1000, 100), P("h", (0,), kind=DemandKind.SHARE, memory_mib=1000,
                                                            compute_milli=100)), (whole(1), P("h", (0,)))],
     "not free as a whole GPU"),
    ("no NVLink", [(whole(2, topology=Topology.NVLINK), P("h", (1, 2)))], "have no NVLink"),
    ("share on two GPUs", [(Demand.share(1000, 100), P("h", (0, 1), kind=DemandKind.SHARE, memory_mib=1000,
                                                      compute_milli=100))], "a share takes one GPU"),
    ("share on MIG GPU", [(Demand.share(1000, 100), P("a", (0,), kind=DemandKind.SHARE, memory_mib=1000,
                                                     compute_milli=100))], "is in MIG mode"),
    ("share amounts differ", [(Demand.share(1000, 100), P("h", (0,), kind=DemandKind.SHARE, memory_mib=999,
                                                         compute_milli=100))], "share amounts differ"),
    ("share on a whole GPU", [(whole(1), P("h", (0,))), (Demand.share(1000, 100), P(
        "h", (0,), kind=DemandKind.SHARE, memory_mib=1000, compute_milli=100))], "taken whole by placement 0"),
    ("share over capacity", [(Demand.share(60_000, 500), P("h", (0,), kind=DemandKind.SHARE, memory_mib=60_000,
                                                          compute_milli=500))] * 2, "over capacity"),
    ("MIG count differs", [(Demand.mig("1g.10gb", 2), P("a", mig=(MigSlot(0, "1g.10gb", 4),), kind=DemandKind.MIG))],
     "wants 2 MIG 1g.10gb"),
    ("MIG profile differs", [(Demand.mig("1g.10gb", 1), P("a", mig=(MigSlot(0, "3g.40gb", 0),), kind=DemandKind.MIG))],
     "is not 1g.10gb"),
    ("MIG on a non-MIG GPU", [(Demand.mig("1g.10gb", 1), P("h", mig=(MigSlot(0, "1g.10gb", 0),), kind=DemandKind.MIG))],
     "cannot hold MIG"),
    ("illegal MIG start", [(Demand.mig("3g.40gb", 1), P("a", mig=(MigSlot(1, "3g.40gb", 2),), kind=DemandKind.MIG))],
     "may not start at slot 2"),
    ("not in the static layout", [(Demand.mig("1g.10gb", 1), P("a", mig=(MigSlot(0, "1g.10gb", 0),),
                                                               kind=DemandKind.MIG))], "has no 1g.10gb instance"),
    ("MIG slots overlap",
     [(Demand.mig("3g.40gb", 1), P("a", mig=(MigSlot(1, "3g.40gb", 4),), kind=DemandKind.MIG))] * 2, "overlap"),
    ("second +me", [(Demand.mig("1g.10gb+me", 1), P("a", mig=(MigSlot(1, "1g.10gb+me", 0),), kind=DemandKind.MIG)),
                    (Demand.mig("1g.10gb+me", 1), P("a", mig=(MigSlot(1, "1g.10gb+me", 1),), kind=DemandKind.MIG))],
     "second +me instance"),
    ("node CPU over capacity", [(whole(1, cpu_milli=3_000), P("t", (0,), cpu_milli=3_000)),
                                (whole(1, cpu_milli=3_000), P("t", (1,), cpu_milli=3_000))],
     "node CPU or memory over capacity"),
]


def test_good_placements_pass_alone_and_together() -> None:
    snap = _snapshot()
    for d, p in GOOD:
        assert validate(snap, [(d, p)]) == []
    assert validate(snap, GOOD) == []


@pytest.mark.parametrize(("why", "placed", "phrase"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_placement_is_rejected(why: str, placed: list[tuple[Demand, Placement]], phrase: str) -> None:
    errors = validate(_snapshot(), placed)
    assert any(phrase in e for e in errors), (why, errors)


def test_foreign_pods_hold_some_of_the_free_looking_gpus() -> None:
    snap = set_foreign(_snapshot(), "t", 1)
    assert validate(snap, [(whole(1), P("t", (0,)))]) == []
    errors = validate(snap, [(whole(2), P("t", (0, 1)))])
    assert any("pods gpupack did not place hold 1" in e for e in errors), errors


def test_what_is_already_allocated_counts() -> None:
    snap = allocate(_snapshot(), P("h", (0,)))
    assert any("not free as a whole GPU" in e for e in validate(snap, [(whole(1), P("h", (0,)))]))
