"""Who is in which pod group: members learned from the watch, and from filter calls for pods the watch has not
shown yet (or, in demo mode, never will).

Members are the pods with `gpupack.io/pod-group` in one namespace that are not terminal, whatever their
schedulerName (the annotation is gpupack's own). A group is seen as a Look: how many members must be placed,
how many exist, how many are held (bound, reserved, or not gpupack's to place) and which are pending. The
tables are guarded by the state's lock (ClusterState.atomic); a group whose last member left is handed to
`on_empty` so its plan and reservations go with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.podspec import PodRequest
from scheduler.state.cluster import TERMINAL, ClusterState, PodEntry
from scheduler.state.kubeapi import Obj
from scheduler.state.ledger import GroupKey

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


def _created(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("creationTimestamp") or "")


class Members:
    """The members of every pod group."""

    def __init__(self, state: ClusterState, on_empty: Callable[[GroupKey], None]) -> None:
        self.state = state
        self.on_empty = on_empty
        self._members: dict[GroupKey, dict[str, Member]] = {}
        self._key_of: dict[str, GroupKey] = {}

    def observe(self, uid: str, entry: PodEntry | None, obj: Obj | None) -> None:
        """A pod change from the watch (ClusterState.subscribe, under the state lock)."""
        req = entry.request if entry is not None else None
        if entry is None or req is None or not req.group or entry.phase in TERMINAL:
            self.forget(uid)
        else:
            self.put(Member(uid, req, _created(obj), entry.node))

    def learn(self, req: PodRequest) -> None:
        """A member kube-scheduler asks about before the watch showed it (or in demo mode, never)."""
        if req.uid and req.uid not in self._key_of:
            self.put(Member(req.uid, req, self.state.created(req.uid)))

    def put(self, m: Member) -> None:
        key = (m.request.namespace, m.request.group)
        if self._key_of.get(m.uid, key) != key:
            self.forget(m.uid)  # its annotation changed: it left the old group
        self._members.setdefault(key, {})[m.uid] = m
        self._key_of[m.uid] = key

    def forget(self, uid: str) -> None:
        key = self._key_of.pop(uid, None)
        if key is None:
            return
        group = self._members.get(key, {})
        group.pop(uid, None)
        if not group:  # the whole group is gone: nothing of it is worth keeping
            self._members.pop(key, None)
            self.on_empty(key)

    def of(self, key: GroupKey) -> dict[str, Member]:
        return self._members.get(key, {})

    def groups(self) -> list[GroupKey]:
        return list(self._members)

    def look(self, key: GroupKey) -> Look:
        members = self._members.get(key, {})
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
        ms = self._members.get(key, {}).values()
        prio = max((m.request.priority for m in ms), default=0)
        created = min((m.created for m in ms if m.created), default="\uffff")
        return -prio, created, key[0], key[1]
