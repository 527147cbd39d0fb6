"""`score`: fragmentation-aware scores for the nodes where a demand fits.

The FGD measure (frag.py; Weng et al., USENIX ATC'23): a node's fragmentation is the GPU capacity that the
workload mix's tasks could not use there, weighted by how often each task arrives; a placement is
scored by how much it increases that. Multi-GPU demands add topology quality (the best link set
left on the node relative to the board's best); MIG demands pack partly used GPUs first.
Returned as floats (higher is better) and as integers 0..10 for kube-scheduler.

Three terms beyond FGD, in milli of GPU and added to the growth (README, packing quality):
- balance: GPU milli a node can no longer feed with CPU or host memory, at the mix's CPU (memory)
  per GPU milli. FGD only asks whether one task still fits, so it lets CPU-heavy pods drain a
  GPU-dense node's CPU and strand its GPUs; this keeps each node's CPU in step with its GPUs.
- contention: GPU milli taken from a model that restricted pods need, weighted by that model's
  share of restricted demand over its share of the free capacity, so pods that may run anywhere
  leave scarce models to the pods that may not. Restricted: by gpu-model selectors, or by shape (a
  multi-GPU class that only a small part of the cluster's nodes are big enough for, e.g. 8 GPUs
  with 120 cores).
- pairing: a share that leaves its GPU with a gap no pattern of the mix's pairing plan passes
  through (plan.py: the configuration LP of the mix's share sizes) is charged that gap, x10: such a
  gap is stranded whatever arrives next, while FGD's measure still counts it usable by small shares.
Pods asking for no GPU are scored too: their CPU and memory strand GPUs like anyone's.

The policy (ScorePolicy, ablations in `gpupack bench packing`): fragmentation growth is bucketed
coarsely (FGD's sigmoid integer score, with a wider scale) so that near-equal placements tie; ties
go to the earliest node in the snapshot's order (optionally first to a node already in use). That consolidation
is what makes FGD strong; exact float growth alone packs worse (see README, packing quality).
The integer answer keeps the best node alone at 10, so kube-scheduler (which breaks ties at random)
picks exactly the node the float score prefers.

A node's value depends only on its own columns (and the contention vector), so each demand's values
are remembered per node and a later call redoes only the nodes changed since (`_Memo`; the rows come
from persist.Columns' log); `forget()` drops them.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from binpack import rows as fast
from binpack.catalog import FULL_MILLI
from binpack.fit import FitResult, mig_counts, share_gpus
from binpack.frag import Groups, current, groups, lost, moved
from binpack.mix import Mix
from binpack.plan import planned_gaps
from binpack.snapshot import Static, View
from binpack.tables import cliques, per_board
from binpack.topology import best_set, set_score
from binpack.types import Demand, DemandKind, Topology

MAX_SCORE = 10


@dataclass(frozen=True, slots=True)
class ScorePolicy:
    """How growth of fragmentation becomes a node score.

    bucket_milli: the sigmoid scale of FGD's integer score (FGD uses 1000); 0 scores the exact float
    growth. prefer_used: among equal buckets, a node already hosting work before an empty one.
    balance, contention, pairing: weights of the terms beyond FGD (module docstring); 0 turns one off."""

    bucket_milli: float = 2000.0
    prefer_used: bool = False
    balance: float = 1.0
    contention: float = 1.0
    pairing: float = 10.0

    def __post_init__(self) -> None:
        for name in ("bucket_milli", "balance", "contention", "pairing"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


DEFAULT_POLICY = ScorePolicy()


@dataclass(frozen=True, eq=False)
class Scores:
    """Per node: a float (higher is better, -inf where the demand does not fit) and an int 0..10."""

    value: np.ndarray
    integer: np.ndarray
    choice: np.ndarray  # (N,) the share's chosen GPU per node (-1 when not a share)


def score(fitted: FitResult, mix: Mix, view: View | None = None, policy: ScorePolicy = DEFAULT_POLICY) -> Scores:
    """Scores for the nodes `fitted` says fit, against the workload mix."""
    if view is None:
        with fitted.snapshot.read() as v:
            return _score(fitted, mix, v, policy)
    return _score(fitted, mix, view, policy)


def _score(fitted: FitResult, mix: Mix, v: View, policy: ScorePolicy = DEFAULT_POLICY) -> Scores:
    d = fitted.demand
    n = len(fitted.fits)
    rows = fitted.fits.nonzero()[0]
    if len(rows) == 0 or (d.kind is DemandKind.NONE and not len(mix)):
        ints = np.where(fitted.fits, MAX_SCORE // 2, 0).astype(np.int64)
        return Scores(np.where(fitted.fits, 0.0, -np.inf), ints, np.full(n, -1, np.int64))
    if d.kind is DemandKind.MIG:
        mig = np.zeros(n)
        mig[rows] = _mig_value(v, fitted, rows)
        return _scores(fitted.fits, rows, mig, np.full(n, -1, np.int64))
    # the one term that is not per node: refreshed every CONTENTION_REFRESH calls, read once here
    con = (contention(v, mix) if len(mix) and policy.contention and (mix.restricted or mix.shaped)
           and d.kind is not DemandKind.NONE else None)
    key = (id(v.s), d, policy)
    with _MEMO_LOCK:
        per = _MEMO.setdefault(mix, OrderedDict())
        memo = per.get(key)
        stale = None
        if memo is not None and memo.static is v.s and (memo.con is con or (
                memo.con is not None and con is not None and np.array_equal(memo.con, con))):
            stale = v.changed_since(memo.epoch)
        if memo is None or stale is None:
            at = None if 2 * len(rows) >= n else rows  # the rows worked on (None: every row)
            vals, choice = _values(fitted, mix, v, policy, rows, at, con)
            if at is None:
                full, picked = np.where(fitted.fits, vals, -np.inf), np.where(fitted.fits, choice, -1)
            else:
                full, picked = np.full(n, -np.inf), np.full(n, -1, np.int64)
                full[rows], picked[rows] = vals, choice
            memo = _Memo(v.s, v.epoch or 0, con, fitted.fits.copy(), full, picked)
            if v.epoch is not None:
                per[key] = memo
                while len(per) > MEMO_SIZE:
                    per.popitem(last=False)
        else:
            # a node's values depend only on its own columns: redo the nodes that changed (and any
            # whose verdict changed), keep the rest; bit for bit what a full pass gives (see frag.lost)
            moved_rows = fitted.fits != memo.fits
            moved_rows[stale] = True
            stale = np.flatnonzero(moved_rows)
            if len(stale):
                redo = stale[fitted.fits.take(stale)]
                memo.vals[stale], memo.choice[stale] = -np.inf, -1
                if len(redo):
                    memo.vals[redo], memo.choice[redo] = _values(fitted, mix, v, policy, redo, redo, con)
                memo.fits = fitted.fits.copy()
            memo.epoch, memo.con = v.epoch or 0, con  # con: equal values, and `is` holds next time
            per.move_to_end(key)
        return _scores(fitted.fits, rows, memo.vals, memo.choice.copy())


@dataclass(eq=False)
class _Memo:
    """One demand's values per node (-inf where it does not fit) and chosen GPUs, as of an epoch of
    the cluster's columns and the contention they were computed with."""

    static: Static
    epoch: int
    con: np.ndarray | None
    fits: np.ndarray  # (N,) bool
    vals: np.ndarray  # (N,)
    choice: np.ndarray  # (N,) int64


