"""`frag`: FGD's fragmentation measure, its balance term, and a per-node memory of both (in LayoutMemo).

The measure (Weng et al., USENIX ATC'23): a node's fragmentation is the GPU capacity that the
workload mix's tasks could not use there, weighted by how often each task arrives. score.py scores a
placement by how much that grows; the state after a placement comes from `moved` (O(thresholds x
rows)) rather than a second pass over the GPUs. The state before is the same for every demand until
a bind changes a node, so `current` keeps it per node and recomputes only the nodes that changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from binpack.mix import Mix
from binpack.snapshot import View


@dataclass(frozen=True, eq=False)
class Groups:
    """The mix's classes, grouped by the GPU models they allow. Every group's distinct milli
    thresholds are stacked on one axis (U, the sum over groups), so that `stats`, `lost` and `moved`
    make one pass however many groups the mix has."""

    models: tuple[frozenset[str], ...]  # per group (empty: any model)
    th: np.ndarray  # (U,) int32 distinct milli thresholds, group after group
    th16: np.ndarray  # (U, 1, 1) int16, the same, to compare with (K, R) free milli
    gu: np.ndarray  # (U,) each threshold's group
    ui: np.ndarray  # (T,) each class's threshold row
    count: np.ndarray  # (T,) int16 GPUs per task (the dtype of Stats.cnt: compares stay int16)
    cpu: np.ndarray  # (T,)
    mem: np.ndarray  # (T,)
    prob: np.ndarray  # (T,) in units of 2**-30, integer-valued floats (see `lost`)
    prob_sum: float  # their sum, in probability

    @property
    def restricted(self) -> bool:
        return any(self.models)

    def per_threshold(self, per_group: np.ndarray) -> np.ndarray:
        """(G, ...) -> (U, ...): each threshold row gets its group's row."""
        return per_group.take(self.gu, axis=0)


_UNIT = 2.0**-30  # probabilities as integers of this unit: sums of products with milli stay exact


def groups(mix: Mix) -> Groups:
    """The mix's classes grouped by allowed models (Mix.tables keeps them)."""
    hit = mix.tables.groups
    if hit is None:
        count, milli, tcpu, tmem = mix.arrays()
        models = tuple(dict.fromkeys(c.models for c in mix.classes))
        ths: list[np.ndarray] = []
        gus: list[np.ndarray] = []
        uis: list[np.ndarray] = []
        order: list[int] = []
        base = 0  # the group's first threshold row
        for gi, m in enumerate(models):
            idx = [t for t, c in enumerate(mix.classes) if c.models == m]
            th, ui = np.unique(milli[idx], return_inverse=True)
            ths.append(th)
            gus.append(np.full(len(th), gi))
            uis.append(base + ui)
            base += len(th)
            order += idx
        th_all = np.concatenate(ths).astype(np.int32) if ths else np.zeros(0, np.int32)
        at = np.asarray(order, np.int64)
        q = np.round(mix.prob.take(at) / _UNIT)
        hit = mix.tables.groups = Groups(
            models, th_all, th_all.astype(np.int16)[:, None, None],
            np.concatenate(gus) if gus else np.zeros(0, np.int64),
            np.concatenate(uis) if uis else np.zeros(0, np.int64),
            count.take(at).astype(np.int16), tcpu.take(at), tmem.take(at), q, float(q.sum()) * _UNIT)
    return hit


@dataclass(frozen=True, eq=False)
class Stats:
    """What frag needs of free milli x, per row: the total, and per threshold u (of the stacked
    groups) the usable GPUs (x >= th_u, of a model u's group allows) and the milli on them. Small
    integers throughout (at most 16 GPUs x 1000 milli): exact, and small temporaries."""

    total: np.ndarray  # (R,) int32
    cnt: np.ndarray  # (U, R) int16
    on: np.ndarray  # (U, R) int32


def stats(v: View, rows: np.ndarray, xi: np.ndarray, mix: Mix) -> Stats:
    """From xi, free milli transposed to (K, R) int16, so every sum runs along long contiguous rows.
    Every threshold of every group in one pass over (U, K, R)."""
    g = groups(mix)
    xa = xi
    if g.restricted:  # zero the GPUs of models a group does not allow
        xa = xi * g.per_threshold(np.stack([v.s.model_ok(m).take(rows, axis=0).T if m else np.ones(xi.shape, bool)
                                            for m in g.models]))
    usable = xa >= g.th16  # (U, K, R)
    cnt = np.add.reduce(usable, axis=1, dtype=np.int16)
    usable = usable * xa
    return Stats(np.add.reduce(xi, axis=0, dtype=np.int32), cnt, np.add.reduce(usable, axis=1, dtype=np.int32))


def lost(st: Stats, cpu: np.ndarray, hmem: np.ndarray, mix: Mix, balance: float = 0.0) -> np.ndarray:
    """Expected unusable milli per row: total - sum_t p_t * host_t * (milli on usable GPUs), plus
    `balance` x the milli stranded for want of CPU or memory."""
    g = groups(mix)
    host = st.cnt.take(g.ui, axis=0) >= g.count[:, None]  # in place, int16: ~half the time
    host &= cpu >= g.cpu[:, None]
    host &= hmem >= g.mem[:, None]
    x = st.on.take(g.ui, axis=0)
    x *= host
    # integers under 2**53 (2**30 x 16,000 milli x classes): exact in any order, so a row's loss is
    # the same bits whether it is computed alone (a refresh) or among thousands (BLAS blocks them)
    out = st.total * g.prob_sum - np.dot(g.prob, x) * _UNIT
    return out + balance * stranded(st.total, cpu, hmem, mix) if balance else out


