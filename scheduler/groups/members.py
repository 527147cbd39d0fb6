"""Who is in which pod group, read from the state (state/group_state.py keeps the one record of pods: the
watched pods, and the requests of filter calls for pods the watch has not shown yet).

A group is seen as a Look: how many members must be placed, how many exist, how many are held (bound,
reserved, or not gpupack's to place) and which are pending, oldest first. Read under the state's lock
(ClusterState.atomic) when several reads must agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.state.cluster import ClusterState
from scheduler.state.ledger import GroupKey
from scheduler.translate.pod import PodRequest

__all__ = ["GroupKey", "Look", "Member", "Members"]


@dataclass(frozen=True, slots=True)
class Member:
    uid: str
    request: PodRequest
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text); "" when not known
    node: str = ""  # spec.nodeName once bound


@dataclass(frozen=True, slots=True)
class Look:
    """A group as it stands: how many must be placed, exist, are held (bound, reserved, or not ours to place)."""

    need: int
    exist: int
    held: int
    pending: tuple[Member, ...]  # members to plan: neither bound nor reserved, oldest first

    @property
    def ready(self) -> bool:
        return self.exist >= self.need and self.held < self.need and bool(self.pending)


class Members:
    """The members of every pod group, as the state has them (ClusterState.group_members)."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def learn(self, req: PodRequest) -> None:
        """A member kube-scheduler asks about before the watch showed it (or in demo mode, never)."""
        self.state.learn_member(req)

    def of(self, key: GroupKey) -> dict[str, Member]:
        return {u: Member(u, e.request, e.created, e.node)
                for u, e in self.state.group_members(key).items() if e.request is not None}

    def groups(self) -> list[GroupKey]:
        return self.state.member_groups()

    def look(self, key: GroupKey) -> Look:
        members = self.of(key)
        gb = self.state.group_bookings(key)
        planned = gb.live.keys() | gb.held | gb.lost.keys()  # reserved (or since bound) by the group's plan
        need = max((m.request.group_min for m in members.values()), default=0)
        held, pending = 0, []
        for uid, m in members.items():
            b = self.state.booking(uid)
            if m.node or uid in planned or not m.request.managed or (b is not None and b.confirmed):
                held += 1
            else:
                pending.append(m)
        pending.sort(key=lambda m: (m.created, m.uid))
        return Look(need, len(members), held, tuple(pending))

    def order(self, key: GroupKey) -> tuple[int, str, str, str]:
        """Which ready group is planned first: priority desc, then the oldest, then by name."""
        ms = self.of(key).values()
        prio = max((m.request.priority for m in ms), default=0)
        created = min((m.created for m in ms if m.created), default="\uffff")
        return -prio, created, key[0], key[1]
