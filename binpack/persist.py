"""Persistent NumPy columns: many immutable versions of one set of arrays, O(changed rows) each.

Baker's rerooting trick: the newest-read version owns the arrays; every other version keeps the
small diff that turns its neighbour's data into its own. Deriving a version and reading an old one
both cost the size of the diffs on the way, never a copy of the cluster. A lock makes reroot plus
read atomic, so threads never see a half-applied diff.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

# (column name, row index, that row's values)
Diff = list[tuple[str, int, Any]]
LOG = 256  # changes remembered for changed_since; an older epoch reads as "unknown"


class _Version:
    __slots__ = ("diff", "link")

    def __init__(self) -> None:
        self.link: _Version | None = None  # None: this version owns the arrays
        self.diff: Diff = []


class Columns:
    """The shared arrays and the version that currently owns them."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = {k: np.ascontiguousarray(v).copy() for k, v in arrays.items()}
        self._views = {k: _readonly(v) for k, v in self._arrays.items()}
        self.lock = threading.RLock()
        self.root = _Version()
        self._head = self.root
        self.epoch = 0
        self._log: deque[tuple[int, list[int]]] = deque(maxlen=LOG)  # (epoch, rows changed)

    def _logged(self, diff: Diff) -> None:
        if diff:
            self.epoch += 1
            self._log.append((self.epoch, [row for _, row, _ in diff]))

    def changed_since(self, epoch: int) -> np.ndarray | None:
        """Sorted rows whose values changed after `epoch` (call under the lock, e.g. inside read());
        None when the log no longer reaches back that far."""
        if epoch == self.epoch:
            return np.zeros(0, np.int64)
        if epoch > self.epoch or not self._log or self._log[0][0] > epoch + 1:
            return None
        rows: set[int] = set()
        for e, changed in reversed(self._log):
            if e <= epoch:
                break
            rows.update(changed)
        return np.fromiter(sorted(rows), np.int64, len(rows))

    def _reroot(self, v: _Version) -> None:
        path: list[_Version] = []
        x = v
        while x.link is not None:
            path.append(x)
            x = x.link
        for node in reversed(path):
            parent = node.link
            assert parent is not None
            inverse: Diff = []
            for name, row, values in node.diff:
                arr = self._arrays[name]
                inverse.append((name, row, arr[row].copy()))
                arr[row] = values
            parent.link, parent.diff = node, inverse
            node.link, node.diff = None, []
            self._logged(inverse)
        self._head = v

    @contextmanager
    def read(self, v: _Version) -> Iterator[Mapping[str, np.ndarray]]:
        """Read-only views of version v's arrays, valid inside the block."""
        with self.lock:
            self._reroot(v)
            yield self._views

    def derive(self, base: _Version, changes: Diff) -> _Version:
        """A new version: base with the given rows replaced."""
        with self.lock:
            self._reroot(base)
            new = _Version()
            inverse: Diff = []
            for name, row, values in changes:
                arr = self._arrays[name]
                inverse.append((name, row, arr[row].copy()))
                arr[row] = values
            base.link, base.diff = new, inverse
            self._head = new
            self._logged(inverse)
            return new


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v
