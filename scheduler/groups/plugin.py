"""PodGroups: the pod-group plugin, registered with the extender through the Plugin Protocol
(scheduler/state/plugin.py); its members are the state's pods (ClusterState.group_members). It only wires the parts:
members (members.py), plans and reservations (reserve.py), and the extension points filter (filter.py),
preempt (preempt.py) and reserve-at-bind (bind.py); metrics in metrics.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from binpack import Placement
from scheduler import events as ev
from scheduler.groups.bind import reserved_for
from scheduler.groups.filter import filter_member
from scheduler.groups.members import GroupKey, Look, Members
from scheduler.groups.metrics import GroupMetrics
from scheduler.groups.preempt import preempt_member
from scheduler.groups.reserve import GroupSettings, Reservations
from scheduler.state.cluster import ClusterState, StateView
from scheduler.state.plugin import Answer, Pin, Proposal
from scheduler.translate.pod import PodRequest


class PodGroups:
    """Members, plans and reservations of every pod group; a Plugin for the pods of a group."""

    def __init__(self, state: ClusterState, registry: CollectorRegistry | None = None,
                 settings: GroupSettings | None = None) -> None:
        self.state = state
        self.settings = settings or GroupSettings()
        self.members = Members(state)
        self.metrics = GroupMetrics(registry or CollectorRegistry(), self.counts)
        self.reservations = Reservations(state, self.settings, self.members, self.metrics)

    @property
    def events(self) -> ev.EventRecorder | None:
        """Where Events on members go (waits, plans, releases); app.py sets it."""
        return self.reservations.events

    @events.setter
    def events(self, recorder: ev.EventRecorder | None) -> None:
        self.reservations.events = recorder

    # -- the extension points (state/plugin.py) ----------------------------------------------------------
    def applies(self, req: PodRequest) -> bool:
        return bool(req.group)

    def filter(self, req: PodRequest, view: StateView, names: Sequence[str]) -> str | Pin | None:
        return filter_member(self.reservations, req, view, names)

    def preempt(self, req: PodRequest, view: StateView, victims: Proposal) -> Answer | None:
        return preempt_member(self.reservations, req, view, victims)

    def reserve(self, uid: str, req: PodRequest, node: str) -> Placement | str | None:
        return reserved_for(self.reservations, uid, req, node)

    # -- what tests, benchmarks and the metrics read -------------------------------------------------------
    def look(self, key: GroupKey) -> Look:
        with self.state.atomic():
            return self.members.look(key)

    def check(self, key: GroupKey) -> dict[str, Placement]:
        with self.state.atomic():
            return self.reservations.check(key)

    def reserved(self) -> dict[GroupKey, dict[str, Placement]]:
        return self.reservations.reserved()

    def counts(self) -> dict[str, int]:
        return self.reservations.counts()
