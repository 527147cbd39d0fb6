"""DRA's part of ClusterState (a base class of it, under the same lock): the ledger bookings of allocated
ResourceClaims and the node inventories that ResourceSlices replace.

scheduler/dra keeps its own tables (slices, claims, which pod reserves which claim) and guards them with the
state's lock through `ClusterState.atomic()`, but it changes or reads the ledger only through these methods:
a claim's devices are ordinary bookings (keyed `claim:<uid>:<n>` by scheduler/dra, never assumed, no demand,
no group), since the claim's allocation on the API server is the truth, whoever wrote it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from binpack import Node, Placement
from scheduler.state.ledger import Booking, Ledger


class ClaimBookings:
    """Claim bookings and slice-made nodes; ClusterState provides the lock and the ledger."""

    lock: threading.RLock
    ledger: Ledger

    def refresh_node(self, node: Node) -> None:
        """The node's devices changed without a Node event (DRA: its slices did): the ledger takes the new
        inventory where it has the node; a node it does not have (not listed, or its Node unreadable) stays out."""
        with self.lock:
            if node.name in self.ledger.nodes:
                self.ledger.put_node(node)

    def book_claims(self, bookings: Iterable[tuple[str, Placement]], drop: Iterable[str] = ()) -> None:
        """Drop the bookings `drop` (a claim's devices that moved or went), then book each (key, placement),
        replacing a key's old booking. A device someone else holds too is kept unapplied (counted in the
        ledger's conflicts) and applied once freed, so the ledger never double-books."""
        with self.lock:
            for key in drop:
                self.ledger.drop(key)
            for key, p in bookings:
                self.ledger.put(Booking(key, p))

    def unbook_claims(self, keys: Iterable[str]) -> None:
        """Forget these bookings (the claim was deleted): their devices are free."""
        self.book_claims((), drop=keys)

    def applied_placements(self, keys: Iterable[str]) -> list[Placement]:
        """The placements of those of these bookings that the snapshot holds, in the order asked."""
        with self.lock:
            self.ledger.snapshot()  # `applied` is current only with the snapshot
            return [self.ledger.bookings[k].placement for k in keys if k in self.ledger.applied]
