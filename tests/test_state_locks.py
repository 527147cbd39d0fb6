"""The lock order (scheduler/state/locks.py): planning, then a bind's node lock, then the state. With checking
on (tests/conftest.py turns it on for the whole suite) a lock taken out of order raises at once; re-taking the
re-entrant state lock is fine; without checking the plain lock is handed back."""

from __future__ import annotations

import threading

import pytest

from scheduler.state import locks
from scheduler.state.cluster import ClusterState


def test_locks_taken_in_rank_order_pass_and_out_of_order_raise() -> None:
    planning = locks.ordered(locks.PLANNING, threading.Lock())
    node = locks.ordered(locks.NODE, threading.Lock())
    state = ClusterState()
    with planning, node, state.atomic(), state.atomic():  # in order; the state lock again (re-entrant)
        assert state.holds("n0", []) == ([], set())
    with state.atomic(), pytest.raises(locks.LockOrderError, match="node lock taken while holding the state"):
        node.acquire()
    with node, pytest.raises(locks.LockOrderError, match="planning lock taken while holding the node"):
        planning.acquire()
    other = locks.ordered(locks.NODE, threading.Lock())
    with node, pytest.raises(locks.LockOrderError):  # two node locks at once: no order between them
        other.acquire()
    with planning:  # nothing is left held after the refusals
        assert planning.acquire(blocking=False) is False


def test_unchecked_locks_are_the_plain_locks() -> None:
    lock = threading.Lock()
    locks.check_order(False)
    try:
        assert locks.ordered(locks.NODE, lock) is lock
    finally:
        locks.check_order(True)
    assert locks.ordered(locks.NODE, lock) is not lock
