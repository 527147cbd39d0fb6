"""Clusters without Kubernetes: the embedded demo cluster and `--cluster FILE`, as Node/Pod objects.

Both become real Kubernetes Node JSON (with the `gpupack.io/gpu-inventory` annotation the agent
would write), served by the in-memory API, so standalone mode runs exactly the code live mode runs.
A cluster file (YAML or JSON) is a Kubernetes List / NodeList of Node and Pod objects, or
`{nodes: [...], pods: [...]}` where a node is a full Node object or the short form

    {name: gpu-a, model: A100-SXM4-80GB, gpus: 8, nvlink: nvswitch | dgx1 | none,
     cpu: "64", memory: 512Gi, mig: {0: [1g.10gb@0, 3g.40gb@4], 1: dynamic}}

DRA's ResourceSlices and ResourceClaims may sit in the same file (dra_standalone.py reads them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from binpack import Gpu, MigInstance, MigMode, Node
from binpack.demo import demo_nodes
from binpack.topology import dgx1_v100, nvswitch, pcie_only
from scheduler.state.kubeapi import Obj
from scheduler.translate.inventory import INVENTORY, encode_inventory


class InvalidCluster(ValueError):
    """The cluster file cannot be read; the message names the entry."""


def node_object(node: Node, labels: Mapping[str, str] | None = None) -> Obj:
    """A Kubernetes Node carrying the node's inventory annotation, as the agent would publish it."""
    whole = sum(1 for g in node.gpus if g.mig_mode is MigMode.NONE)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name, **(labels or {})},
                     "annotations": {INVENTORY: encode_inventory(node.gpus, node.nvlink, node.pcie)}},
        "status": {"allocatable": {"cpu": f"{node.cpu_milli}m", "memory": f"{node.memory_mib}Mi",
                                   "nvidia.com/gpu": str(whole), "pods": "110"}},
    }


def demo_objects() -> list[Obj]:
    """The embedded demo cluster (binpack.demo) as Node objects."""
    return [node_object(n) for n in demo_nodes()]


def load_cluster(path: str | Path) -> tuple[list[Obj], list[Obj]]:
    """(nodes, pods) from a YAML/JSON cluster file."""
    p = Path(path)
    try:
        text = p.read_bytes()
        doc = orjson.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, orjson.JSONDecodeError, yaml.YAMLError) as e:
        raise InvalidCluster(f"{p}: {e}") from None
    if isinstance(doc, Mapping) and "items" in doc:
        items = doc.get("items") or []
        nodes = [o for o in items if isinstance(o, Mapping) and o.get("kind", "Node") == "Node"]
        pods = [o for o in items if isinstance(o, Mapping) and o.get("kind") == "Pod"]
    elif isinstance(doc, Mapping):
        nodes, pods = list(doc.get("nodes") or []), list(doc.get("pods") or [])
    else:
        raise InvalidCluster(f"{p}: expected a List of Nodes/Pods or {{nodes: [...], pods: [...]}}")
    out = [_node(n, f"{p}: nodes[{i}]") for i, n in enumerate(nodes)]
    for i, pod in enumerate(pods):
        if not isinstance(pod, Mapping) or not (pod.get("metadata") or {}).get("uid"):
            raise InvalidCluster(f"{p}: pods[{i}]: a Pod object with metadata.uid is needed")
    if not out:
        raise InvalidCluster(f"{p}: no nodes")
    return out, [dict(x) for x in pods]


def _node(entry: Any, where: str) -> Obj:
    if not isinstance(entry, Mapping):
        raise InvalidCluster(f"{where}: not an object")
    if "metadata" in entry:
        return dict(entry)
    try:
        name = str(entry["name"])
        model = str(entry["model"])
        count = int(entry.get("gpus", 8))
        mig = _mig(entry.get("mig") or {}, model)
        gpus = tuple(Gpu(i, model, int(entry.get("memoryMiB", 0)), f"GPU-{name}-{i}",
                         *mig.get(i, (MigMode.NONE, ()))) for i in range(count))
        nv, pc = _links(str(entry.get("nvlink", "none")), count)
        from scheduler.translate.quantity import bytes_to_mib, to_milli

        node = Node(name, gpus, to_milli(entry.get("cpu", "64")), bytes_to_mib(entry.get("memory", "512Gi")), nv, pc)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidCluster(f"{where}: {e}") from None
    return node_object(node, {k: str(v) for k, v in (entry.get("labels") or {}).items()})


def _mig(spec: Mapping[Any, Any], model: str) -> dict[int, tuple[MigMode, tuple[MigInstance, ...]]]:
    out: dict[int, tuple[MigMode, tuple[MigInstance, ...]]] = {}
    for gpu, layout in spec.items():
        if layout == "dynamic":
            out[int(gpu)] = (MigMode.DYNAMIC, ())
            continue
        if not isinstance(layout, Sequence) or isinstance(layout, str):
            raise ValueError(f"mig[{gpu}]: a list like [1g.10gb@0, 3g.40gb@4] or 'dynamic'")
        insts = []
        for item in layout:
            prof, _, start = str(item).partition("@")
            insts.append(MigInstance(prof, int(start or 0)))
        out[int(gpu)] = (MigMode.STATIC, tuple(insts))
    return out


def _links(kind: str, n: int) -> tuple[Any, Any]:
    if kind == "nvswitch":
        return nvswitch(n)
    if kind == "dgx1":
        if n != 8:
            raise ValueError("nvlink dgx1 needs 8 GPUs")
        return dgx1_v100()
    if kind == "none":
        return pcie_only(n)
    raise ValueError(f"nvlink: {kind!r} is not nvswitch, dgx1 or none")
