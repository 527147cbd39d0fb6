"""The devices record round-trips, and each container gets its own devices."""

import pytest

from binpack import Demand, Snapshot, Topology, place
from binpack.demo import demo_nodes
from scheduler.devices import DEVICES, MPS_MEMORY, MPS_THREADS, VISIBLE, InvalidDevices, annotations_for, placement_from
from scheduler.podspec import read_pod


def two_container_pod(res_a: dict[str, str], res_b: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "a", "resources": {"limits": res_a}},
                                    {"name": "b", "resources": {"limits": res_b}}]}}


def test_whole_gpus_split_between_containers() -> None:
    snap = Snapshot.build(demo_nodes())
    req = read_pod(two_container_pod({"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": "1"}))
    p = place(snap, req.demand, "dgx-h100-0")
    assert p is not None
    ann = annotations_for(req, p, snap.node("dgx-h100-0"))
    a, b = ann[VISIBLE + "a"].split(","), ann[VISIBLE + "b"].split(",")
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
    assert ann[MPS_THREADS + "a"] == "20" and ann[MPS_MEMORY + "b"] == "0=2048M"
    assert ann[VISIBLE + "a"] == ann[VISIBLE + "b"]


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
