"""FGD's term: how much a placement grows the node's fragmentation (frag.py's measure, with its
balance weight), then bucketed as FGD's sigmoid integer score so near-equal placements tie.

`move` works out what the placement does to each row (the GPUs taken, their free milli before and
after), the input every other term reads too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from binpack.catalog import FULL_MILLI
from binpack.fit import FitResult, share_gpus
from binpack.frag import Groups, current, groups, lost, moved
from binpack.mix import Mix
from binpack.snapshot import Static, View
from binpack.terms.move import Move, sel
from binpack.terms.share_choice import pick_share
from binpack.types import DemandKind

if TYPE_CHECKING:
    from binpack.terms.policy import ScorePolicy


def move(fitted: FitResult, mix: Mix, v: View, rows: np.ndarray, at: np.ndarray | None,
         con: np.ndarray | None) -> tuple[Move, np.ndarray]:
    """What placing the demand does to rows `at` (None: every row), and the chosen GPU per row (-1: not
    a share). The request path: NumPy's per-call cost (~1-2 us) outweighs its per-row cost at a few
    thousand rows, so this calls array methods directly."""
    d = fitted.demand
    n = len(fitted.fits)
    idx = np.arange(n) if at is None else at
    choice: np.ndarray = np.full(len(idx), -1, np.int64)
    base = Move(fitted, mix, v, rows, at, idx, con)
    g = groups(mix)
    if d.kind is DemandKind.NONE:
        return base, choice  # only CPU and memory change: nothing moves on the GPUs
    if d.kind is DemandKind.WHOLE:
        wm = fitted.aux.whole_bits
        if wm is None:
            wm = v.whole_bits & v.s.model_bits(d.models) if d.models else v.whole_bits
        bits = sel(wm, at)
        # which k whole-free GPUs does not change fragmentation: take the k lowest
        rest = bits
        for _ in range(d.count):
            rest = rest & (rest - 1)
        taken = bits & ~rest
        # scalars where every row moves the same: moved() then adds a (U, 1) column, not (U, R)
        allowed: np.ndarray | int = d.count
        if g.restricted:
            allowed = g.per_threshold(np.stack([
                np.bitwise_count(taken & sel(v.s.model_bits(m), at)) if m else np.full(len(idx), d.count, np.uint8)
                for m in g.models]))
        return Move(fitted, mix, v, rows, at, idx, con, taken=taken, bits=bits, old=FULL_MILLI, new=0,
                    gone=FULL_MILLI * d.count, allowed=allowed), choice
    xi = sel(v.milli, at).T.copy()  # (K, R) int16, see frag.stats
    ok = share_gpus(v, d) if fitted.aux.share_gpus is None else fitted.aux.share_gpus
    g_at = pick_share(xi, sel(ok, at).T.copy(), mix, d.compute_milli)
    flat = g_at * len(idx) + np.arange(len(idx))  # (slot, row) in the (K, R) layout
    old = xi.take(flat).astype(np.int32)
    new = np.maximum(old - d.compute_milli, 0)
    slot_model = v.s.model.take(idx * v.s.k + g_at)  # the chosen GPU's model (-1 only where it does not fit)
    return Move(fitted, mix, v, rows, at, idx, con, slot_model=slot_model, old=old, new=new, gone=old - new,
                allowed=_threshold_models(v.s, g).take(slot_model, axis=1) if g.restricted else None), g_at


def growth(m: Move, policy: ScorePolicy) -> np.ndarray:
    """Per row, the growth of the node's expected unusable GPU milli (FGD), with `policy.balance` x
    the GPU milli stranded for want of CPU or memory; the mix must not be empty."""
    d, v, at, mix = m.demand, m.v, m.at, m.mix
    cpu, hmem = sel(v.cpu_free, at), sel(v.hmem_free, at)
    b = policy.balance
    before, was = current(v, at, mix, b)
    # a pod without GPUs moves nothing on them: only its CPU and memory change the loss
    after = before if d.kind is DemandKind.NONE else moved(before, mix, m.old, m.new, m.gone, m.allowed)
    out = lost(after, cpu - d.cpu_milli, hmem - d.host_memory_mib, mix, b) - was
    if mix.cpu_only and d.kind is not DemandKind.NONE:
        out -= mix.cpu_only * m.gone  # a task asking for no GPU can use none of the freed milli
    return out


def bucket(growth: np.ndarray, policy: ScorePolicy) -> np.ndarray:
    """FGD's integer score of a growth of fragmentation (milli), or the exact float (scaled per GPU)."""
    if policy.bucket_milli == 0:
        return -growth / FULL_MILLI
    z = growth / policy.bucket_milli  # then in place: a few thousand rows, six passes
    np.clip(z, -50.0, 50.0, out=z)
    np.exp(z, out=z)
    z += 1.0
    np.divide(100.0, z, out=z)
    return np.floor(z, out=z)


def _threshold_models(s: Static, g: Groups) -> np.ndarray:
    """(U, M) bool: whether a GPU of model m counts at threshold row u (u's group allows m)."""
    key = (g.models, g.gu.tobytes())
    hit = s.memo.threshold_models.get(key)
    if hit is None:
        per_group = np.stack([s.model_mask(m) if m else np.ones(len(s.models), bool) for m in g.models])
        hit = s.memo.threshold_models[key] = g.per_threshold(per_group)
    return hit
