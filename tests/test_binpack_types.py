"""Bad input raises ValueError naming the field; infeasible input is never an exception."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from binpack import Demand, DemandKind, Gpu, MigInstance, MigMode, Node, Placement, Snapshot, Topology, set_foreign
from binpack.topology import dgx1_v100


def _node(**kw: object) -> Node:
    args: dict = {"name": "n", "gpus": (Gpu(0, "T4"), Gpu(1, "T4")), "cpu_milli": 1000, "memory_mib": 1000}
    args.update(kw)
    return Node(**args)


BAD: list[tuple[str, Callable[[], object], str]] = [
    ("unknown MIG profile", lambda: Demand.mig("5g.50gb"), "demand.mig_profile"),
    ("MIG profile the model lacks", lambda: Demand.mig("1g.5gb", models=frozenset({"H100"})), "demand.mig_profile"),
    ("MIG count 0", lambda: Demand.mig("1g.10gb", 0), "demand.count"),
    ("negative share memory", lambda: Demand.share(memory_mib=-1), "demand.memory_mib"),
    ("negative host memory", lambda: Demand.whole(1, host_memory_mib=-5), "demand.host_memory_mib"),
    ("negative cpu", lambda: Demand.whole(1, cpu_milli=-5), "demand.cpu_milli"),
    ("share over 100%", lambda: Demand.share(compute_milli=1001), "demand.compute_milli"),
    ("empty share", lambda: Demand.share(), "demand.memory_mib/compute_milli"),
    ("share bigger than any GPU", lambda: Demand.share(memory_mib=10**7), "demand.memory_mib"),
    ("share on two GPUs", lambda: Demand(DemandKind.SHARE, count=2, compute_milli=10), "demand.count"),
    ("more GPUs than any node holds", lambda: Demand.whole(17), "demand.count"),
    ("zero GPUs", lambda: Demand.whole(0), "demand.count"),
    ("nvlink on a share", lambda: Demand.share(compute_milli=10, topology=Topology.NVLINK), "demand.topology"),
    ("count on a CPU-only demand", lambda: Demand(DemandKind.NONE, count=2), "demand.count"),
    ("non-square link matrix", lambda: _node(nvlink=((0, 1),)), "node.nvlink"),
    ("ragged link matrix", lambda: _node(nvlink=((0, 1), (1,))), "node.nvlink"),
    ("asymmetric link matrix", lambda: _node(nvlink=((0, 1), (2, 0))), "node.nvlink"),
    ("negative link count", lambda: _node(nvlink=((0, -1), (-1, 0))), "node.nvlink"),
    ("asymmetric PCIe matrix", lambda: _node(pcie=((0, 10), (50, 0))), "node.pcie"),
    ("17 GPUs on a node", lambda: _node(gpus=tuple(Gpu(i, "T4") for i in range(17))), "node.gpus"),
    ("GPU index out of order", lambda: _node(gpus=(Gpu(1, "T4"),)), "node.gpus"),
    ("empty node name", lambda: _node(name=""), "node.name"),
    ("negative node CPU", lambda: _node(cpu_milli=-1), "node.cpu_milli"),
    ("unknown model without memory", lambda: Gpu(0, "Mystery GPU"), "gpu.memory_mib"),
    ("negative GPU memory", lambda: Gpu(0, "T4", memory_mib=-1), "gpu.memory_mib"),
    ("negative GPU index", lambda: Gpu(-1, "T4"), "gpu.index"),
    ("MIG on a T4", lambda: Gpu(0, "T4", mig_mode=MigMode.DYNAMIC), "gpu.mig_mode"),
    ("layout profile the model lacks", lambda: Gpu(0, "H100", mig_mode=MigMode.STATIC,
                                                    mig_instances=(MigInstance("1g.5gb", 0),)), "gpu.mig_instances"),
    ("3g at slot 2", lambda: Gpu(0, "H100", mig_mode=MigMode.STATIC,
                                 mig_instances=(MigInstance("3g.40gb", 2),)), "gpu.mig_instances"),
    ("overlapping instances", lambda: Gpu(0, "H100", mig_mode=MigMode.STATIC, mig_instances=(
        MigInstance("3g.40gb", 0), MigInstance("1g.10gb", 3))), "gpu.mig_instances"),
    ("two +me instances", lambda: Gpu(0, "H100", mig_mode=MigMode.STATIC, mig_instances=(
        MigInstance("1g.10gb+me", 0), MigInstance("1g.10gb+me", 1))), "gpu.mig_instances"),
    ("instances on a dynamic GPU", lambda: Gpu(0, "H100", mig_mode=MigMode.DYNAMIC,
                                               mig_instances=(MigInstance("7g.80gb", 0),)), "gpu.mig_instances"),
    ("instances with MIG off", lambda: Gpu(0, "H100", mig_instances=(MigInstance("7g.80gb", 0),)), "gpu.mig_instances"),
    ("negative placement amount", lambda: Placement("n", (0,), memory_mib=-1), "placement"),
    ("repeated GPU in a placement", lambda: Placement("n", (0, 0)), "placement.gpus"),
    ("duplicate node names", lambda: Snapshot.build([_node(), _node()]), "duplicate node name"),
    ("unknown node", lambda: Snapshot.build([_node()]).node_index("m"), "node 'm'"),
    ("negative foreign GPUs", lambda: set_foreign(Snapshot.build([_node()]), "n", -1), "foreign gpus"),
]


@pytest.mark.parametrize(("case", "build", "field"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_input_names_the_field(case: str, build: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError) as err:
        build()
    assert field in str(err.value), (case, str(err.value))


def test_good_input_is_normalised() -> None:
    g = Gpu(0, "NVIDIA A100-SXM4-80GB")
    assert g.model == "A100-SXM4-80GB" and g.memory_mib == 81920
    assert Gpu(0, "Mystery GPU", memory_mib=1000).model == "MYSTERY-GPU"
    d = Demand(DemandKind.SHARE, compute_milli=250)
    assert d.count == 1 and d.gpu_milli == 250
    assert Demand.whole(3).gpu_milli == 3000 and Demand.mig("1g.10gb").gpu_milli == 0
    assert Demand.mig("1g.10gb", models=frozenset({"nvidia h100 80gb hbm3"})).models == {"H100-SXM5-80GB"}
    nv, pc = dgx1_v100()
    n = Node("dgx", tuple(Gpu(i, "V100-SXM2-32GB") for i in range(8)), 1, 1, nv, pc)
    assert n.nvlink[0][3] == 2 and _node().nvlink == ((0, 0), (0, 0))
