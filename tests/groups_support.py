"""Pod groups driven the way kube-scheduler drives them, one pod at a time: filter, then bind on the node that
passed. The cluster is an in-memory API server whose pods the state relists after every write (the watch,
without threads), and the clock is a test clock. Shared by tests/test_groups_*.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry

from binpack import Gpu, Node, Placement
from binpack.topology import nvswitch
from scheduler.extender.verdicts import Engine, FilterOutcome
from scheduler.groups import GroupSettings, PodGroups
from scheduler.state.binder import Binder
from scheduler.state.cluster import ClusterState
from scheduler.state.memapi import MemoryApi
from scheduler.state.plugin import Plugins
from scheduler.state.standalone import node_object
from scheduler.translate.devices import placement_from
from scheduler.translate.pod import A_GROUP, A_GROUP_MIN

Obj = dict[str, Any]
TTL = 30.0


def nodes(n: int, gpus: int = 8, prefix: str = "n") -> list[Obj]:
    nv, pc = nvswitch(gpus, 12)
    return [node_object(Node(f"{prefix}{i}", tuple(Gpu(g, "A100-SXM4-80GB") for g in range(gpus)), 256_000,
                             2_000_000, nv, pc)) for i in range(n)]


def member(group: str, i: int, size: int, gpus: int = 8, *, priority: int = 0, created: str = "") -> Obj:
    limits = {"nvidia.com/gpu": str(gpus)}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{group}-{i}", "namespace": "default", "uid": f"uid-{group}-{i}",
                         "creationTimestamp": created or f"2026-01-01T00:00:{i:02d}Z",
                         "annotations": {A_GROUP: group, A_GROUP_MIN: str(size)}},
            "spec": {"containers": [{"name": "main", "resources": {"limits": limits, "requests": dict(limits)}}],
                     "priority": priority, "schedulerName": "gpupack-scheduler"},
            "status": {"phase": "Pending"}}


def plain(name: str, gpus: int) -> Obj:
    p = member("x", 0, 1, gpus)
    p["metadata"] = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    return p


class Sim:
    """kube-scheduler, the API server, the watch and the clock around one ClusterState with pod groups."""

    def __init__(self, node_objs: list[Obj], **settings: Any) -> None:
        self.now = 0.0
        self.state = ClusterState(assume_ttl_s=TTL, clock=lambda: self.now, mix_refresh_s=0.0)
        self.api = MemoryApi(node_objs, [])
        self.state.replace("nodes", node_objs)
        self.state.replace("pods", [])
        self.names = [n["metadata"]["name"] for n in node_objs]
        self.registry = CollectorRegistry()
        self.groups = PodGroups(self.state, self.registry, GroupSettings(**{"plan_s": 2.0, "round_s": 4.0,
                                                                          **settings}))
        self.engine = Engine(plugins=Plugins(self.groups))
        self.binder = Binder(self.state, self.api)
        self.binder.plugins = Plugins(self.groups)

    def sync(self) -> None:
        """The watch catching up: the state becomes exactly the API server's pods."""
        self.state.replace("pods", self.api.pods())

    def create(self, pods: Iterable[Obj]) -> None:
        for p in pods:
            self.api.put_pod(p)
        self.sync()

    def delete(self, p: Obj) -> None:
        self.api.delete_pod("default", p["metadata"]["name"])
        self.sync()

    def current(self, p: Obj) -> Obj:
        got = self.api.get_pod("default", p["metadata"]["name"])
        assert got is not None
        return got

    def filter(self, p: Obj, names: list[str] | None = None) -> FilterOutcome:
        view = self.state.view()
        table = self.engine.names(view, names if names is not None else self.names)
        return self.engine.filter(view, self.state.request(self.current(p)), "", table)

    def bind(self, p: Obj, node: str) -> str:
        m = p["metadata"]
        err = self.binder.bind("default", m["name"], m["uid"], node).error
        self.sync()
        return err

    def schedule(self, p: Obj, names: list[str] | None = None) -> str:
        """One scheduling cycle: filter, then bind on the first node that passed; the node or ''."""
        out = self.filter(p, names)
        if not out.passed_names:
            return ""
        node = out.passed_names[0]
        assert self.bind(p, node) == "", node
        return node

    def bound(self, p: Obj) -> str:
        return str(self.current(p)["spec"].get("nodeName") or "")

    def devices(self, p: Obj) -> Placement | None:
        return placement_from(self.current(p)["metadata"]["annotations"])

    def metric(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


def held_reasons(out: FilterOutcome) -> set[str]:
    assert not out.passed and not out.unresolvable
    return set(out.failed.values())
