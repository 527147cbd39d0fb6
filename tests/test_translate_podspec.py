"""The one pod -> demand translation, on the captured pods and on hand-made ones."""

import json
from pathlib import Path
from typing import Any

import pytest

from binpack import DemandKind, Topology
from scheduler.translate.pod import InvalidPod, read_pod


def pod(containers: list[dict[str, Any]], annotations: dict[str, str] | None = None, init: list[Any] | None = None,
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations or {}}, "spec": spec}


def ctr(name: str = "main", **limits: str) -> dict[str, Any]:
    lim = {k.replace("__", "/").replace("_", "."): v for k, v in limits.items()}
    return {"name": name, "resources": {"limits": lim, "requests": {"cpu": "1", "memory": "1Gi", **lim}}}


def test_captured_pods(shared: Path) -> None:
    seen = {}
    for f in sorted((shared / "fixtures" / "extender").glob("*request*.json")):
        body = json.loads(f.read_text())
        if body.get("Pod"):
            req = read_pod(body["Pod"])
            seen[f.name] = req.demand
    assert seen["filter-nodes-request.json"].kind is DemandKind.WHOLE and seen["filter-nodes-request.json"].count == 1
    mig = seen["filter-mig-single-feasible-node-request.json"]
    assert mig.kind is DemandKind.MIG and mig.mig_profile == "1g.10gb" and mig.count == 1
    share = seen["filter-gpu-memory-ignoredbyscheduler-nodes-request.json"]
    assert share.kind is DemandKind.SHARE and share.memory_mib == 20 and share.compute_milli == 250
    assert seen["preempt-nodenametovictims-request.json"].count == 4
    assert share.cpu_milli == 100 and share.host_memory_mib == 128


def test_whole_gpus_over_containers_and_init() -> None:
    p = pod([{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "2"}}},
             {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            {"gpupack.io/gpu-model": "A100-SXM4-80GB|H100-SXM5-80GB", "gpupack.io/topology": "nvlink"},
            init=[{"name": "i", "resources": {"limits": {"nvidia.com/gpu": "4"}}}])
    req = read_pod(p)
    assert req.demand.count == 4  # max(sum of app containers, largest init container)
    assert req.demand.topology is Topology.NVLINK
    assert req.demand.models == {"A100-SXM4-80GB", "H100-SXM5-80GB"}
    assert [c.name for c in req.containers] == ["a", "b", "i"]


def test_share_from_resources_and_annotations() -> None:
    req = read_pod(pod([{"name": "m", "resources": {"limits": {"gpupack.io/gpu-memory": "20k",
                                                                 "gpupack.io/gpu-compute": "30"}}}]))
    assert (req.demand.kind, req.demand.memory_mib, req.demand.compute_milli) == (DemandKind.SHARE, 20000, 300)
    req = read_pod(pod([{"name": "m"}], {"gpupack.io/gpu-fraction": "0.5", "gpupack.io/gpu-memory": "40Gi"}))
    assert (req.demand.memory_mib, req.demand.compute_milli) == (40960, 500)


def test_cpu_only_pod_is_unmanaged() -> None:
    req = read_pod(pod([{"name": "m", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]))
    assert not req.managed and req.demand.cpu_milli == 2000


def test_pod_group() -> None:
    req = read_pod(pod([ctr(nvidia__com_gpu="1")], {"gpupack.io/pod-group": "job", "gpupack.io/pod-group-min": "4"}))
    assert (req.group, req.group_min) == ("job", 4)


@pytest.mark.parametrize(
    ("p", "words"),
    [
        (pod([{"name": "m", "resources": {"limits": {"nvidia.com/mig-9g.99gb": "1"}}}]), "unknown MIG profile"),
        (pod([{"name": "m", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1", "nvidia.com/gpu": "1"}}}]),
         "mixes"),
        (pod([{"name": "m", "resources": {"limits": {"gpupack.io/gpu-compute": "150"}}}]), "1..100"),
        (pod([{"name": "m"}], {"gpupack.io/gpu-fraction": "1.5"}), "fraction"),
        (pod([{"name": "m", "resources": {"limits": {"gpupack.io/gpu-memory": "900000"}}}]), "largest GPU"),
        (pod([ctr(nvidia__com_gpu="1")], {"gpupack.io/pod-group": "job"}), "no size"),
        (pod([ctr(nvidia__com_gpu="1")], {"gpupack.io/topology": "fast"}), "nvlink, best-effort"),
        (pod([{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "lots"}}}]), "quantity"),
        (pod([{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
              {"name": "b", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}]), "different kinds"),
    ],
)
def test_invalid_pods_say_what_to_write(p: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidPod, match=words):
        read_pod(p)


@pytest.mark.parametrize("bad", [None, [], {"metadata": "x", "spec": {}}, {"spec": {"containers": ["x"]}}])
def test_malformed_pod_objects(bad: Any) -> None:
    with pytest.raises(InvalidPod):
        read_pod(bad)


def test_zero_gpus_is_a_cpu_only_demand() -> None:
    """`nvidia.com/gpu: 0` is how a CPU-only pod opts into the extender (kube-scheduler calls an
    extender for pods that name one of its managedResources, whatever the quantity): it reads as a
    demand for no GPU, with its CPU and memory, so binpack scores where it strands the least GPU."""
    zero = {"nvidia.com/gpu": "0"}
    res = {"limits": zero, "requests": {"cpu": "1", "memory": "1Gi", **zero}}
    req = read_pod(pod([{"name": "main", "resources": res}]))
    assert req.demand.kind is DemandKind.NONE and req.demand.count == 0
    assert req.demand.cpu_milli == 1000 and req.demand.host_memory_mib == 1024
