"""The in-memory API server with DRA's ResourceSlices and ResourceClaims (resource.k8s.io/v1).

Standalone and demo mode use it so that `--cluster FILE` may carry slices and claims and the
extender runs the same DRA code as in a cluster; tests use it to change claims as kube-scheduler's
DynamicResources plugin would. Same semantics as MemoryApi: objects replaced, never mutated, every
change numbered, watches from a compacted version answer 410.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from scheduler.state.kubeapi import ApiError, ApiTimeout, Obj
from scheduler.state.memapi import MemoryApi, _Stream

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class DraMemoryApi(MemoryApi):
    """MemoryApi plus ResourceSlices (by name) and ResourceClaims (by namespace/name)."""

    def __init__(self, nodes: list[Obj] | None = None, pods: list[Obj] | None = None,
                 slices: list[Obj] | None = None, claims: list[Obj] | None = None, **kw: Any) -> None:
        super().__init__(nodes, pods, **kw)
        self.binding_allowed = True  # RBAC: update on resourceclaims/binding, cluster-wide (fixtures item 7)
        self.claim_writes: list[tuple[str, Obj]] = []  # ("claim" | "status", the body sent), in order
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

    # -- claim writes, with the rules the real apiserver applied (tests/data/dra/README.md item 7) -------------
    def _claim_for_write(self, namespace: str, name: str, obj: Obj) -> Obj:
        cur = self._claims.get((namespace, name))
        if cur is None:
            raise ApiError(404, f'resourceclaims.resource.k8s.io "{name}" not found', "NotFound")
        meta = obj.get("metadata") or {}
        if meta.get("uid") and meta["uid"] != cur["metadata"].get("uid"):
            raise ApiError(409, f'Operation cannot be fulfilled on resourceclaims.resource.k8s.io "{name}": '
                                "Precondition failed: UID", "Conflict")
        rv = str(meta.get("resourceVersion") or "")
        if rv and rv != str(cur["metadata"].get("resourceVersion")):
            raise ApiError(409, f'Operation cannot be fulfilled on resourceclaims.resource.k8s.io "{name}": the '
                                "object has been modified; please apply your changes to the latest version and "
                                "try again", "Conflict")
        return cur

    def update_resource_claim(self, namespace: str, name: str, obj: Obj) -> Obj:
        """PUT on the main resource: metadata (finalizers, labels) change; status is dropped (V16)."""
        def merge(cur: Obj) -> Obj:
            meta = {**cur["metadata"], **{k: v for k, v in (obj.get("metadata") or {}).items()
                                          if k in ("finalizers", "labels", "annotations")}}
            return {**cur, "metadata": meta}

        return self._write_claim("claim", namespace, name, obj, merge)

    def update_resource_claim_status(self, namespace: str, name: str, obj: Obj) -> Obj:
        """PUT on /status: only status changes, checked as the apiserver 1.36 did (422 with its message)."""
        def merge(cur: Obj) -> Obj:
            status = dict(obj.get("status") or {})
            self._check_status(cur, status)
            alloc = status.get("allocation")
            if alloc is not None and not ((alloc.get("devices") or {}).get("results")):
                status["allocation"] = {**alloc, "devices": {}}  # stored as the apiserver stores it (V14)
            return {**cur, "status": {k: v for k, v in status.items() if v is not None}}

        return self._write_claim("status", namespace, name, obj, merge)

    def _write_claim(self, part: str, namespace: str, name: str, obj: Obj, merge: Callable[[Obj], Obj]) -> Obj:
        """One PUT of a claim (`part`: "claim" or its "status"): recorded, preconditions checked, the
        merged object stored; an injected fault may time the caller out after the write applied."""
        fault = "claim" if part == "claim" else "claim-status"
        timeout_after = self._fault(fault)
        with self._cv:
            self.claim_writes.append((part, obj))
            new = self.put_resource_claim(merge(self._claim_for_write(namespace, name, obj)))
        if timeout_after:
            raise ApiTimeout(f"{fault}: read timed out after the write applied (injected)")
        return new

    def _check_status(self, cur: Obj, status: Obj) -> None:
        name = cur["metadata"]["name"]
        invalid = f'ResourceClaim.resource.k8s.io "{name}" is invalid: '
        old = cur.get("status") or {}
        alloc, reserved = status.get("allocation"), status.get("reservedFor") or []
        if (alloc != old.get("allocation") or reserved != (old.get("reservedFor") or [])) and not self.binding_allowed:
            raise ApiError(422, invalid + "status.allocation: Forbidden: changing status.allocation or "
                           'status.reservedFor requires resource="resourceclaims/binding", verb="update" permission',
                           "Invalid")
        if reserved and alloc is None:
            raise ApiError(422, invalid + "status.reservedFor: Forbidden: may not be specified when `allocated` is "
                           "not set", "Invalid")
        for i, r in enumerate(reserved):
            if not r.get("uid"):
                raise ApiError(422, invalid + f"status.reservedFor[{i}].uid: Required value", "Invalid")
        if alloc is None:
            return
        if old.get("allocation") is not None and alloc != old["allocation"]:
            raise ApiError(422, invalid + "status.allocation: Invalid value: field is immutable", "Invalid")
        names = {str(r.get("name")) for r in ((cur.get("spec") or {}).get("devices") or {}).get("requests") or []}
        for i, res in enumerate((alloc.get("devices") or {}).get("results") or []):
            if str(res.get("request") or "").split("/")[0] not in names:
                raise ApiError(422, invalid + f"status.allocation.devices.results[{i}].request: Invalid value: "
                               f"{res.get('request')!r}: must be the name of a request in the claim", "Invalid")
            if not _DNS1123_SUBDOMAIN.match(str(res.get("driver") or "")):
                raise ApiError(422, invalid + f"status.allocation.devices.results[{i}].driver: Invalid value: "
                               f"{res.get('driver')!r}: a lowercase RFC 1123 subdomain", "Invalid")
