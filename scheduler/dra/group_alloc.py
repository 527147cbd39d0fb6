"""Pod groups in allocate mode: a group's claims are allocated all together or not at all.

A pod group (docs/podgroups.md) is planned and reserved whole: every pending member holds an assumed booking on
its planned node. In allocate mode the first member to bind allocates the claims of every member that holds a
reservation, each on its member's reserved node and, where they fit, on exactly the reserved devices; then only
that member's Binding is posted. The later members find their claims allocated and reserved for them, and only
bind. If any claim of any member cannot be allocated or written, everything written for the group is reverted
(allocate_bind.py), so a group never holds the devices of some members' claims and not the others'.

The members are found in ClusterState alone (the group's live reservations in the ledger and its member
index), so this needs nothing from the groups plugin but its reservations.
"""

from __future__ import annotations

from dataclasses import dataclass

from binpack import MigSlot, Placement, Snapshot
from scheduler.dra.allocate import NodeDevices, block
from scheduler.state.cluster import ClusterState


@dataclass(frozen=True, slots=True)
class Sibling:
    """Another member of the pod's group, reserved and not bound yet."""

    uid: str
    namespace: str
    name: str
    reserved: Placement


def siblings(state: ClusterState, uid: str) -> list[Sibling]:
    """The other members of the pod's group that hold a live reservation (assumed, the Binding not made yet)."""
    with state.atomic():
        own = state.booking(uid)
        if own is None or own.group is None:
            return []
        members = state.group_members(own.group)
        out = []
        for other, p in state.group_bookings(own.group).live.items():
            entry = members.get(other)
            if other == uid or entry is None or entry.node:
                continue
            out.append(Sibling(other, entry.namespace, entry.name, p))
        return out


def devices_of(p: Placement) -> set[tuple[int, MigSlot | None]]:
    return {(g, None) for g in p.gpus} | {(s.gpu, s) for s in p.mig}


def within(snap: Snapshot, nd: NodeDevices, reserved: Placement | None) -> Snapshot | None:
    """The snapshot where only the member's reserved devices are free on its node (so its claims get exactly
    what the group's plan gave it); None when it has no reservation there."""
    if reserved is None or reserved.node != nd.node:
        return None
    mine = devices_of(reserved)
    return block(snap, nd.node, [d for d in nd.inventory.devices.values() if d not in mine])
