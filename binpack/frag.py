"""`frag`: FGD's fragmentation measure, its balance term, and a per-node cache of both.

The measure (Weng et al., USENIX ATC'23): a node's fragmentation is the GPU capacity that the
workload mix's tasks could not use there, weighted by how often each task arrives. score.py scores a
placement by how much that grows; the state after a placement comes from `moved` (O(thresholds x
rows)) rather than a second pass over the GPUs. The state before is the same for every demand until
a bind changes a node, so `current` keeps it per node and recomputes only the nodes that changed.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np

from binpack.mix import Mix
from binpack.snapshot import Static, View


@dataclass(frozen=True, eq=False)
class Group:
    """Mix classes that allow the same GPU models, with their distinct milli thresholds."""

    models: frozenset[str]
    th: np.ndarray  # (U,) distinct milli thresholds
    th16: np.ndarray  # (U, 1, 1) int16, the same, to compare with (K, R) free milli
    ui: np.ndarray  # (Tg,) each class's threshold index
    count: np.ndarray  # (Tg,) int16 GPUs per task (the dtype of Stats.cnt: compares stay int16)
    cpu: np.ndarray  # (Tg,)
    mem: np.ndarray  # (Tg,)
    prob: np.ndarray  # (Tg,)


_GROUPS: weakref.WeakKeyDictionary[Mix, tuple[Group, ...]] = weakref.WeakKeyDictionary()


def groups(mix: Mix) -> tuple[Group, ...]:
    hit = _GROUPS.get(mix)
    if hit is None:
        count, milli, tcpu, tmem = mix.arrays()
        out = []
        for models in dict.fromkeys(c.models for c in mix.classes):
            idx = np.asarray([t for t, c in enumerate(mix.classes) if c.models == models])
            th, ui = np.unique(milli[idx], return_inverse=True)
            out.append(Group(models, th, th.astype(np.int16)[:, None, None], ui, count[idx].astype(np.int16),
                             tcpu[idx], tmem[idx], mix.prob[idx]))
        hit = _GROUPS[mix] = tuple(out)
    return hit


@dataclass(frozen=True, eq=False)
class Stats:
    """What frag needs of free milli x, per row: the total, and per mix group and threshold u the
    usable GPUs (x >= th_u, of an allowed model) and the milli on them. Small integers throughout
    (at most 16 GPUs x 1000 milli): exact, and small temporaries."""

    total: np.ndarray  # (R,) int32
    cnt: tuple[np.ndarray, ...]  # per group (U, R) int16
    on: tuple[np.ndarray, ...]  # per group (U, R) int32


def stats(v: View, rows: np.ndarray, xi: np.ndarray, mix: Mix) -> Stats:
    """From xi, free milli transposed to (K, R) int16, so every sum runs along long contiguous rows."""
    cnts, ons = [], []
    for g in groups(mix):
        xa = xi * v.s.model_ok(g.models).take(rows, axis=0).T if g.models else xi
        usable = xa >= g.th16  # (U, K, R): every threshold in one pass
        cnts.append(np.add.reduce(usable, axis=1, dtype=np.int16))
        usable = usable * xa
        ons.append(np.add.reduce(usable, axis=1, dtype=np.int32))
    return Stats(np.add.reduce(xi, axis=0, dtype=np.int32), tuple(cnts), tuple(ons))


def lost(st: Stats, cpu: np.ndarray, hmem: np.ndarray, mix: Mix, balance: float = 0.0) -> np.ndarray:
    """Expected unusable milli per row: total - sum_t p_t * host_t * (milli on usable GPUs), plus
    `balance` x the milli stranded for want of CPU or memory."""
    kept = np.zeros(len(st.total))
    for g, cnt, on in zip(groups(mix), st.cnt, st.on, strict=True):
        host = cnt.take(g.ui, axis=0) >= g.count[:, None]  # in place, int16: ~half the time
        host &= cpu >= g.cpu[:, None]
        host &= hmem >= g.mem[:, None]
        x = on.take(g.ui, axis=0)
        x *= host
        kept += np.dot(g.prob, x)
    out = st.total * float(mix.prob.sum()) - kept
    return out + balance * stranded(st.total, cpu, hmem, mix) if balance else out


_RATIOS: weakref.WeakKeyDictionary[Mix, tuple[float, float]] = weakref.WeakKeyDictionary()


def stranded(total: np.ndarray, cpu: np.ndarray, hmem: np.ndarray, mix: Mix) -> np.ndarray:
    """Per row, free GPU milli beyond what the free CPU (host memory) can feed at the mix's CPU
    (memory) per GPU milli: GPU that the mix's tasks will find without CPU or memory to go with it."""
    ratios = _RATIOS.get(mix)
    if ratios is None:
        count, milli, tcpu, tmem = mix.arrays()
        vol = float((mix.prob * count * milli).sum())
        ratios = _RATIOS[mix] = ((float((mix.prob * tcpu).sum()) / vol, float((mix.prob * tmem).sum()) / vol)
                                 if vol > 0 else (0.0, 0.0))  # no GPU task in the mix: nothing to feed
    rc, rm = ratios
    short = np.maximum(total - cpu / rc, 0.0) if rc > 0 else np.zeros(len(total))
    return np.maximum(short, total - hmem / rm) if rm > 0 else short


