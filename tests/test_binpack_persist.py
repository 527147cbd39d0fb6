"""persist.Columns: versions by rerooting, and the log of changed rows that per-row caches read."""

from __future__ import annotations

import numpy as np

from binpack.persist import LOG, Columns


def test_changed_since_names_the_rows_a_derive_or_a_reroot_touched() -> None:
    cols = Columns({"a": np.zeros(6, np.int64), "b": np.zeros((6, 2), np.int64)})
    v0 = cols.root
    start = cols.epoch
    v1 = cols.derive(v0, [("a", 2, 5), ("b", 4, np.array([1, 1]))])
    assert cols.changed_since(start).tolist() == [2, 4]
    mid = cols.epoch
    v2 = cols.derive(v1, [("a", 1, 7)])
    assert cols.changed_since(mid).tolist() == [1] and cols.changed_since(start).tolist() == [1, 2, 4]
    assert cols.changed_since(cols.epoch).tolist() == []
    now = cols.epoch
    with cols.read(v0) as arrays:  # reading the first version again puts its values back
        assert arrays["a"].tolist() == [0] * 6
        assert cols.changed_since(now).tolist() == [1, 2, 4]
    with cols.read(v2) as arrays:
        assert arrays["a"].tolist() == [0, 7, 5, 0, 0, 0]


def test_changed_since_is_unknown_past_the_log() -> None:
    cols = Columns({"a": np.zeros(3, np.int64)})
    v, start = cols.root, cols.epoch
    for i in range(LOG + 1):
        v = cols.derive(v, [("a", i % 3, i + 1)])
    assert cols.changed_since(start) is None  # too old: a cache must recompute everything
    assert cols.changed_since(cols.epoch - 1) is not None
    assert cols.changed_since(cols.epoch + 5) is None  # not an epoch of these columns
