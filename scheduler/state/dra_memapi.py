"""The in-memory API server with DRA's ResourceSlices and ResourceClaims (resource.k8s.io/v1).

Standalone and demo mode use it so that `--cluster FILE` may carry slices and claims and the
extender runs the same DRA code as in a cluster; tests use it to change claims as kube-scheduler's
DynamicResources plugin would. Same semantics as MemoryApi: objects replaced, never mutated, every
change numbered, watches from a compacted version answer 410.
"""

from __future__ import annotations

from typing import Any

from scheduler.state.kubeapi import Obj
from scheduler.state.memapi import MemoryApi, _Stream


class DraMemoryApi(MemoryApi):
    """MemoryApi plus ResourceSlices (by name) and ResourceClaims (by namespace/name)."""

    def __init__(self, nodes: list[Obj] | None = None, pods: list[Obj] | None = None,
                 slices: list[Obj] | None = None, claims: list[Obj] | None = None, **kw: Any) -> None:
        super().__init__(nodes, pods, **kw)
        self._slices: dict[str, Obj] = {}
        self._claims: dict[tuple[str, str], Obj] = {}
        for s in slices or []:
            self.put_resource_slice(s)
        for c in claims or []:
            self.put_resource_claim(c)

    def put_resource_slice(self, obj: Obj) -> Obj:
        with self._cv:
            name = obj["metadata"]["name"]
            new = self._stamp(obj)
            type_ = "MODIFIED" if name in self._slices else "ADDED"
            self._slices[name] = new
            self._record("resourceslice", type_, new)
            return new

    def delete_resource_slice(self, name: str) -> None:
        with self._cv:
            self._record("resourceslice", "DELETED", self._stamp(self._slices.pop(name)))

    def put_resource_claim(self, obj: Obj) -> Obj:
        with self._cv:
            key = (obj["metadata"].get("namespace", "default"), obj["metadata"]["name"])
            new = self._stamp(obj)
            type_ = "MODIFIED" if key in self._claims else "ADDED"
            self._claims[key] = new
            self._record("resourceclaim", type_, new)
            return new

    def delete_resource_claim(self, namespace: str, name: str) -> None:
        with self._cv:
            self._record("resourceclaim", "DELETED", self._stamp(self._claims.pop((namespace, name))))

    def list_resource_slices(self) -> tuple[list[Obj], str]:
        with self._cv:
            self._count("list_resource_slices")
            return list(self._slices.values()), str(self._rv)

    def list_resource_claims(self) -> tuple[list[Obj], str]:
        with self._cv:
            self._count("list_resource_claims")
            return list(self._claims.values()), str(self._rv)

    def watch_resource_slices(self, resource_version: str, timeout_s: int) -> _Stream:
        return self._watch("resourceslice", resource_version, timeout_s)

    def watch_resource_claims(self, resource_version: str, timeout_s: int) -> _Stream:
        return self._watch("resourceclaim", resource_version, timeout_s)

    def get_resource_claim(self, namespace: str, name: str) -> Obj | None:
        with self._cv:
            self._count("get_resource_claim")
            return self._claims.get((namespace, name))
