"""Allocate mode per DeviceClass and per scheduler profile: which allocator serves a pod's unallocated claims.

kube-scheduler's DynamicResources plugin allocates every unallocated claim of a pod, whatever its DeviceClass
(PreFilter counts them all and only checks that each class exists; Reserve allocates them together; an allocated
claim is only checked against its nodeSelector), and an extender cannot act before its Reserve. So a class
gpupack allocates must never be allocated in a profile where DynamicResources runs, and a profile where it is
disabled has no allocator but gpupack. Hence the contract (docs/dra.md, "Allocate mode per DeviceClass"):

- `GPUPACK_DRA_ALLOCATE_CLASSES`: the DeviceClasses gpupack allocates (default both of NVIDIA's chart);
- `GPUPACK_DRA_ALLOCATE_PROFILES`: the schedulerNames whose profile disables DynamicResources (default: every
  profile that calls gpupack).

A pod of an allocating profile whose unallocated claims are all of gpupack's classes is gpupack's to allocate; one
that asks another class is refused (nothing would allocate it there). A pod of another profile (DynamicResources
on) whose claims ask none of gpupack's classes is DRA's: gpupack observes and adopts as in observe mode; one that
asks a gpupack class is refused there, since DRA would allocate those devices too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from scheduler.dra.allocate import CLASSES

Route = Literal["allocate", "observe", "refuse"]


@dataclass(frozen=True, slots=True)
class Routing:
    classes: frozenset[str] = frozenset(CLASSES)
    profiles: frozenset[str] = frozenset()  # empty: every profile that calls gpupack has DynamicResources off

    @classmethod
    def parse(cls, classes: str, profiles: str) -> Routing:
        """From the settings' comma-separated lists; ValueError for a class gpupack cannot allocate."""
        cs = frozenset(c.strip() for c in classes.split(",") if c.strip()) or frozenset(CLASSES)
        unknown = sorted(cs - set(CLASSES))
        if unknown:
            raise ValueError(f"GPUPACK_DRA_ALLOCATE_CLASSES: {unknown} not allocatable by gpupack (it knows "
                             f"{sorted(CLASSES)})")
        return cls(cs, frozenset(p.strip() for p in profiles.split(",") if p.strip()))

    def allocating(self, scheduler_name: str) -> bool:
        return not self.profiles or scheduler_name in self.profiles

    def route(self, scheduler_name: str, unallocated: Iterable[Mapping[str, Any]]) -> tuple[Route, str]:
        """Who allocates the pod's unallocated claims, or why nobody may (the refusal's reason)."""
        mine = self.allocating(scheduler_name)
        profile = scheduler_name or "default-scheduler"
        for obj in unallocated:
            meta = obj.get("metadata") or {}
            where = f"resourceclaim {meta.get('namespace', '')}/{meta.get('name', '')}"
            for req, cls in _classes(obj):
                if mine and cls not in self.classes:
                    return "refuse", (f"{where} request {req}: device class {cls!r} is not one gpupack allocates "
                                      f"(it allocates {sorted(self.classes)}), and profile {profile} has "
                                      f"DynamicResources disabled: nothing would allocate it")
                if not mine and cls in self.classes:
                    return "refuse", (f"{where} request {req}: device class {cls!r} is allocated by gpupack in "
                                      f"profile(s) {sorted(self.profiles)} only; in profile {profile} "
                                      f"kube-scheduler's DynamicResources would allocate it too")
        return ("allocate" if mine else "observe"), ""


def _classes(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(request name, DeviceClass) of every request and firstAvailable subrequest of the claim."""
    out = []
    spec = obj.get("spec") or {}
    for r in ((spec.get("devices") or {}).get("requests") or []) if isinstance(spec, Mapping) else []:
        if not isinstance(r, Mapping):
            continue
        name = str(r.get("name") or "")
        ex = r.get("exactly")
        if isinstance(ex, Mapping):
            out.append((name, str(ex.get("deviceClassName") or "")))
        for sub in r.get("firstAvailable") or []:
            if isinstance(sub, Mapping):
                out.append((f"{name}/{sub.get('name', '')}", str(sub.get("deviceClassName") or "")))
    return out
