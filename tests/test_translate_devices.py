"""The devices record round-trips, and each container gets its own devices."""

import pytest

from binpack import Demand, Snapshot, Topology, place
from binpack.demo import demo_nodes
from scheduler.translate.devices import DEVICES, InvalidDevices, annotations_for, corrected, placement_from, record_from
from scheduler.translate.pod import read_pod


def two_container_pod(res_a: dict[str, str], res_b: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "a", "resources": {"limits": res_a}},
                                    {"name": "b", "resources": {"limits": res_b}}]}}


def test_whole_gpus_split_between_containers() -> None:
    snap = Snapshot.build(demo_nodes())
    req = read_pod(two_container_pod({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": "1"}))
    p = place(snap, req.demand, "dgx-h100-0")
    assert p is not None
    ann = annotations_for(req, p, snap.node("dgx-h100-0"), bound_ns=7)
    assert set(ann) == {DEVICES}  # one record, no per-container annotations (any container name fits)
    rec = record_from(ann)
    assert rec is not None and rec.bound_ns == 7 and rec.node == "dgx-h100-0"
    a, b = (list(c.devices) for c in rec.containers)
    assert len(a) == 2 and len(b) == 1 and not set(a) & set(b)
    assert all(x.startswith("GPU-") for x in a + b)
    assert placement_from(ann) == p


def test_share_containers_get_mps_limits() -> None:
    snap = Snapshot.build(demo_nodes())
    req = read_pod(two_container_pod({"gpupack.io/gpu-memory": "1024", "gpupack.io/gpu-compute": "20"},
                                     {"gpupack.io/gpu-memory": "2048", "gpupack.io/gpu-compute": "30"}))
    assert req.demand == Demand.share(3072, 500)
    p = place(snap, req.demand, "t4-0")
    assert p is not None
    ann = annotations_for(req, p, snap.node("t4-0"))
    rec = record_from(ann)
    assert rec is not None
    a, b = rec.containers
    assert (a.memory_mib, a.compute_milli, b.memory_mib, b.compute_milli) == (1024, 200, 2048, 300)
    assert a.devices == b.devices == (snap.node("t4-0").gpus[p.gpus[0]].uuid,)


def test_nvlink_demand_record() -> None:
    snap = Snapshot.build(demo_nodes())
    req = read_pod({"metadata": {"annotations": {"gpupack.io/topology": "nvlink"}},
                    "spec": {"containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]}})
    assert req.demand.topology is Topology.NVLINK
    p = place(snap, req.demand, "dgx1-v100-0")
    assert p is not None
    assert placement_from(annotations_for(req, p, snap.node("dgx1-v100-0"))) == p


@pytest.mark.parametrize("text", ["{", '{"v": 2}', '{"v": 1, "node": "n"}', '{"v": 1, "node": "n", "kind": "x"}'])
def test_bad_record(text: str) -> None:
    with pytest.raises(InvalidDevices):
        placement_from({DEVICES: text})
    assert placement_from({}) is None


def test_correction_moves_the_placement_to_what_kubelet_allocated() -> None:
    snap = Snapshot.build(demo_nodes())
    node = snap.node("dgx-h100-0")
    req = read_pod(two_container_pod({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": "1"}))
    p = place(snap, req.demand, "dgx-h100-0")
    assert p is not None
    text = annotations_for(req, p, node)[DEVICES]
    free = [g.uuid for g in node.gpus if g.index not in p.gpus]
    new = corrected(text, "b", free[:1], node.gpus)
    moved = placement_from({DEVICES: new})
    index_of = {g.uuid: g.index for g in node.gpus}
    assert moved is not None and moved.gpus == (*p.gpus[:2], index_of[free[0]])
    rec = record_from({DEVICES: new})
    assert rec is not None and rec.container("b") is not None and rec.container("b").devices == (free[0],)
    with pytest.raises(InvalidDevices):
        corrected(text, "nope", free[:1], node.gpus)


@pytest.mark.parametrize("text", ['{"v": 1, "node": "n", "kind": "whole", "containers": {"a": {"devices": [1]}}}',
                                  '{"v": 1, "node": "n", "kind": "whole", "containers": []}',
                                  '{"v": 1, "node": "n", "kind": "whole", "containers": {"a": {}}}',
                                  "x" * 70000])
def test_bad_record_for_the_agent(text: str) -> None:
    with pytest.raises(InvalidDevices):
        record_from({DEVICES: text})
