"""The extension points: what a plugin (pod groups, scheduler/groups) answers when the extender calls it.

Like a scheduler framework's plugins, a plugin is registered once (`Plugins(...)`, scheduler/extender/app.py)
and called at named points, never appended to hook lists from outside:
  applies  whether the plugin has a say for this pod at all (a pod group member); pods it does not claim keep
           the extender's shared answer caches
  filter   before any node is looked at: a reason to hold the pod back, a Pin to one node, or None
  preempt  the eviction answer for the pod instead of the per-node check, or None (not its business)
  reserve  at bind, under the bind's node lock and the state lock: the devices already reserved for the pod,
           a refusal, or None (bind as any pod)
This module sits in the state layer so that both the extender (which calls) and the binder (which calls
`reserve`) see it, and the plugin never imports the extender.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from binpack import Placement
from scheduler.state.cluster import StateView
from scheduler.translate.pod import PodRequest


@dataclass(frozen=True, slots=True)
class Pin:
    """A filter answer that only `node` may take the pod (the node a pod group's plan reserved for it)."""

    node: str
    elsewhere: str  # the reason given for every other node


class VictimRef(Protocol):
    """A pod kube-scheduler proposes to evict (the extender's wire.Victim); plugins read its UID only."""

    @property
    def uid(self) -> str: ...


Proposal = Mapping[str, tuple[Sequence[VictimRef], int]]  # node -> (victims, NumPDBViolations)
Answer = dict[str, tuple[list[str], int]]  # node -> (victim UIDs to evict, NumPDBViolations)


class Plugin(Protocol):
    """One plugin's answers at the extension points (see the module docstring)."""

    def applies(self, req: PodRequest) -> bool: ...

    def filter(self, req: PodRequest, view: StateView, names: Sequence[str]) -> str | Pin | None: ...

    def preempt(self, req: PodRequest, view: StateView, victims: Proposal) -> Answer | None: ...

    def reserve(self, uid: str, req: PodRequest, node: str) -> Placement | str | None: ...


class Plugins:
    """The registered plugins, called in registration order; the first that answers decides."""

    def __init__(self, *plugins: Plugin) -> None:
        self._plugins = tuple(plugins)

    def __bool__(self) -> bool:
        return bool(self._plugins)

    def applies(self, req: PodRequest) -> bool:
        return any(p.applies(req) for p in self._plugins)

    def filter(self, req: PodRequest, view: StateView, names: Sequence[str]) -> str | Pin | None:
        for p in self._plugins:
            if p.applies(req) and (got := p.filter(req, view, names)):
                return got
        return None

    def preempt(self, req: PodRequest, view: StateView, victims: Proposal) -> Answer | None:
        for p in self._plugins:
            if p.applies(req) and (got := p.preempt(req, view, victims)) is not None:
                return got
        return None

    def reserve(self, uid: str, req: PodRequest, node: str) -> Placement | str | None:
        for p in self._plugins:
            if p.applies(req) and (got := p.reserve(uid, req, node)) is not None:
                return got
        return None
