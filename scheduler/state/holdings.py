"""What pods hold on one node, and a snapshot with some of them gone: the arithmetic every preempt shares.

A victim holds devices gpupack counts in one of three ways: an applied booking (its placement), whole GPUs
held without a gpupack record (foreign), or devices its DRA claims hold for it alone (claimed). Releasing
victims frees their placements and claimed devices and lowers the node's foreign count by what they held
(never below 0). ClusterState.holds decides who holds what (under its lock); `without` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from binpack import Placement, Snapshot, release, set_foreign


@dataclass(frozen=True, slots=True)
class Hold:
    """What one pod holds on one node."""

    uid: str
    placement: Placement | None  # its applied booking there
    foreign: int  # whole GPUs held without a gpupack record
    priority: int | None  # its priority as the watch saw it (None: not known here)
    claimed: tuple[Placement, ...] = ()  # devices held through DRA claims reserved for this pod alone


@dataclass(frozen=True, slots=True)
class NodeHoldings:
    """One node as the ledger has it: a one-node snapshot with its bookings and foreign GPUs applied."""

    snapshot: Snapshot
    foreign: int


def without(snap: Snapshot, node: str, gone: Iterable[Hold], foreign: int) -> Snapshot:
    """`snap` with what `gone` hold on `node` released; `foreign` is the node's foreign count in `snap`."""
    freed = 0
    for h in gone:
        freed += h.foreign
        for p in (h.placement, *h.claimed):
            if p is not None:
                snap = release(snap, p)
    if freed:
        snap = set_foreign(snap, node, max(foreign - freed, 0))
    return snap


def foreign_of(snap: Snapshot, node: str) -> int:
    """The node's foreign whole GPUs as `snap` has them."""
    with snap.read() as v:
        return int(v.foreign[snap.node_index(node)])
