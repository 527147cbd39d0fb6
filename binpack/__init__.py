"""binpack: the GPU packing solver. Pure Python + NumPy + OR-Tools; knows GPUs, MIG slices, NVLink
links, demands and placements, and nothing of HTTP, Kubernetes objects or NVML.

    snap = Snapshot.build(nodes)
    verdict = fit(snap, demand)            # per node: fits, or a reason (and whether eviction helps)
    scores = score(verdict, mix)           # fragmentation-aware, floats and ints 0..10
    p = place(snap, demand, node_name)     # the exact devices
    snap2 = allocate(snap, p)              # new snapshot, O(GPUs of one node)
    assert validate(snap, [(demand, p)]) == []
    group = place_group(snap, [demand] * 4)  # all or nothing, greedy then CP-SAT; group.status says how good
"""

from binpack.alloc import Conflict, allocate, release, set_foreign
from binpack.catalog import CATALOG, GpuModel, MigProfile, canonical_model, lookup
from binpack.fit import FitResult, Reason, fit
from binpack.group import GroupResult, GroupStatus, place_group
from binpack.mix import EMPTY_MIX, Mix, MixLearner, TaskClass
from binpack.place import place
from binpack.score import Scores, score
from binpack.snapshot import Snapshot
from binpack.types import Demand, DemandKind, Gpu, MigInstance, MigMode, MigSlot, Node, Placement, Topology
from binpack.validate import validate

__all__ = [
    "CATALOG", "EMPTY_MIX", "Conflict", "Demand", "DemandKind", "FitResult", "Gpu", "GpuModel", "GroupResult",
    "GroupStatus", "MigInstance", "MigMode", "MigProfile", "MigSlot", "Mix", "MixLearner", "Node", "Placement",
    "Reason", "Scores", "Snapshot", "TaskClass", "Topology", "allocate", "canonical_model", "fit", "lookup", "place",
    "place_group", "release", "score", "set_foreign", "validate",
]
