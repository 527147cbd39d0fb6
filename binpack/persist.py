"""Persistent NumPy columns: many immutable versions of one set of arrays, O(changed rows) each.

Baker's rerooting trick: the newest-read version owns the arrays; every other version keeps the
small diff that turns its neighbour's data into its own. Deriving a version and reading an old one
both cost the size of the diffs on the way, never a copy of the cluster. A lock makes reroot plus
read atomic, so threads never see a half-applied diff.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

# (column name, row index, that row's values)
Diff = list[tuple[str, int, Any]]


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
            return new


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v
