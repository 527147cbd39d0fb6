"""Contention: GPU milli taken from a model that restricted pods need, weighted by that model's share
of restricted demand over its share of the free capacity, so pods that may run anywhere leave scarce
models to the pods that may not. Restricted: by gpu-model selectors, or by shape (a multi-GPU class
that only a small part of the cluster's nodes are big enough for, e.g. 8 GPUs with 120 cores).

The per-model vector is the one input of a score that is not per node; it is kept per (layout, mix)
in LayoutMemo and refreshed every CONTENTION_REFRESH scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from binpack.catalog import FULL_MILLI
from binpack.memo import Contention
from binpack.mix import Mix
from binpack.snapshot import Static, View
from binpack.tables import cliques
from binpack.terms.move import Move
from binpack.types import DemandKind

if TYPE_CHECKING:
    from binpack.terms.policy import ScorePolicy

_MAX_CONTENTION = 20.0  # a model nearly full of restricted demand: avoid it, but keep growth finite
CONTENTION_REFRESH = 32  # scores between two passes over all GPUs for the free milli per model
SHAPED_HOSTS = 1 / 3  # at most this share of the cluster's GPUs can host a class: it is restricted


def wanted(v: View, mix: Mix, policy: ScorePolicy, kind: DemandKind) -> np.ndarray | None:
    """The contention vector a score of this demand kind reads (None: the term has nothing to do).
    Each call counts towards the refresh, so it is asked once per score."""
    if not (len(mix) and policy.contention and (mix.restricted or mix.shaped) and kind is not DemandKind.NONE):
        return None
    return contention(v, mix)


def contention(v: View, mix: Mix) -> np.ndarray:
    """(M + 1,) per GPU model of the snapshot (the last entry, for slots without a GPU, is 0): the
    model's share of the GPU volume that restricted pods ask for (each restricted set spread over its
    models by capacity; classes restricted by shape as _shaped_want says) over the model's share of
    the cluster's free milli.

    The free milli per model is a pass over every GPU (~0.1 ms at 40,000 GPUs), so it is refreshed
    every CONTENTION_REFRESH scores of the same mix and cluster: a cluster-wide share that a few pods
    barely move."""
    s = v.s
    mem = s.memo.of_mix(mix)
    hit = mem.contention
    if hit is None:
        cap = np.bincount(s.model[s.plain].ravel(), minlength=len(s.models)).astype(np.float64)
        want = np.zeros(len(s.models))
        for models, share in mix.restricted:
            ok = cap * s.model_mask(models)
            if ok.sum() > 0:
                want += share * ok / ok.sum()
        want += _shaped_want(s, mix, cap)
        hit = mem.contention = Contention(want, cap, np.zeros(len(s.models) + 1))
    if hit.calls % CONTENTION_REFRESH == 0:
        free = np.bincount((s.model + 1).ravel(), weights=v.milli.ravel(), minlength=len(s.models) + 1)[1:]
        frac = free / max(float(free.sum()), 1.0)
        hit.value = np.zeros(len(s.models) + 1)
        hit.value[:-1] = np.where(hit.cap > 0, np.minimum(hit.want / np.maximum(frac, 1e-3), _MAX_CONTENTION), 0.0)
    hit.calls += 1
    return hit.value


def _shaped_want(s: Static, mix: Mix, cap: np.ndarray) -> np.ndarray:
    """(M,) the GPU volume share of each multi-GPU class that only a few models' nodes can host (enough
    plain GPUs of one model, CPU and memory, when empty), spread over those models' GPUs on such nodes.
    Only where those nodes hold at most SHAPED_HOSTS of all GPUs: a class most nodes can host has no
    scarce model to protect (and counting it moved the default openb trace by -0.05)."""
    want = np.zeros(len(cap))
    if not mix.shaped:
        return want
    bits = model_bits(s)  # each model's plain GPUs per node
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


def term(m: Move, policy: ScorePolicy) -> np.ndarray | None:
    """Milli taken from each model times its contention, per row, times the weight: O(R) per
    contended model."""
    if m.con is None or m.demand.kind is DemandKind.NONE:
        return None
    con = m.con
    if m.taken is not None:  # whole GPUs: count the taken ones of each contended model
        out = np.zeros(len(m.taken))
        per_model = model_bits(m.v.s)
        per_model = per_model if m.at is None else per_model.take(m.at, axis=1)
        for k in np.flatnonzero(con[:-1]).tolist():
            out += con[k] * FULL_MILLI * np.bitwise_count(m.taken & per_model[k])
    else:
        assert m.slot_model is not None  # a share: the model of the chosen GPU
        out = con.take(m.slot_model) * m.gone
    got: np.ndarray = policy.contention * out
    return got


def model_bits(s: Static) -> np.ndarray:
    """(M, N) each model's plain GPUs per node, as bit sets (Static.model_bits of one model each)."""
    hit = s.memo.per_model_bits
    if hit is None:
        hit = s.memo.per_model_bits = (np.stack([s.model_bits(frozenset({m})) for m in s.models]) if s.models
                                       else np.zeros((0, len(s.names)), np.int64))
    return hit