# per mix, per (cluster, demand, policy), least recently used first: kube-scheduler asks again for
# the same demand after every bind (a Deployment's or a Job's pods), and only the bound node changed
_MEMO: weakref.WeakKeyDictionary[Mix, OrderedDict[tuple[int, Demand, ScorePolicy], _Memo]] = \
    weakref.WeakKeyDictionary()
_MEMO_LOCK = threading.Lock()
MEMO_SIZE = 32


def forget() -> None:
    """Drop every remembered value: the next score of each demand is a full pass (benchmarks, tests)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def _values(fitted: FitResult, mix: Mix, v: View, policy: ScorePolicy, rows: np.ndarray, at: np.ndarray | None,
            con: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The float value and chosen GPU (-1: not a share) of rows `at` (None: every row; only the
    fitting `rows` count). The request path: NumPy's per-call cost (~1-2 us) outweighs its per-row
    cost at a few thousand rows, so this calls array methods directly, and when most nodes fit it
    works on every row: no gathers."""
    d = fitted.demand
    n = len(fitted.fits)
    idx = np.arange(n) if at is None else at
    choice: np.ndarray = np.full(len(idx), -1, np.int64)
    taken: np.ndarray | None = None
    slot_model: np.ndarray | None = None
    old: np.ndarray | int = 0
    new: np.ndarray | int = 0
    gone: np.ndarray | int = 0
    allowed: np.ndarray | int | None = None  # per threshold row, see frag.moved
    g = groups(mix)
    if d.kind is DemandKind.NONE:
        pass  # only CPU and memory change: nothing moves on the GPUs
    elif d.kind is DemandKind.WHOLE:
        wm = fitted.aux.whole_bits
        if wm is None:
            wm = v.whole_bits & v.s.model_bits(d.models) if d.models else v.whole_bits
        bits = _sel(wm, at)
        # which k whole-free GPUs does not change fragmentation: take the k lowest
        rest = bits
        for _ in range(d.count):
            rest = rest & (rest - 1)
        taken = bits & ~rest
        old, new = FULL_MILLI, 0
        gone = FULL_MILLI * d.count
        # scalars where every row moves the same: moved() then adds a (U, 1) column, not (U, R)
        allowed = d.count
        if g.restricted:
            allowed = g.per_threshold(np.stack([
                np.bitwise_count(taken & _sel(v.s.model_bits(m), at)) if m else np.full(len(idx), d.count, np.uint8)
                for m in g.models]))
    else:
        xi = _sel(v.milli, at).T.copy()  # (K, R) int16, see frag.stats
        ok = share_gpus(v, d) if fitted.aux.share_gpus is None else fitted.aux.share_gpus
        g_at = _pick_share(xi, _sel(ok, at).T.copy(), mix, d.compute_milli)
        choice = g_at
        flat = g_at * len(idx) + np.arange(len(idx))  # (slot, row) in the (K, R) layout
        old = xi.take(flat).astype(np.int32)
        new = np.maximum(old - d.compute_milli, 0)
        gone = old - new
        slot_model = v.s.model.take(idx * v.s.k + g_at)  # the chosen GPU's model (-1 only where it does not fit)
        if g.restricted:
            allowed = _threshold_models(v.s, g).take(slot_model, axis=1)
    if len(mix):
        cpu, hmem = _sel(v.cpu_free, at), _sel(v.hmem_free, at)
        b = policy.balance
        before, growth = current(v, at, mix, b)
        # a pod without GPUs moves nothing on them: only its CPU and memory change the loss
        after = before if d.kind is DemandKind.NONE else moved(before, mix, old, new, gone, allowed)
        growth = lost(after, cpu - d.cpu_milli, hmem - d.host_memory_mib, mix, b) - growth
        if mix.cpu_only and d.kind is not DemandKind.NONE:
            growth -= mix.cpu_only * gone  # a task asking for no GPU can use none of the freed milli
        if policy.pairing and d.kind is DemandKind.SHARE and not d.memory_mib:
            # the gap a share leaves, charged in full x pairing when no planned pattern passes it;
            # the plan is in compute milli: a share that also asks for GPU memory leaves a gap
            # that depends on the GPU's memory size, which the plan does not describe
            left = np.asarray(new)
            growth += policy.pairing * (~planned_gaps(mix).take(left)) * left
        if con is not None:
            growth += policy.contention * _contention_growth(v, con, at, taken, slot_model, gone)
        vals = _bucket(growth, policy)
    else:
        vals = np.zeros(len(idx))
    multi = d.kind is DemandKind.WHOLE and d.count > 1
    if policy.prefer_used and not multi:  # multi-GPU jobs weigh link quality instead
        cap = fast.count(_sel(v.s.plain, at)) * FULL_MILLI  # non-MIG GPUs
        vals += 0.25 * (fast.total(_sel(v.milli, at).astype(np.int64)) < cap)
    if multi:  # link quality of the best free set relative to the board's best (0..1), fitting rows only
        bonus = 2.0 * _topology_bonus(v, d, rows, bits if at is not None else bits.take(rows))
        if at is None:
            vals[rows] += bonus
        else:
            vals += bonus
    # equal scores go to the earliest node of the snapshot, in the float as in the integer answer
    vals -= idx * (1e-6 / max(n, 1))
    return vals, choice


