"""The ledger: who holds which devices (pod UID -> booking), foreign GPUs per node, and the snapshot
with all of it applied.

A booking is either recorded (read from `gpupack.io/devices` on a bound pod) or assumed (a bind in
flight, or done but not yet seen bound by the watch; it has a deadline; an unsettled one, whose Binding
may exist, has none). Assumptions are generic
(uid -> placement, deadline) so a pod-group planner reserves a whole group the same way: its bookings carry
the group's key, and the ledger remembers which of a group's bookings were lost (dropped while their pod was
not bound), so the group is released whole; there is no second table of plans.
Bookings and foreign counts change the snapshot incrementally (O(GPUs of one node)); a change of
the node set rebuilds it from scratch, replaying every booking in order. A booking that no longer
fits (two pods recorded on one device) is kept but not applied, and retried when its node frees
something, so the ledger never double-books and never forgets a pod that really holds devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from binpack import Conflict, Demand, Node, Placement, Snapshot, allocate, release, set_foreign

GroupKey = tuple[str, str]  # (namespace, pod group name): groups are namespaced, like the pods in them


@dataclass(frozen=True, slots=True)
class Booking:
    """Devices held by one pod. `deadline` (monotonic seconds) only matters for assumptions."""

    uid: str
    placement: Placement
    demand: Demand | None = None
    assumed: bool = False
    deadline: float = 0.0
    confirmed: bool = False  # the Binding exists; waiting for the watch to show the pod bound
    # the Binding may or may not exist (its POST timed out or failed ambiguously): kept, never expired,
    # until the watch shows the pod bound, deleted or finished, or a later bind of the pod settles it
    unsettled: bool = False
    group: GroupKey | None = None  # a pod group's reservation (scheduler/groups), kept once the pod is bound

    @property
    def node(self) -> str:
        return self.placement.node


@dataclass(frozen=True)
class GroupBookings:
    """A pod group's bookings as the ledger has them."""

    planned: bool  # the group has a plan (bookings, or lost ones) open
    live: dict[str, Placement] = field(default_factory=dict)  # assumed, the Binding not made yet
    held: frozenset[str] = frozenset()  # the Binding exists or the pod is seen bound with its record
    lost: dict[str, Placement] = field(default_factory=dict)  # dropped while their pod was not bound


