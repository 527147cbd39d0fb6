"""The embedded demo cluster: what `gpupack demo` and `gpupack serve` use when given no cluster.

2 DGX H100 (NVSwitch), 4 A100-80GB HGX nodes with MIG on half their GPUs (static layouts and one
dynamic GPU), 2 DGX-1 V100 (hybrid cube-mesh) and 8 T4 PCIe nodes.
"""

from __future__ import annotations

from binpack.topology import dgx1_v100, nvswitch, pcie_only
from binpack.types import Demand, Gpu, MigInstance, MigMode, Node, Topology

_ALL_1G = tuple(MigInstance("1g.10gb", s) for s in range(7))
_BALANCED = (MigInstance("1g.10gb", 0), MigInstance("1g.10gb", 1), MigInstance("2g.20gb", 2),
             MigInstance("3g.40gb", 4))
_TWO_3G = (MigInstance("3g.40gb", 0), MigInstance("3g.40gb", 4))


def _uuid(node: str, g: int) -> str:
    return f"GPU-{abs(hash((node, g))) % 10**12:012d}-demo"


def demo_nodes() -> list[Node]:
    nodes: list[Node] = []
    for n in range(2):
        name = f"dgx-h100-{n}"
        nv, pc = nvswitch(8, 18)
        gpus = tuple(Gpu(g, "H100-SXM5-80GB", uuid=f"GPU-h100-{n}-{g}") for g in range(8))
        nodes.append(Node(name, gpus, 224_000, 2_000_000, nv, pc))
    layouts = (_ALL_1G, _BALANCED, _TWO_3G)
    for n in range(4):
        name = f"hgx-a100-{n}"
        nv, pc = nvswitch(8, 12)
        gl: list[Gpu] = []
        for g in range(8):
            uid = f"GPU-a100-{n}-{g}"
            if g < 3:
                gl.append(Gpu(g, "A100-SXM4-80GB", uuid=uid, mig_mode=MigMode.STATIC,
                              mig_instances=layouts[(g + n) % 3]))
            elif g == 3:
                gl.append(Gpu(g, "A100-SXM4-80GB", uuid=uid, mig_mode=MigMode.DYNAMIC))
            else:
                gl.append(Gpu(g, "A100-SXM4-80GB", uuid=uid))
        nodes.append(Node(name, tuple(gl), 128_000, 1_000_000, nv, pc))
    for n in range(2):
        nv, pc = dgx1_v100()
        gpus = tuple(Gpu(g, "V100-SXM2-32GB", uuid=f"GPU-v100-{n}-{g}") for g in range(8))
        nodes.append(Node(f"dgx1-v100-{n}", gpus, 80_000, 512_000, nv, pc))
    for n in range(8):
        nv, pc = pcie_only(4)
        gpus = tuple(Gpu(g, "T4", uuid=f"GPU-t4-{n}-{g}") for g in range(4))
        nodes.append(Node(f"t4-{n}", gpus, 32_000, 128_000, nv, pc))
    return nodes


def demo_workload() -> list[tuple[str, Demand]]:
    """A small mixed workload to show packing on the demo cluster."""
    gi = 1024
    return [
        ("train-8x-h100", Demand.whole(8, models=frozenset({"H100-SXM5-80GB"}), topology=Topology.NVLINK,
                                       cpu_milli=64_000, host_memory_mib=256 * gi)),
        ("train-4x-nvlink", Demand.whole(4, topology=Topology.NVLINK, cpu_milli=16_000, host_memory_mib=64 * gi)),
        ("train-2x-v100", Demand.whole(2, models=frozenset({"V100-SXM2-32GB"}), topology=Topology.NVLINK,
                                       cpu_milli=8_000, host_memory_mib=32 * gi)),
        ("infer-half-gpu", Demand.share(memory_mib=40 * gi, compute_milli=500,
                                        cpu_milli=4_000, host_memory_mib=16 * gi)),
        ("infer-quarter", Demand.share(memory_mib=10 * gi, compute_milli=250, cpu_milli=2_000, host_memory_mib=8 * gi)),
        ("infer-quarter-2", Demand.share(memory_mib=10 * gi, compute_milli=250, cpu_milli=2_000,
                                         host_memory_mib=8 * gi)),
        ("notebook-mig-1g", Demand.mig("1g.10gb", 1, cpu_milli=2_000, host_memory_mib=8 * gi)),
        ("finetune-mig-3g", Demand.mig("3g.40gb", 1, cpu_milli=8_000, host_memory_mib=32 * gi)),
        ("t4-inference", Demand.whole(1, models=frozenset({"T4"}), cpu_milli=4_000, host_memory_mib=16 * gi)),
        ("too-big", Demand.whole(16, cpu_milli=1_000)),
    ]