def _sel(a: np.ndarray, at: np.ndarray | None) -> np.ndarray:
    """a's rows `at` (all of a when None), through np.take: several times faster than fancy indexing."""
    return a if at is None else a.take(at, axis=0)


def _scores(fits: np.ndarray, rows: np.ndarray, vals: np.ndarray, choice: np.ndarray) -> Scores:
    """Scores from float values of every row, of which only the fitting `rows` count (every other
    node: -inf and 0)."""
    value = np.where(fits, vals, -np.inf)
    return Scores(value, _ints(value, rows), choice)


@dataclass(eq=False)
class _Contention:
    """Per (mix, snapshot static): restricted demand per model, capacity, and the last contention."""

    static: object
    want: np.ndarray  # (M,) share of all GPU volume that restricted pods ask of each model
    cap: np.ndarray  # (M,) plain GPUs of each model
    value: np.ndarray  # (M + 1,) the last computed contention (last entry: no GPU, always 0)
    calls: int = 0


_CONTENTION: weakref.WeakKeyDictionary[Mix, dict[int, _Contention]] = weakref.WeakKeyDictionary()
_MAX_CONTENTION = 20.0  # a model nearly full of restricted demand: avoid it, but keep growth finite
CONTENTION_REFRESH = 32  # scores between two passes over all GPUs for the free milli per model