def moved(st: Stats, mix: Mix, old: np.ndarray | int, new: np.ndarray | int, gone: np.ndarray | int,
          allowed: list[np.ndarray | int | None]) -> Stats:
    """The stats after some GPUs of each row go from `old` to `new` free milli: `gone` (R,) milli
    leave the total; allowed[g] (R,) of the moved GPUs count for mix group g (None: one each).
    Exact, and O(U x R) instead of a second pass over (K, R)."""
    cnts, ons = [], []
    was, now = np.asarray(old, np.int32), np.asarray(new, np.int32)
    for g, cnt, on, n in zip(groups(mix), st.cnt, st.on, allowed, strict=True):
        ge_was, ge_now = was >= g.th[:, None], now >= g.th[:, None]
        d_cnt = ge_now.astype(np.int16) - ge_was
        d_on = now * ge_now - was * ge_was
        if n is not None:
            d_cnt, d_on = n * d_cnt, n * d_on
        cnts.append(cnt + d_cnt)
        ons.append(on + d_on)
    return Stats(st.total - gone, tuple(cnts), tuple(ons))


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
class _Current:
    """Per (mix, cluster): every node's stats and loss (per balance weight) as of the inputs kept
    beside them. A row is stale when its free milli, CPU or memory differ from the kept copy."""

    static: Static
    milli: np.ndarray  # (N, K) int16
    cpu: np.ndarray  # (N,)
    hmem: np.ndarray  # (N,)
    stats: Stats  # over all N rows
    lost: dict[float, np.ndarray]  # balance weight -> (N,)


_CURRENT: weakref.WeakKeyDictionary[Mix, dict[int, _Current]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # one writer per cache: the scheduler's threads share mixes and clusters


def current(v: View, rows: np.ndarray, mix: Mix, balance: float) -> tuple[Stats, np.ndarray]:
    """The stats of `rows` in v, and their loss with that balance weight, as `stats` + `lost` give
    them. Kept per node between calls: a bind changes one node, so after the first call for a mix
    a call recomputes only the nodes that changed (comparing the columns costs ~3 passes over N)."""
    with _LOCK:
        s = v.s
        per = _CURRENT.setdefault(mix, {})
        hit = per.get(id(s))
        if hit is None or hit.static is not s:
            every = np.arange(len(s.names))
            milli = np.array(v.milli)
            full = stats(v, every, np.ascontiguousarray(milli.T), mix)
            hit = per[id(s)] = _Current(s, milli, np.array(v.cpu_free), np.array(v.hmem_free), full, {})
        else:
            _refresh(v, hit, mix)
        out = hit.lost.get(balance)
        if out is None:
            out = hit.lost[balance] = lost(hit.stats, hit.cpu, hit.hmem, mix, balance)
        st = hit.stats
        return (Stats(st.total.take(rows), tuple(c.take(rows, axis=1) for c in st.cnt),
                      tuple(o.take(rows, axis=1) for o in st.on)), out.take(rows))


def _refresh(v: View, hit: _Current, mix: Mix) -> None:
    """Recompute the rows whose inputs changed since the kept copy, in place."""
    # a row of int16 slots as 64-bit words (K is a multiple of 8, snapshot.py); OR the words
    # together: NumPy's any() along a short axis costs more than the comparison itself
    now, kept = v.milli.view(np.uint64), hit.milli.view(np.uint64)
    stale = (v.cpu_free != hit.cpu) | (v.hmem_free != hit.hmem)
    for w in range(now.shape[1]):
        stale |= now[:, w] != kept[:, w]
    rows = stale.nonzero()[0]
    if not len(rows):
        return
    hit.milli[rows], hit.cpu[rows], hit.hmem[rows] = v.milli[rows], v.cpu_free[rows], v.hmem_free[rows]
    new = stats(v, rows, np.ascontiguousarray(hit.milli[rows].T), mix)
    hit.stats.total[rows] = new.total
    for c, o, nc, no in zip(hit.stats.cnt, hit.stats.on, new.cnt, new.on, strict=True):
        c[:, rows], o[:, rows] = nc, no
    for b, out in hit.lost.items():
        out[rows] = lost(new, hit.cpu[rows], hit.hmem[rows], mix, b)
