"""`gpupack report`'s replay agrees with `bench synthetic` where the two share a rule: the same pods (the
`bench synthetic` workload, as Kubernetes pods created in arrival order) on the same nodes, read back
through the report's own dump -> ClusterState path, are placed by the replay's gpupack exactly as the
benchmark's booking loop places them with gpupack (the same count placed, the same GPUs allocated), MIG
slices, NVLink sets and shares with GPU memory included. The replay's FGD and best-fit are `bench
packing`'s (tests/test_report_replay_packing.py); bench synthetic's FGD is its own binpack-scored variant.
"""

from __future__ import annotations

import time

import pytest

from benchmarks.synthetic import Chooser, Item, book, make_cluster, make_workload
from binpack import Demand, DemandKind, Snapshot, Topology
from scheduler.report.analyze import gpu_use, read
from scheduler.report.dump import split
from scheduler.report.replay import listed_nodes, replay
from scheduler.state.standalone import node_object


def _pod(i: int, d: Demand) -> dict:
    limits: dict[str, str] = {}
    ann: dict[str, str] = {}
    if d.kind is DemandKind.WHOLE:
        limits["nvidia.com/gpu"] = str(d.count)
        if d.topology is Topology.NVLINK:
            ann["gpupack.io/topology"] = "nvlink"
    elif d.kind is DemandKind.SHARE:
        limits["gpupack.io/gpu-memory"] = str(d.memory_mib)
        limits["gpupack.io/gpu-compute"] = str(d.compute_milli // 10)
    else:
        limits[f"nvidia.com/mig-{d.mig_profile}"] = str(d.count)
    requests = {**limits, "cpu": f"{d.cpu_milli}m", "memory": f"{d.host_memory_mib}Mi"}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_790_000_000 + i))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "ml", "uid": f"uid-{i}", "creationTimestamp": created,
                         "annotations": ann},
            "spec": {"schedulerName": "gpupack-scheduler",
                     "containers": [{"name": "main", "resources": {"limits": limits, "requests": requests}}]},
            "status": {"phase": "Pending"}}


@pytest.mark.parametrize("policy", ["gpupack"])
def test_replay_places_the_benchmark_workload_as_the_benchmark_does(policy: str) -> None:
    cluster = make_cluster(12)
    items = [it for it in make_workload(cluster, seed=5, load=2.0) if len(it.members) == 1]  # groups: all or none
    pods = [_pod(i, it.members[0]) for i, it in enumerate(items)]
    dump = split([node_object(n) for n in cluster] + pods, "test")
    pic = read(dump)
    nodes = listed_nodes(pic)  # the cluster as the report read it, in the dump's order (it breaks ties)
    assert sorted(n.name for n in nodes) == sorted(n.name for n in cluster)
    snap, chooser, placed = Snapshot.build(nodes), Chooser(policy, 0), 0
    for it in items:
        snap, booked, _ = book(chooser, snap, Item(it.name, it.members))
        placed += bool(booked)
    _, used, _ = gpu_use(snap)
    (as_bound, row) = replay(pic, [policy], workers=1)
    assert as_bound.placed == 0 and as_bound.unplaced == len(items)  # nothing bound yet: all pending
    assert 0 < placed < len(items)  # at 200% load some do not fit: the comparison has teeth
    assert (row.placed, row.unplaced) == (placed, len(items) - placed)
    assert row.allocated == round(float(used.sum()), 2)
