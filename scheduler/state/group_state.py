"""Pod groups' part of ClusterState (a base class of it, under the same lock): who is in which group, and the
group reservations in the ledger.

Members are the pods with `gpupack.io/pod-group` in one namespace that are not terminal, whatever their
schedulerName (the annotation is gpupack's own): the watched pods (PodEntry, indexed by group as the watch
brings them) and, for pods the watch has not shown yet (or in demo mode never will), the requests filter
calls carried (`learn_member`). It is an index of the state's pods, not a second record: a watched pod's entry
is the same object as in ClusterState's pods. A group whose last member left takes its reservations with it.
Reservations are bookings carrying the group (state/ledger.py), reserved all or nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable

from binpack import Conflict, Placement
from scheduler.state.ledger import Booking, GroupBookings, GroupKey, Ledger
from scheduler.state.parsed import TERMINAL, PodEntry
from scheduler.translate.pod import PodRequest


class PodGroupState:
    """Members and reservations of pod groups; ClusterState provides the lock, the ledger and the clock."""

    lock: threading.RLock
    ledger: Ledger
    clock: Callable[[], float]
    assume_ttl_s: float

    def _init_groups(self) -> None:
        self._groups: dict[GroupKey, dict[str, PodEntry]] = {}  # group -> its members, in arrival order
        self._group_of: dict[str, GroupKey] = {}

    def unassume(self, uid: str, settled: bool = False) -> None:
        raise NotImplementedError  # ClusterState's

    def created(self, uid: str) -> str:
        raise NotImplementedError  # ClusterState's

    # -- members ----------------------------------------------------------------------------------------
    def _index_member(self, uid: str, entry: PodEntry | None) -> None:
        """A pod change from the watch (under the lock)."""
        req = entry.request if entry is not None else None
        if entry is None or req is None or not req.group or entry.phase in TERMINAL:
            self._leave(uid)
        else:
            self._join(entry)

    def learn_member(self, req: PodRequest) -> None:
        """A member kube-scheduler asks about before the watch showed it (or in demo mode, never)."""
        with self.lock:
            if req.uid and req.uid not in self._group_of:
                self._join(PodEntry(req.uid, req.namespace, req.name, "", "", req, None, 0, self.created(req.uid)))

    def _join(self, entry: PodEntry) -> None:
        assert entry.request is not None
        key = (entry.request.namespace, entry.request.group)
        if self._group_of.get(entry.uid, key) != key:
            self._leave(entry.uid)  # its annotation changed: it left the old group
        self._groups.setdefault(key, {})[entry.uid] = entry
        self._group_of[entry.uid] = key

    def _leave(self, uid: str) -> None:
        key = self._group_of.pop(uid, None)
        if key is None:
            return
        group = self._groups.get(key, {})
        group.pop(uid, None)
        if not group:  # the whole group is gone: its reservations go with it
            self._groups.pop(key, None)
            gb = self.ledger.group(key)
            if gb.planned:
                self.release_group(key, [*gb.live, *gb.held])

    def group_members(self, key: GroupKey) -> dict[str, PodEntry]:
        """uid -> the member's entry (node set once bound), in arrival order."""
        with self.lock:
            return dict(self._groups.get(key, {}))

    def member_groups(self) -> list[GroupKey]:
        """Every group with at least one member."""
        with self.lock:
            return list(self._groups)

    # -- reservations -----------------------------------------------------------------------------------
    def reserve_all(self, group: GroupKey, bookings: Iterable[tuple[str, Placement, PodRequest]],
                    ttl_s: float) -> None:
        """Assume every (uid, placement, request) of one pod group, or none: Conflict (nothing booked) when one
        does not fit now. The bookings carry the group, so losing one releases the group (group_bookings)."""
        with self.lock:
            deadline = self.clock() + ttl_s
            done: list[str] = []
            opened = group not in self.ledger.grouped
            try:
                for uid, p, req in bookings:
                    self.ledger.assume(Booking(uid, p, req.demand, True, deadline, group=group))
                    done.append(uid)
            except Conflict:
                for uid in done:
                    self.ledger.drop(uid, bound=True)  # never booked as far as the group is concerned
                if opened:
                    self.ledger.close_group(group)  # no plan was made
                raise

    def group_bookings(self, group: GroupKey) -> GroupBookings:
        with self.lock:
            return self.ledger.group(group)

    def open_groups(self) -> list[GroupKey]:
        """Groups with a plan open in the ledger."""
        with self.lock:
            return list(self.ledger.grouped)

    def release_group(self, group: GroupKey, uids: Collection[str]) -> dict[str, Placement]:
        """Give up these reservations of the group (as unassume does) and close its plan; what the plan had
        (uid -> placement, lost ones included)."""
        with self.lock:
            gb = self.ledger.group(group)
            planned = {u: self.ledger.bookings[u].placement for u in self.ledger.grouped.get(group, ())}
            for uid in uids:
                self.unassume(uid)
            self.ledger.close_group(group)
            return {**gb.lost, **planned}

    def close_group(self, group: GroupKey) -> None:
        """The group's plan is done (every member bound): its bookings are ordinary ones from now on."""
        with self.lock:
            self.ledger.close_group(group)

    def renew(self, uid: str) -> None:
        """An assumption's deadline starts again (a group member's bind gets its own time, as any bind)."""
        with self.lock:
            self.ledger.update(uid, deadline=self.clock() + self.assume_ttl_s)