def contention(v: View, mix: Mix) -> np.ndarray:
    """(M + 1,) per GPU model of the snapshot (the last entry, for slots without a GPU, is 0): the
    model's share of the GPU volume that restricted pods ask for (each restricted set spread over its
    models by capacity; classes restricted by shape as _shaped_want says) over the model's share of
    the cluster's free milli.

    The free milli per model is a pass over every GPU (~0.1 ms at 40,000 GPUs), so it is refreshed
    every CONTENTION_REFRESH scores of the same mix and cluster: a cluster-wide share that a few pods
    barely move."""
    per = _CONTENTION.setdefault(mix, {})
    s = v.s
    hit = per.get(id(s))
    if hit is None or hit.static is not s:
        cap = np.bincount(s.model[s.plain].ravel(), minlength=len(s.models)).astype(np.float64)
        want = np.zeros(len(s.models))
        for models, share in mix.restricted:
            ok = cap * s.model_mask(models)
            if ok.sum() > 0:
                want += share * ok / ok.sum()
        want += _shaped_want(s, mix, cap)
        hit = per[id(s)] = _Contention(s, want, cap, np.zeros(len(s.models) + 1))
    if hit.calls % CONTENTION_REFRESH == 0:
        free = np.bincount((s.model + 1).ravel(), weights=v.milli.ravel(), minlength=len(s.models) + 1)[1:]
        frac = free / max(float(free.sum()), 1.0)
        hit.value = np.zeros(len(s.models) + 1)
        hit.value[:-1] = np.where(hit.cap > 0, np.minimum(hit.want / np.maximum(frac, 1e-3), _MAX_CONTENTION), 0.0)
    hit.calls += 1
    return hit.value


SHAPED_HOSTS = 1 / 3  # at most this share of the cluster's GPUs can host a class: it is restricted


