"""Fast per-node reductions over (R, K) columns, K a multiple of 8 (snapshot.py pads it).

NumPy reduces a short last axis slowly (a `.sum(axis=1)` over 8 columns costs as much as a dozen
element-wise passes), so counts read a row of bools as 64-bit words and popcount them, and sums add
halves of the row together. Results equal `.sum(axis=-1)` / `.any(axis=-1)` exactly.
"""

from __future__ import annotations

import numpy as np


def count(b: np.ndarray) -> np.ndarray:
    """(..., K) bool -> (...) int64: how many are True."""
    words = np.bitwise_count(np.ascontiguousarray(b).view(np.uint64))
    return (words[..., 0] if words.shape[-1] == 1 else words.sum(axis=-1)).astype(np.int64)


def any_(b: np.ndarray) -> np.ndarray:
    """(..., K) bool -> (...) bool: whether any is True."""
    words = np.ascontiguousarray(b).view(np.uint64) != 0
    return words[..., 0] if words.shape[-1] == 1 else words.any(axis=-1)


def total(x: np.ndarray) -> np.ndarray:
    """(..., K) numbers -> (...) their sum, by adding halves (K a multiple of 8)."""
    k = x.shape[-1]
    x = x.reshape(*x.shape[:-1], k // 8, 8)
    x = x[..., :4] + x[..., 4:]
    x = x[..., :2] + x[..., 2:]
    x = x[..., 0] + x[..., 1]
    return x[..., 0] if k == 8 else x.sum(axis=-1)


def take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """a[rows] for integer rows, through np.take (several times faster than fancy indexing)."""
    return np.take(a, rows, axis=0)


def unpack(bits: np.ndarray, k: int) -> np.ndarray:
    """(R,) bit sets -> (R, K) bool."""
    return ((bits[:, None] >> np.arange(k, dtype=np.int64)) & 1).astype(bool)
