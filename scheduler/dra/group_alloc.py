"""Pod groups in allocate mode: a group's claims are allocated all together or not at all.

A pod group (docs/podgroups.md) is planned and reserved whole: every pending member holds an assumed booking on
its planned node. In allocate mode the first member to bind allocates the claims of every member that holds a
reservation, each on its member's reserved node and, where they fit, on exactly the reserved devices; then only
that member's Binding is posted. The later members find their claims allocated and reserved for them, and only
bind. If any claim of any member cannot be allocated or written, everything written for the group is reverted
(allocate_bind.py), so a group never holds the devices of some members' claims and not the others'.

The members are found in ClusterState alone (the pods of the namespace whose request names the group and whose
reservation is live), so this needs nothing from the groups module but its reservations.
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
    """The other members of the pod's group that hold a live reservation (assumed, not bound), by name."""
    with state.lock:
        req = state.request_for(uid)
        if req is None or not req.group:
            return []
        out = []
        for other, b in sorted(state.assumed().items()):
            if other == uid or b.confirmed or b.unsettled:
                continue
            r = state.request_for(other)
            entry = state.pod(other)
            if r is None or r.group != req.group or r.namespace != req.namespace or (entry and entry.node):
                continue
            out.append(Sibling(other, r.namespace, r.name, b.placement))
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