def _shaped_want(s: Static, mix: Mix, cap: np.ndarray) -> np.ndarray:
    """(M,) the GPU volume share of each multi-GPU class that only a few models' nodes can host (enough
    plain GPUs of one model, CPU and memory, when empty), spread over those models' GPUs on such nodes.
    Only where those nodes hold at most SHAPED_HOSTS of all GPUs: a class most nodes can host has no
    scarce model to protect (and counting it moved the default openb trace by -0.05)."""
    want = np.zeros(len(cap))
    if not mix.shaped:
        return want
    bits = _model_bits(s)  # each model's plain GPUs per node
    per_model = np.bitwise_count(bits)  # (M, N)
    linked: np.ndarray | None = None  # (M, N) the largest all-NVLinked set of them, when a class needs it
    for c, share in mix.shaped:
        enough = per_model
        if c.nvlink:
            enough = linked = np.stack([cliques(s, b) for b in bits]) if linked is None else linked
        host = (enough >= c.count) & (s.cpu_total >= c.cpu_milli) & (s.hmem_total >= c.host_memory_mib)
        ok = (per_model * host).sum(axis=1).astype(np.float64)
        if 0 < ok.sum() <= SHAPED_HOSTS * cap.sum():
            want += share * ok / ok.sum()
    return want


def _contention_growth(v: View, con: np.ndarray, at: np.ndarray | None, taken: np.ndarray | None,
                       slot_model: np.ndarray | None, gone: np.ndarray | int) -> np.ndarray:
    """Milli taken from each model times its contention `con`, per row `at` (None: every row): O(R)
    per contended model."""
    if taken is not None:  # whole GPUs: count the taken ones of each contended model
        out = np.zeros(len(taken))
        per_model = _model_bits(v.s)
        per_model = per_model if at is None else per_model.take(at, axis=1)
        for m in np.flatnonzero(con[:-1]).tolist():
            out += con[m] * FULL_MILLI * np.bitwise_count(taken & per_model[m])
        return out
    assert slot_model is not None  # a share: the model of the chosen GPU
    return con.take(slot_model) * gone


def _model_bits(s: Static) -> np.ndarray:
    """(M, N) each model's plain GPUs per node, as bit sets (Static.model_bits of one model each)."""
    hit = s.cache.get("per-model bits")
    if hit is None:
        hit = s.cache["per-model bits"] = (np.stack([s.model_bits(frozenset({m})) for m in s.models]) if s.models
                                           else np.zeros((0, len(s.names)), np.int64))
    return hit


def _threshold_models(s: Static, g: Groups) -> np.ndarray:
    """(U, M) bool: whether a GPU of model m counts at threshold row u (u's group allows m)."""
    key = ("threshold models", g.models, g.gu.tobytes())
    hit = s.cache.get(key)
    if hit is None:
        per_group = np.stack([s.model_mask(m) if m else np.ones(len(s.models), bool) for m in g.models])
        hit = s.cache[key] = g.per_threshold(per_group)
    return hit


def _bucket(growth: np.ndarray, policy: ScorePolicy) -> np.ndarray:
    """FGD's integer score of a growth of fragmentation (milli), or the exact float (scaled per GPU)."""
    if policy.bucket_milli == 0:
        return -growth / FULL_MILLI
    z = growth / policy.bucket_milli  # then in place: a few thousand rows, six passes
    np.clip(z, -50.0, 50.0, out=z)
    np.exp(z, out=z)
    z += 1.0
    np.divide(100.0, z, out=z)
    return np.floor(z, out=z)


_RANKS: weakref.WeakKeyDictionary[Mix, dict[tuple[int, int], np.ndarray]] = weakref.WeakKeyDictionary()
_CANNOT = 1 << 10  # added to a GPU's free milli (at most FULL_MILLI) when it cannot take the share


