"""Node objects -> binpack nodes: the inventory annotation round-trips; GFD labels are a fallback."""

import json
from pathlib import Path

import pytest

from binpack import MigMode
from binpack.demo import demo_nodes
from scheduler.translate.inventory import INVENTORY, InvalidInventory, encode_inventory, node_from_k8s


def k8s_node(name: str, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
             alloc: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"name": name, "annotations": annotations or {}, "labels": labels or {}},
            "status": {"allocatable": alloc or {"cpu": "64", "memory": "512Gi"}}}


@pytest.mark.parametrize("node", demo_nodes(), ids=lambda n: n.name)
def test_inventory_round_trip(node) -> None:  # type: ignore[no-untyped-def]
    text = encode_inventory(node.gpus, node.nvlink, node.pcie)
    back = node_from_k8s(k8s_node(node.name, {INVENTORY: text},
                                  alloc={"cpu": f"{node.cpu_milli}m", "memory": f"{node.memory_mib}Mi"}))
    assert back == node


def test_captured_nodes_from_gfd_labels(shared: Path) -> None:
    body = json.loads((shared / "fixtures/extender/filter-nodes-request.json").read_text())
    nodes = {n["metadata"]["name"]: node_from_k8s(n) for n in body["Nodes"]["items"]}
    a = nodes["gpu-node-a"]
    assert len(a.gpus) == 8 and a.gpus[0].model == "A100-SXM4-80GB" and a.cpu_milli == 64000
    c = nodes["gpu-node-c"]
    plain = [g for g in c.gpus if g.mig_mode is MigMode.NONE]
    mig = [g for g in c.gpus if g.mig_mode is MigMode.STATIC]
    # 4 whole H100s, and 14 advertised 1g.10gb devices laid out legally on 2 GPUs
    assert len(plain) == 4 and sum(len(g.mig_instances) for g in mig) == 14 and len(mig) == 2


def test_unavailable_inventory_means_no_gpus() -> None:
    text = json.dumps({"version": 1, "status": "unavailable", "message": "NVML not found"})
    assert node_from_k8s(k8s_node("n", {INVENTORY: text})).gpus == ()


@pytest.mark.parametrize(
    "text", ["not json", json.dumps({"version": 9}), json.dumps({"version": 1, "gpus": [{"index": 0}]}),
             json.dumps({"version": 1, "gpus": [{"index": 0, "model": "A100", "migMode": "weird"}]})])
def test_bad_inventory_names_the_node(text: str) -> None:
    with pytest.raises(InvalidInventory, match="node n"):
        node_from_k8s(k8s_node("n", {INVENTORY: text}))


def test_unknown_model_needs_memory_label() -> None:
    with pytest.raises(InvalidInventory, match="unknown"):
        node_from_k8s(k8s_node("n", labels={"nvidia.com/gpu.product": "Mystery-X"}, alloc={"nvidia.com/gpu": "2"}))
    node = node_from_k8s(k8s_node("n", labels={"nvidia.com/gpu.product": "Mystery-X", "nvidia.com/gpu.memory": "16384"},
                                  alloc={"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"}))
    assert [g.memory_mib for g in node.gpus] == [16384, 16384]
