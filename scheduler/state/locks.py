"""The lock order, in one place: every lock that guards cluster state is made here with its rank.

A thread takes locks in rising rank only: pod groups' planning (PLANNING), then a bind's node lock (NODE),
then the cluster state (STATE). Re-taking a lock the thread already holds is allowed (the state lock is
re-entrant). In production `ordered` hands back the plain lock (no cost on the verbs' path); the tests
turn checking on (`check_order`, tests/conftest.py), and then a lock taken out of order raises
LockOrderError at once instead of deadlocking one day under load.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Protocol, TypeVar

PLANNING = 10  # pod groups: one planning round at a time (scheduler/groups/reserve.py)
NODE = 20  # the bind transaction's per-node lock (scheduler/state/binder.py, scheduler/dra)
STATE = 30  # ClusterState: nodes, pods, the ledger (scheduler/state/cluster.py)
NAMES = {PLANNING: "planning", NODE: "node", STATE: "state"}


class LockOrderError(AssertionError):
    """A lock taken while a lock of the same or a higher rank is held (a deadlock waiting to happen)."""


class Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> bool: ...

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None: ...


L = TypeVar("L", bound=Lock)
_checking = False
_held = threading.local()  # per thread: the (rank, lock) pairs it holds, in the order taken


def check_order(on: bool = True) -> None:
    """Check the order of locks made from now on (tests)."""
    global _checking
    _checking = on


class _Checked:
    """A lock that refuses to be taken out of rank order."""

    def __init__(self, rank: int, lock: Lock) -> None:
        self.rank = rank
        self._lock = lock

    def _stack(self) -> list[tuple[int, object]]:
        stack: list[tuple[int, object]] | None = getattr(_held, "stack", None)
        if stack is None:
            stack = _held.stack = []
        return stack

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        stack = self._stack()
        if not any(lk is self for _, lk in stack):
            worst = max((r for r, _ in stack), default=0)
            if worst >= self.rank:
                raise LockOrderError(f"lock order: {NAMES.get(self.rank, self.rank)} lock taken while holding the "
                                     f"{NAMES.get(worst, worst)} lock (order: planning, node, state)")
        got = self._lock.acquire(blocking, timeout)
        if got:
            stack.append((self.rank, self))
        return got

    def release(self) -> None:
        stack = self._stack()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][1] is self:
                del stack[i]
                break
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def ordered(rank: int, lock: L) -> L:
    """`lock` with its place in the order; checked when `check_order` is on, else the lock itself."""
    if not _checking:
        return lock
    return _Checked(rank, lock)  # type: ignore[return-value]  # same interface, checked
