"""Table-driven: the reason, the sentence and the resolvable flag fit gives each node."""

from __future__ import annotations

import pytest

from binpack import Demand, Gpu, Node, Placement, Snapshot, Topology, allocate, fit, set_foreign
from binpack.fit import Reason
from binpack.topology import dgx1_v100, nvswitch, pcie_only

H100 = frozenset({"H100-SXM5-80GB"})


def cluster() -> Snapshot:
    nv, pc = pcie_only(2)
    t4 = Node("t4", (Gpu(0, "T4"), Gpu(1, "T4")), 8_000, 32_000, nv, pc)
    nv, pc = dgx1_v100()
    dgx1 = Node("dgx1", tuple(Gpu(i, "V100-SXM2-32GB") for i in range(8)), 80_000, 512_000, nv, pc)
    nv, pc = nvswitch(8, 18)
    h100 = Node("h100", tuple(Gpu(i, "H100-SXM5-80GB") for i in range(8)), 200_000, 2_000_000, nv, pc)
    cpu = Node("cpu", (), 4_000, 16_000)
    sick = Node("sick", (Gpu(0, "A100-SXM4-80GB", healthy=False),), 8_000, 32_000)
    snap = Snapshot.build([t4, dgx1, h100, cpu, sick])
    snap = allocate(snap, Placement("dgx1", (0, 4)))
    snap = allocate(snap, Placement("t4", (1,), cpu_milli=6_000, host_memory_mib=30_000))
    return set_foreign(snap, "h100", 6)


CASES = [  # demand, node, reason, resolvable, message
    (Demand.whole(4, topology=Topology.NVLINK), "dgx1", Reason.NVLINK_BUSY, True,
     "needs 4 GPUs linked by NVLink; largest free NVLink set has 3"),
    (Demand.whole(4), "t4", Reason.TOO_FEW_GPUS, False, "needs 4 GPUs; node has 2 that qualify"),
    (Demand.whole(2, models=H100), "t4", Reason.WRONG_MODEL, False, "needs GPU model H100-SXM5-80GB; node has T4"),
    (Demand.whole(4), "h100", Reason.GPUS_BUSY, True, "needs 4 free GPUs; 2 free"),
    (Demand.whole(2), "t4", Reason.GPUS_BUSY, True, "needs 2 free GPUs; 1 free"),
    (Demand.whole(1), "cpu", Reason.NO_GPU, False, "node has no usable GPU"),
    (Demand.whole(1), "sick", Reason.NO_GPU, False, "node has no usable GPU"),
    (Demand.whole(2, topology=Topology.NVLINK), "t4", Reason.NO_NVLINK_SET, False,
     "needs 2 GPUs linked by NVLink; node's largest NVLink set is 1"),
    (Demand.share(memory_mib=20_000), "t4", Reason.SHARE_TOO_BIG, False,
     "needs 20000 MiB on one GPU; node's largest GPU has 15360 MiB"),
    (Demand.share(memory_mib=15_000, compute_milli=500), "h100", Reason.FITS, False, ""),
    (Demand.whole(1, cpu_milli=16_000), "t4", Reason.CPU_TOO_BIG, False,
     "needs 16000m CPU; node has 8000m allocatable"),
    (Demand.whole(1, cpu_milli=4_000), "t4", Reason.CPU_BUSY, True, "needs 4000m CPU; node has 2000m free"),
    (Demand.none(host_memory_mib=64_000), "t4", Reason.MEMORY_TOO_BIG, False,
     "needs 64000 MiB memory; node has 32000 MiB allocatable"),
    (Demand.none(host_memory_mib=4_000), "t4", Reason.MEMORY_BUSY, True,
     "needs 4000 MiB memory; node has 2000 MiB free"),
    (Demand.none(cpu_milli=1_000), "cpu", Reason.FITS, False, ""),
    (Demand.mig("1g.10gb"), "h100", Reason.NO_MIG_PROFILE, False,
     "needs MIG 1g.10gb; no GPU on node offers that profile"),
    (Demand.whole(2, topology=Topology.NVLINK), "dgx1", Reason.FITS, False, ""),
]


@pytest.mark.parametrize(("demand", "node", "reason", "resolvable", "message"), CASES,
                         ids=[f"{c[1]}-{c[2].name}-{i}" for i, c in enumerate(CASES)])
def test_reason_message_and_resolvable(demand: Demand, node: str, reason: Reason, resolvable: bool,
                                       message: str) -> None:
    snap = cluster()
    verdict = fit(snap, demand)
    i = snap.node_index(node)
    assert Reason(int(verdict.reason[i])) is reason
    assert bool(verdict.fits[i]) is (reason is Reason.FITS)
    assert bool(verdict.resolvable[i]) is resolvable
    assert verdict.message(i) == message


def test_share_busy_sentence() -> None:
    nv, pc = pcie_only(1)
    snap = Snapshot.build([Node("n", (Gpu(0, "T4"),), 1000, 1000, nv, pc)])
    snap = allocate(snap, Placement("n", (0,)))
    verdict = fit(snap, Demand.share(memory_mib=1000, compute_milli=500))
    assert verdict.reason[0] == Reason.SHARE_BUSY and verdict.resolvable[0]
    assert verdict.message(0) == "needs 1000 MiB and 50% compute on one GPU; no GPU has that much free"


def test_foreign_pods_leave_shares_only_the_gpus_they_cannot_hold() -> None:
    snap = Snapshot.build([Node("n", (Gpu(0, "T4"), Gpu(1, "T4")), 1000, 1000)])
    snap = allocate(snap, Placement("n", (0,), memory_mib=100, compute_milli=100, kind=Demand.share(10).kind))
    snap = set_foreign(snap, "n", 1)  # holds GPU 1, as far as anyone can tell
    assert fit(snap, Demand.share(memory_mib=100)).fits[0]
    assert not fit(snap, Demand.whole(1)).fits[0]
    full = allocate(snap, Placement("n", (0,), memory_mib=15200, compute_milli=900, kind=Demand.share(10).kind))
    assert fit(full, Demand.share(memory_mib=100)).reason[0] == Reason.SHARE_BUSY


def test_a_failed_check_carries_requested_have_and_capacity() -> None:
    snap = cluster()
    cpu = fit(snap, Demand.whole(1, cpu_milli=4_000)).insufficient(snap.node_index("t4"))
    assert (cpu.reason, cpu.requested, cpu.have, cpu.capacity) == (Reason.CPU_BUSY, 4_000, 2_000, 8_000)
    busy = fit(snap, Demand.whole(4)).insufficient(snap.node_index("h100"))
    assert (busy.reason, busy.requested, busy.have, busy.capacity) == (Reason.GPUS_BUSY, 4, 2, 8)
    model = fit(snap, Demand.whole(2, models=H100)).insufficient(snap.node_index("t4"))
    assert model.node_models == ("T4",) and model.capacity is None


def test_every_reason_has_a_sentence() -> None:
    from binpack.reasons import TEMPLATES

    assert set(TEMPLATES) == set(Reason) - {Reason.RESOLVABLE}