def stranded(total: np.ndarray, cpu: np.ndarray, hmem: np.ndarray, mix: Mix) -> np.ndarray:
    """Per row, free GPU milli beyond what the free CPU (host memory) can feed at the mix's CPU
    (memory) per GPU milli: GPU that the mix's tasks will find without CPU or memory to go with it."""
    ratios = mix.tables.ratios
    if ratios is None:
        count, milli, tcpu, tmem = mix.arrays()
        vol = float((mix.prob * count * milli).sum())
        ratios = mix.tables.ratios = ((float((mix.prob * tcpu).sum()) / vol, float((mix.prob * tmem).sum()) / vol)
                                 if vol > 0 else (0.0, 0.0))  # no GPU task in the mix: nothing to feed
    rc, rm = ratios
    short = np.maximum(total - cpu / rc, 0.0) if rc > 0 else np.zeros(len(total))
    return np.maximum(short, total - hmem / rm) if rm > 0 else short


def moved(st: Stats, mix: Mix, old: np.ndarray | int, new: np.ndarray | int, gone: np.ndarray | int,
          allowed: np.ndarray | int | None) -> Stats:
    """The stats after some GPUs of each row go from `old` to `new` free milli: `gone` (R,) milli
    leave the total; allowed (U, R) or (U, 1): how many of the moved GPUs count at each threshold
    row, i.e. for its group (None: one each). Exact, and O(U x R) instead of a second pass over (K, R)."""
    th = groups(mix).th[:, None]
    was, now = np.asarray(old, np.int32), np.asarray(new, np.int32)
    ge_was, ge_now = was >= th, now >= th
    d_cnt = ge_now.astype(np.int16) - ge_was
    d_on = now * ge_now - was * ge_was
    if allowed is not None:
        d_cnt, d_on = allowed * d_cnt, allowed * d_on
    return Stats(st.total - gone, st.cnt + d_cnt, st.on + d_on)


def frag(v: View, rows: np.ndarray, x: np.ndarray, cpu: np.ndarray, hmem: np.ndarray, mix: Mix) -> np.ndarray:
    """Expected unusable GPU milli per row given free milli x (R,K), free CPU and memory (R,).

    For each task class t of the mix (probability p_t): a GPU is usable when it has at least the
    class's milli free (and is of a model the class allows); the node can host the class when it has
    enough usable GPUs, CPU and memory. Lost = the free milli on unusable GPUs if it can, all of the
    node's free milli if it cannot; frag = sum_t p_t * lost_t, computed per distinct threshold as
    lost_t = total - host_t * (free milli on usable GPUs). score.py gets the state after a placement
    from `moved` instead of a second `frag`: change the three together (test_binpack_score checks)."""
    if len(mix) == 0:
        return np.zeros(len(rows))
    return lost(stats(v, rows, x.T.astype(np.int16, order="C"), mix), cpu, hmem, mix)


@dataclass(eq=False)
class Current:
    """Per (mix, cluster layout; kept in LayoutMemo.of_mix): every node's stats and loss (per balance
    weight) as of an epoch of the cluster's columns (persist.Columns: which rows changed since is
    logged there)."""

    epoch: int
    stats: Stats  # over all N rows
    lost: dict[float, np.ndarray]  # balance weight -> (N,)


def current(v: View, rows: np.ndarray | None, mix: Mix, balance: float) -> tuple[Stats, np.ndarray]:
    """The stats of `rows` in v (None: every row), and their loss with that balance weight, as
    `stats` + `lost` give them. Kept per node between calls: a bind changes one node, so after the
    first call for a mix a call recomputes only the nodes that changed since (v.changed_since). For
    every row the kept arrays themselves come back, read-only: a refresh replaces them rather than
    writing into them, so a caller on another thread keeps a stable copy."""
    s = v.s
    mem = s.memo.of_mix(mix)
    with mem.current_lock:  # one writer: the scheduler's threads share mixes and clusters
        hit = mem.current
        stale = v.changed_since(hit.epoch) if hit is not None else None
        if hit is None or stale is None:
            every = np.arange(len(s.names))
            full = _frozen(stats(v, every, np.ascontiguousarray(v.milli.T), mix))
            hit = mem.current = Current(v.epoch or 0, full, {})
        elif len(stale):
            _refresh(v, hit, mix, stale)
        out = hit.lost.get(balance)
        if out is None:
            out = hit.lost[balance] = lost(hit.stats, v.cpu_free, v.hmem_free, mix, balance)
            out.flags.writeable = False
        st = hit.stats
    if rows is None:
        return st, out
    return Stats(st.total.take(rows), st.cnt.take(rows, axis=1), st.on.take(rows, axis=1)), out.take(rows)


def _frozen(st: Stats) -> Stats:
    for a in (st.total, st.cnt, st.on):
        a.flags.writeable = False
    return st


def _refresh(v: View, hit: Current, mix: Mix, rows: np.ndarray) -> None:
    """Recompute `rows` into copies of the kept arrays (~0.2 MB at 5,000 nodes, a few us), which
    then replace them."""
    new = stats(v, rows, np.ascontiguousarray(v.milli.take(rows, axis=0).T), mix)
    total, cnt, on = hit.stats.total.copy(), hit.stats.cnt.copy(), hit.stats.on.copy()
    total[rows], cnt[:, rows], on[:, rows] = new.total, new.cnt, new.on
    hit.stats = _frozen(Stats(total, cnt, on))
    cpu, hmem = v.cpu_free.take(rows), v.hmem_free.take(rows)
    for b, was in list(hit.lost.items()):
        out = was.copy()
        out[rows] = lost(new, cpu, hmem, mix, b)
        out.flags.writeable = False
        hit.lost[b] = out
    hit.epoch = v.epoch or 0
