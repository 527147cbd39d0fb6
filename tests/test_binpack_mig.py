"""MIG packing: the worked examples of mig.md ("Worked packing examples") and the R-rules behind them."""

from __future__ import annotations

import pytest
from test_binpack_gen import node_feasible

from binpack import Demand, Gpu, MigInstance, MigMode, MigSlot, Node, Placement, Snapshot, allocate, fit, place
from binpack.fit import Reason

H100 = "H100-SXM5-80GB"


def one_gpu(mode: MigMode = MigMode.DYNAMIC, model: str = H100, layout: tuple[MigInstance, ...] = (),
            gpus: int = 1) -> Snapshot:
    g = tuple(Gpu(i, model, mig_mode=mode, mig_instances=layout) for i in range(gpus))
    return Snapshot.build([Node("n", g, 64_000, 512_000)])


def place_all(snap: Snapshot, profiles: list[str]) -> tuple[Snapshot, list[MigSlot]] | None:
    """Place the profiles one by one in the listed order with fit/place/allocate."""
    slots: list[MigSlot] = []
    for prof in profiles:
        p = place(snap, Demand.mig(prof), "n")
        if p is None:
            return None
        snap = allocate(snap, p)
        slots.extend(p.mig)
    return snap, slots


WORKED = [  # mig.md table: request on one empty GPU, fits?
    (["1g.10gb"] * 7, True),
    (["4g.40gb", "3g.40gb"], True),
    (["3g.40gb", "3g.40gb"], True),
    (["3g.40gb", "3g.40gb", "1g.10gb"], False),  # R5: 7 compute slices but 9 memory slices
    (["4g.40gb", "2g.20gb", "1g.10gb"], True),
    (["3g.40gb", "2g.20gb", "2g.20gb"], True),
    (["2g.20gb"] * 3 + ["1g.10gb"], True),
    (["1g.20gb"] * 3 + ["1g.10gb"], True),
    (["1g.10gb"] * 8, False),  # R4: no 1-slice profile starts at slot 7
    (["7g.80gb", "1g.10gb"], False),
    (["1g.10gb+me", "1g.10gb+me"], False),  # R6: one +me instance per GPU
]


@pytest.mark.parametrize(("profiles", "fits"), WORKED, ids=["+".join(p) for p, _ in WORKED])
def test_worked_examples(profiles: list[str], fits: bool) -> None:
    snap = one_gpu()
    assert node_feasible(snap, [Demand.mig(p) for p in profiles], "n") is fits  # exhaustive oracle
    got = place_all(snap, profiles)
    assert (got is not None) is fits  # the solver, in the listed order
    if got is not None:
        _, slots = got
        used = 0
        for s in slots:  # legal and disjoint, checked by hand here
            size = {"1g.10gb": 1, "1g.10gb+me": 1, "1g.20gb": 2, "2g.20gb": 2, "3g.40gb": 4, "4g.40gb": 4,
                    "7g.80gb": 8}[s.profile]
            mask = ((1 << size) - 1) << s.start
            assert not used & mask
            used |= mask


def test_worked_placements_use_the_documented_slots() -> None:
    got = place_all(one_gpu(), ["4g.40gb", "2g.20gb", "1g.10gb"])
    assert got is not None and [(s.profile, s.start) for s in got[1]] == [("4g.40gb", 0), ("2g.20gb", 4),
                                                                           ("1g.10gb", 6)]
    got = place_all(one_gpu(), ["2g.20gb"] * 3 + ["1g.10gb"])
    assert got is not None and sorted(s.start for s in got[1]) == [0, 2, 4, 6]
    assert got[1][0].start == 4  # the first 2g leaves 3g@0 and 4g@0 placeable


