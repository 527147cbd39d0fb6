"""`gpupack report`'s replay agrees with `gpupack bench packing` on the same pods, exactly.

A cut of a shipped trace (the first nodes of a seed's tie-break order, the seed's arrivals up to 130%
of their capacity) is written as the dump `gpupack report --from` reads (benchmarks/report_packing.py),
read back through the report's dump -> ClusterState path and replayed; bench packing's engine
(benchmarks.simulate) runs the same arrivals with the arrivals as its pod list (FGD's typical pods are
taken from the pod list, and the dump holds only the arrivals). Per policy the pods placed, the GPUs
allocated and the fragmentation agree exactly; gpupack's and best-fit's placements, which never read the
typical pods, also agree with the plain bench packing run on the trace's own pod list.
The full check on the four traces: docs/report.md ("the replay against bench packing").
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cluster import task_of
from benchmarks.policies.gpupack import demand_of
from benchmarks.report_choosers import Mirror, PaperChooser, chooser, pod_table
from benchmarks.report_packing import POLICIES, check, cut, packing_dump
from benchmarks.synthetic import make_cluster, make_workload
from benchmarks.trace import load_trace
from binpack import DemandKind, Snapshot, Topology, allocate
from scheduler.report.analyze import read
from scheduler.report.dump import split
from scheduler.report.replay import replay
from scheduler.translate.pod import read_pod

CASES = [("default", 42, 90), ("gpuspec33", 43, 90)]  # gpuspec33: tasks restricted to GPU models


@pytest.mark.parametrize(("trace", "seed", "nodes"), CASES)
def test_replay_places_a_packing_workload_exactly_as_bench_packing(trace: str, seed: int, nodes: int) -> None:
    out = check(trace, seed, nodes, workers=1)
    assert out["nodes"] == nodes and out["pods"] > 4 * nodes
    for policy in POLICIES:
        fig = out["policies"][policy]
        assert fig["report"] == fig["bench_packing"], policy
        assert 0 < fig["report"]["placed"] < out["pods"], policy  # past 100% some do not fit: it has teeth
        if policy != "fgd":  # the trace's pod list changes only FGD's typical pods
            plain = fig["bench_packing_trace_mix"]
            assert (plain["placed"], plain["allocated"]) == (fig["report"]["placed"], fig["report"]["allocated"])
    placed = {p: out["policies"][p]["report"]["placed"] for p in POLICIES}
    assert len(set(placed.values())) > 1  # the policies decide differently on these pods


def test_the_dump_asks_for_what_each_task_asks() -> None:
    nodes, pods = load_trace("openb", "gpuspec33")
    sub, arrivals = cut(nodes, pods, 42, 40)
    doc = packing_dump(sub, pods, arrivals)
    got = [read_pod(o).demand for o in doc["items"] if o["kind"] == "Pod"]
    want = [demand_of(task_of(pods, row)) for row in arrivals.pods.tolist()]
    assert got == want
    assert any(d.models for d in got) and any(d.compute_milli for d in got)


def test_parallel_replay_gives_the_rows_of_a_serial_one() -> None:
    nodes, pods = load_trace("openb", "default")
    sub, arrivals = cut(nodes, pods, 44, 40)
    pic = read(split(packing_dump(sub, pods, arrivals)["items"], "cut"))
    seen: list[tuple[str, int, int]] = []
    serial = replay(pic, POLICIES, workers=1)
    parallel = replay(pic, POLICIES, lambda p, n, total: seen.append((p, n, total)), workers=2)
    strip = [(r.policy, r.placed, r.unplaced, r.allocated, r.stranded, r.fgd_frag) for r in serial]
    assert strip == [(r.policy, r.placed, r.unplaced, r.allocated, r.stranded, r.fgd_frag) for r in parallel]
    assert {p for p, n, total in seen if n == total} == set(POLICIES)  # the workers' progress came back


@pytest.mark.parametrize("policy", ["fgd", "best-fit"])
def test_the_mirror_stays_what_the_snapshot_says_with_mig_nvlink_and_gpu_memory(policy: str) -> None:
    """The paper policies' mirror is kept by arithmetic, not read back: after every booking of a workload
    with MIG slices, NVLink sets and shares asking for GPU memory, it equals a fresh copy of the snapshot."""
    cluster = make_cluster(10)
    demands = [d for it in make_workload(cluster, seed=3, load=1.5) for d in it.members]
    snap = Snapshot.build(cluster)
    pick = chooser(policy, snap, pod_table(demands))
    assert isinstance(pick, PaperChooser)
    placed = 0
    for d in demands:
        p = pick.place(snap, d)
        if p is None:
            continue
        snap = allocate(snap, p)
        pick.booked(snap, p)
        placed += 1
        fresh = Mirror(snap, None).state
        kept = pick.mirror.state
        for col in ("left", "cpu", "mem", "full", "maxleft", "total"):
            assert np.array_equal(getattr(kept, col), getattr(fresh, col)), (col, p)
    kinds = {d.kind for d in demands}
    assert {DemandKind.MIG, DemandKind.SHARE, DemandKind.WHOLE} <= kinds and 0 < placed < len(demands)
    assert any(d.memory_mib for d in demands) and any(d.topology is Topology.NVLINK for d in demands)


def test_bound_pods_without_gpus_stay_and_both_job_paths_agree() -> None:
    """A bound pod asking for no GPU is not replayed: the replay starts from nodes that hold it. The job a
    worker builds from the raw dump equals the one built from the cluster picture."""
    from scheduler.report.replay import _job_of_dump, _job_of_picture

    nodes, pods = load_trace("openb", "default")
    sub, arrivals = cut(nodes, pods, 42, 30)
    doc = packing_dump(sub, pods, arrivals)
    first = doc["items"][0]["metadata"]["name"]
    held = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "daemon", "namespace": "kube-system", "uid": "daemon-0",
                         "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": first, "containers": [{"name": "c", "resources": {"requests": {"cpu": "6",
                                                                                                "memory": "1Gi"}}}]},
            "status": {"phase": "Running"}}
    dump = split([*doc["items"], held], "cut")
    pic = read(dump)
    a, b = _job_of_picture(pic), _job_of_dump(dump)
    assert a.demands == b.demands and len(a.demands) == len(arrivals.pods)  # the daemon is not replayed
    for col, want in a.empty.state().items():
        assert np.array_equal(b.empty.state()[col], want), col
    with a.empty.read() as v:
        i = a.empty.node_index(first)
        assert int(v.cpu_free[i]) == int(v.s.cpu_total[i]) - 6000
        assert int(v.hmem_free[i]) == int(v.s.hmem_total[i]) - 1024
    rows = replay(pic, POLICIES, workers=1)
    assert all(r.placed + r.unplaced == len(arrivals.pods) for r in rows)