class Ledger:
    """Bookings, foreign GPUs and the snapshot they make. Not thread-safe: ClusterState locks it."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.bookings: dict[str, Booking] = {}
        self.applied: set[str] = set()
        self.foreign: dict[str, int] = {}
        self.assumed: set[str] = set()  # uids of assumed bookings (expiry scans only these)
        self.by_node: dict[str, set[str]] = {}  # node -> uids booked there
        self.grouped: dict[GroupKey, dict[str, None]] = {}  # open group plans -> uids of their bookings, in order
        self.lost: dict[GroupKey, dict[str, Placement]] = {}  # open group plans -> bookings lost, and where
        self.conflicts = 0  # bookings that could not be applied, ever (a metric)
        self._snap: Snapshot | None = None

    # -- nodes ------------------------------------------------------------------------------------------
    def set_nodes(self, nodes: Mapping[str, Node]) -> None:
        self.nodes = dict(nodes)
        self._snap = None

    def put_node(self, node: Node) -> None:
        if self.nodes.get(node.name) != node:
            self.nodes[node.name] = node
            self._snap = None

    def drop_node(self, name: str) -> None:
        if self.nodes.pop(name, None) is not None:
            self._snap = None

    # -- the snapshot -----------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        if self._snap is None:
            self._rebuild()
        assert self._snap is not None
        return self._snap

    def _rebuild(self) -> None:
        snap = Snapshot.build([self.nodes[n] for n in sorted(self.nodes)])
        self.applied = set()
        # recorded bookings first: they are the API server's truth, assumptions come after
        order = sorted(self.bookings.values(), key=lambda b: b.assumed)
        for b in order:
            snap = self._try_apply(snap, b)
        for node, n in self.foreign.items():
            if n and node in snap.static.index:
                snap = set_foreign(snap, node, n)
        self._snap = snap

    def _try_apply(self, snap: Snapshot, b: Booking) -> Snapshot:
        if b.node not in snap.static.index:
            return snap  # a pod on a node not listed yet: applied when the node arrives
        try:
            snap = allocate(snap, b.placement)
        except Conflict:
            self.conflicts += 1
            return snap
        self.applied.add(b.uid)
        return snap

    # -- bookings ---------------------------------------------------------------------------------------
    def get(self, uid: str) -> Booking | None:
        return self.bookings.get(uid)

    def assume(self, b: Booking) -> None:
        """Book strictly: raise Conflict (and change nothing) unless the placement fits now."""
        snap = self.snapshot()
        if b.uid in self.bookings:
            raise Conflict(f"pod {b.uid} already holds devices")
        if b.node not in snap.static.index:
            raise Conflict(f"node {b.node} is unknown")
        self._snap = allocate(snap, b.placement)
        self.bookings[b.uid] = b
        self.applied.add(b.uid)
        self._mark(b)

    def put(self, b: Booking) -> bool:
        """Record a booking (replacing the pod's old one, whose group it keeps); False when it cannot be
        applied now."""
        old = self.bookings.get(b.uid)
        if old is not None and old.group is not None and b.group is None:
            b = replace(b, group=old.group)  # a group member seen bound: still part of its group's plan
        if old is not None and old.placement == b.placement and b.uid in self.applied:
            self.bookings[b.uid] = b  # same devices (an assumption confirmed by the watch): no change
            self._mark(b)
            return True
        if old is not None:
            self.drop(b.uid, bound=True)
        self.bookings[b.uid] = b
        self._mark(b)
        if self._snap is not None:
            self._snap = self._try_apply(self._snap, b)
        return b.uid in self.applied

    def _mark(self, b: Booking) -> None:
        self.by_node.setdefault(b.node, set()).add(b.uid)
        if b.group is not None:
            self.grouped.setdefault(b.group, {})[b.uid] = None
        if b.assumed:
            self.assumed.add(b.uid)
        else:
            self.assumed.discard(b.uid)

    def update(self, uid: str, **changes: object) -> None:
        b = self.bookings.get(uid)
        if b is not None:
            self.bookings[uid] = replace(b, **changes)  # type: ignore[arg-type]

    def drop(self, uid: str, bound: bool = False) -> Booking | None:
        """Forget a booking. A group's booking dropped while its pod is not `bound` is lost: the group's plan
        is released whole when next checked."""
        b = self.bookings.pop(uid, None)
        self.assumed.discard(uid)
        if b is None:
            return None
        self.by_node.get(b.node, set()).discard(uid)
        if b.group is not None and b.group in self.grouped:
            self.grouped[b.group].pop(uid, None)  # (the plan stays open, even empty, until it is closed)
            if not bound:
                self.lost.setdefault(b.group, {})[uid] = b.placement
        if uid in self.applied:
            self.applied.discard(uid)
            if self._snap is not None:
                self._snap = release(self._snap, b.placement)
                self._retry(b.node)
        return b

    def _retry(self, node: str) -> None:
        """Apply bookings of the node that did not fit before (something was just freed there)."""
        assert self._snap is not None
        for uid in sorted(self.by_node.get(node, ())):
            if uid not in self.applied:
                self._snap = self._try_apply(self._snap, self.bookings[uid])

    # -- pod group plans ----------------------------------------------------------------------------------
    def group(self, key: GroupKey) -> GroupBookings:
        uids = self.grouped.get(key)
        if uids is None:
            return GroupBookings(False)
        live: dict[str, Placement] = {}
        held: set[str] = set()
        for u in uids:
            b = self.bookings[u]
            if b.assumed and not b.confirmed:
                live[u] = b.placement
            else:
                held.add(u)
        return GroupBookings(True, live, frozenset(held), dict(self.lost.get(key, {})))

    def close_group(self, key: GroupKey) -> None:
        """The plan is done or released: its bookings are ordinary bookings from now on."""
        for u in self.grouped.pop(key, ()):
            self.bookings[u] = replace(self.bookings[u], group=None)
        self.lost.pop(key, None)

    def add_foreign(self, node: str, delta: int) -> None:
        if not delta:
            return
        n = max(self.foreign.get(node, 0) + delta, 0)
        self.foreign[node] = n
        if self._snap is not None and node in self._snap.static.index:
            self._snap = set_foreign(self._snap, node, n)

    def on_node(self, node: str) -> Iterable[Booking]:
        self.snapshot()
        return [self.bookings[u] for u in self.by_node.get(node, ()) if u in self.applied]

    def recorded(self) -> dict[str, Placement]:
        """uid -> placement of every applied booking (the state tests compare these)."""
        self.snapshot()  # applied is only known once the snapshot is current
        return {u: b.placement for u, b in self.bookings.items() if u in self.applied}