def test_one_1g_at_slot_4_leaves_3g_only_at_0() -> None:
    snap = allocate(one_gpu(), Placement("n", mig=(MigSlot(0, "1g.10gb", 4),), kind=Demand.mig("1g.10gb").kind))
    p = place(snap, Demand.mig("3g.40gb"), "n")
    assert p is not None and p.mig == (MigSlot(0, "3g.40gb", 0),)


def test_1g_at_slots_0_and_4_blocks_every_3g() -> None:
    kind = Demand.mig("1g.10gb").kind
    snap = allocate(one_gpu(), Placement("n", mig=(MigSlot(0, "1g.10gb", 0), MigSlot(0, "1g.10gb", 4)), kind=kind))
    verdict = fit(snap, Demand.mig("3g.40gb"))
    assert not verdict.fits[0] and verdict.reason[0] == Reason.MIG_BUSY and verdict.resolvable[0]
    assert verdict.message(0) == "needs 1 free MIG 3g.40gb; 0 free"


def test_place_keeps_large_profiles_placeable() -> None:
    """Freeing order fragments a GPU (R7): a 1g goes where it blocks the fewest large profiles."""
    p = place(one_gpu(), Demand.mig("1g.10gb"), "n")
    assert p is not None and p.mig[0].start in (4, 5, 6)  # keeps 3g@0, 4g@0 placeable
    snap = allocate(one_gpu(), p)
    assert place(snap, Demand.mig("4g.40gb"), "n") is not None


def test_one_demand_of_many_instances() -> None:
    assert place(one_gpu(), Demand.mig("1g.10gb", 7), "n") is not None
    verdict = fit(one_gpu(), Demand.mig("1g.10gb", 8))
    assert verdict.reason[0] == Reason.TOO_FEW_MIG and not verdict.resolvable[0]
    assert verdict.message(0) == "needs 8 MIG 1g.10gb; node can hold at most 7"
    p = place(one_gpu(gpus=2), Demand.mig("1g.10gb+me", 2), "n")
    assert p is not None and sorted(s.gpu for s in p.mig) == [0, 1]  # +me: one per GPU


BALANCED = (MigInstance("1g.10gb", 0), MigInstance("1g.10gb", 1), MigInstance("2g.20gb", 2),
            MigInstance("3g.40gb", 4))


def test_static_layout_offers_only_its_instances() -> None:
    snap = one_gpu(MigMode.STATIC, layout=BALANCED)
    p = place(snap, Demand.mig("3g.40gb"), "n")
    assert p is not None and p.mig == (MigSlot(0, "3g.40gb", 4),)
    verdict = fit(snap, Demand.mig("4g.40gb"))
    assert verdict.reason[0] == Reason.NO_MIG_PROFILE and not verdict.resolvable[0]
    assert verdict.message(0) == "needs MIG 4g.40gb; no GPU on node offers that profile"
    assert place(snap, Demand.mig("1g.10gb", 2), "n") is not None
    assert fit(snap, Demand.mig("1g.10gb", 3)).reason[0] == Reason.TOO_FEW_MIG


def test_a30_four_slot_layout() -> None:
    snap = one_gpu(model="A30-24GB")
    assert node_feasible(snap, [Demand.mig("2g.12gb"), Demand.mig("1g.6gb"), Demand.mig("1g.6gb")], "n")
    assert not node_feasible(snap, [Demand.mig("2g.12gb+me"), Demand.mig("1g.6gb+me")], "n")  # one +me
    assert place_all(snap, ["1g.6gb"] * 4) is not None
    assert place_all(snap, ["4g.24gb", "1g.6gb"]) is None


def test_whole_and_share_demands_skip_mig_gpus() -> None:
    verdict = fit(one_gpu(), Demand.whole(1))
    assert verdict.reason[0] == Reason.TOO_FEW_GPUS and verdict.message(0) == "needs 1 GPUs; node has 0 that qualify"
    verdict = fit(one_gpu(), Demand.share(compute_milli=100))
    assert verdict.reason[0] == Reason.NO_SHARE_GPU and not verdict.resolvable[0]