def _rank_table(mix: Mix, take: int, k: int) -> np.ndarray:
    """(2 * _CANNOT,) int32, indexed by a GPU's free milli y (+ _CANNOT when it cannot take the share):
    the rank of the GPU's key, times k. Key = 4096 * (growth of y * P(y)) + y, where P(y) is the
    mix's probability of a task needing more than y (FGD's in-node choice, then best fit)."""
    per_mix = _RANKS.setdefault(mix, {}) if len(mix) else {}
    hit = per_mix.get((take, k))
    if hit is None:
        y = np.arange(FULL_MILLI + 1, dtype=np.float64)
        key = y.copy()
        if len(mix):
            _, milli, _, _ = mix.arrays()
            after = np.maximum(y - take, 0)
            for m in np.unique(milli).tolist():
                p = float(mix.prob[milli == m].sum()) * 4096
                key += p * (after * (after < m) - y * (y < m))
        rank = np.full(2 * _CANNOT, FULL_MILLI + 2, np.int64)
        rank[: FULL_MILLI + 1] = np.unique(key, return_inverse=True)[1]
        hit = (rank * k).astype(np.int32)  # equal keys, equal ranks: the lower slot wins
        per_mix[(take, k)] = hit
    return hit


def _share_gpu(v: View, d: Demand, rows: np.ndarray, x: np.ndarray, mix: Mix,
               ok: np.ndarray | None = None) -> np.ndarray:
    """Per row, the GPU whose own fragmentation grows least (FGD's in-node choice), then best fit."""
    okt = np.ascontiguousarray(fast.take(share_gpus(v, d) if ok is None else ok, rows).T)
    return _pick_share(x.T.astype(np.int16, order="C"), okt, mix, d.compute_milli)


def _pick_share(xi: np.ndarray, okt: np.ndarray, mix: Mix, take: int) -> np.ndarray:
    """The smallest of rank(key of the GPU's free milli) * K + slot over xi (K, R) int16 free milli:
    one lookup and one min over K."""
    k = len(xi)
    cannot = (~okt).view(np.int8).astype(np.int16) * np.int16(_CANNOT)  # cheaper than np.where
    packed = _rank_table(mix, take, k).take(xi | cannot)
    packed += np.arange(k, dtype=packed.dtype)[:, None]
    return packed.min(axis=0) % k


def _mig_value(v: View, fitted: FitResult, rows: np.ndarray) -> np.ndarray:
    """Pack MIG slices: prefer nodes whose MIG capacity for the profile is already most used."""
    ever, now = fitted.aux.mig_ever, fitted.aux.mig_now
    if ever is None or now is None:
        ever, now = mig_counts(v, fitted.demand)
    return -(fast.take(now, rows) - fitted.demand.count) / np.maximum(fast.take(ever, rows), 1)


def _topology_bonus(v: View, d: Demand, rows: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """In [0, 0.5]: how close the best free set on the node comes to the board's best possible set."""
    s = v.s
    need = d.topology is Topology.NVLINK

    def quality(i: int, free_bits: int) -> float:
        free = [g for g in range(s.k) if (free_bits >> g) & 1]
        chosen = best_set(s.pair[i], s.nvlink[i], free, d.count, need)
        ideal = best_set(s.pair[i], s.nvlink[i], list(range(int(s.gpu_count[i]))), d.count, False)
        top = set_score(s.pair[i], ideal) if ideal else 0
        return (set_score(s.pair[i], chosen) / top) if chosen and top else 0.0

    return 0.5 * per_board(s, ("set quality", d.count, need), rows, bits, quality)


def integer_scores(value: np.ndarray) -> np.ndarray:
    """0..10 for float scores (-inf where the demand does not fit, which gets 0): the best alone at 10."""
    rows = np.isfinite(value).nonzero()[0]
    return _ints(value, rows) if len(rows) else np.zeros(len(value), np.int64)


def _ints(value: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """0..10 with the best node alone at 10 (kube-scheduler picks at random among equal totals),
    the others scaled into 0..9 by their float score; value is -inf except at `rows` (those get 0)."""
    top = int(value.argmax())
    lo, hi = float(value.take(rows).min()), float(value[top])
    if hi - lo > 1e-12:  # truncation = floor, never negative; -inf becomes 0
        out = np.maximum((value - lo) * ((MAX_SCORE - 1) / (hi - lo)), 0.0).astype(np.int64)
    else:
        out = np.zeros(len(value), np.int64)
        out[rows] = MAX_SCORE - 1
    out[top] = MAX_SCORE
    return out
