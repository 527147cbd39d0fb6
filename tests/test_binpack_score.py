"""score against its definition: FGD fragmentation written out per task class in plain Python.

`score` takes shortcuts for speed (per-threshold sums, the state after a placement derived from the
state before, a rank table for a share's GPU); these tests recompute every number the slow way.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_binpack_gen import FAST, clusters, demands, mixes, states

from binpack import Demand, DemandKind, Gpu, Mix, MixLearner, Node, Snapshot, TaskClass, fit, score
from binpack.catalog import FULL_MILLI
from binpack.score import MAX_SCORE, ScorePolicy, frag


def plain_frag(nodes: list[Node], x: list[list[int]], cpu: list[int], hmem: list[int], mix: Mix) -> list[float]:
    """FGD, one node and one task class at a time."""
    out = []
    for node, xs, c, h in zip(nodes, x, cpu, hmem, strict=True):
        total = sum(xs)
        f = 0.0
        for cls, p in zip(mix.classes, mix.prob, strict=True):
            usable = [g < len(node.gpus) and xv >= cls.milli and (not cls.models or node.gpus[g].model in cls.models)
                      for g, xv in enumerate(xs)]
            host = c >= cls.cpu_milli and h >= cls.host_memory_mib and sum(usable) >= cls.count
            lost = sum(xv for xv, u in zip(xs, usable, strict=True) if not u) if host else total
            f += float(p) * lost
        out.append(f)
    return out


def _columns(snap: Snapshot, rows: np.ndarray) -> tuple[list[list[int]], list[int], list[int]]:
    with snap.read() as v:
        return (v.free_milli()[rows].tolist(), v.cpu_free[rows].tolist(), v.hmem_free[rows].tolist())


@FAST
@given(data=st.data())
def test_frag_is_fgd(data: st.DataObject) -> None:
    snap = data.draw(states(data.draw(clusters())))
    mix = data.draw(mixes())
    rows = np.arange(len(snap.names))
    x, cpu, hmem = _columns(snap, rows)
    with snap.read() as v:
        got = frag(v, rows, np.asarray(x, np.int32), np.asarray(cpu), np.asarray(hmem), mix)
    assert got == pytest.approx(plain_frag(list(snap.static.nodes), x, cpu, hmem, mix), abs=1e-6)


def _gpu_key(xv: int, take: int, mix: Mix) -> float:
    """FGD's in-node choice for a share: growth of xv * P(task needs more than xv), then best fit."""
    after = max(xv - take, 0)
    growth = sum(float(p) * ((after if after < c.milli else 0) - (xv if xv < c.milli else 0))
                 for c, p in zip(mix.classes, mix.prob, strict=True))
    return growth * 4096 + xv


@FAST
@given(data=st.data())
def test_score_is_the_growth_of_frag(data: st.DataObject) -> None:
    snap = data.draw(states(data.draw(clusters())))
    d: Demand = data.draw(demands())
    mix = data.draw(mixes())
    verdict = fit(snap, d)
    exact = ScorePolicy(bucket_milli=0, prefer_used=False)  # the float growth itself, no buckets
    sc = score(verdict, mix, policy=exact)
    rows = np.flatnonzero(verdict.fits)
    assert (sc.value[~verdict.fits] == -np.inf).all() and (sc.integer[~verdict.fits] == 0).all()
    prod = score(verdict, mix)  # the production policy (buckets, consolidation) on the same verdict
    if not len(rows) or d.kind not in (DemandKind.WHOLE, DemandKind.SHARE):
        return
    assert sc.integer.min() >= 0 and sc.integer[rows].max() == MAX_SCORE
    # one node alone at 10, in both policies, so kube-scheduler's random tie-break cannot move the pod
    assert (sc.integer[rows] == MAX_SCORE).sum() == 1 and (prod.integer[rows] == MAX_SCORE).sum() == 1
    assert int(np.argmax(prod.value)) == int(np.argmax(prod.integer))
    x, cpu, hmem = _columns(snap, rows)
    nodes = [snap.static.nodes[i] for i in rows]
    after = [list(r) for r in x]
    with snap.read() as v:
        whole = v.whole_free(d.models)[rows]
    for r in range(len(rows)):
        if d.kind is DemandKind.WHOLE:
            for g in np.flatnonzero(whole[r])[: d.count]:
                after[r][g] = 0
            continue
        with snap.read() as v:
            from binpack.fit import share_gpus

            ok = share_gpus(v, d)[rows[r]]
        keys = [_gpu_key(xv, d.compute_milli, mix) if ok[g] else np.inf for g, xv in enumerate(x[r])]
        g = int(sc.choice[rows[r]])
        assert keys[g] == pytest.approx(min(keys)) and ok[g]
        after[r][g] = max(after[r][g] - d.compute_milli, 0)
    before = plain_frag(nodes, x, cpu, hmem, mix)
    later = plain_frag(nodes, after, [c - d.cpu_milli for c in cpu], [h - d.host_memory_mib for h in hmem], mix)
    freed = np.asarray([sum(x[r]) - sum(after[r]) for r in range(len(rows))], np.float64)
    growth = np.asarray(later) - np.asarray(before) - mix.cpu_only * freed  # CPU-only tasks lose the freed milli
    expect = -growth / FULL_MILLI
    bonus = sc.value[rows] - expect
    order = 1e-6  # equal scores go to the earliest node: at most this much is taken off
    if d.kind is DemandKind.WHOLE and d.count > 1:
        assert ((bonus > -order - 1e-9) & (bonus < 1.0 + 1e-9)).all()  # the topology term, tested elsewhere
    else:
        assert bonus == pytest.approx(np.zeros(len(rows)), abs=order + 1e-9)


def test_packing_prefers_the_node_that_stays_usable() -> None:
    """Two T4 nodes, one with a GPU half used: a quarter share goes next to it (best fit), and a
    whole GPU goes to the node where the mix's whole-GPU tasks still fit afterwards."""
    snap = Snapshot.build([Node(n, (Gpu(0, "T4"), Gpu(1, "T4")), 10_000, 10_000) for n in ("a", "b")])
    from binpack import Placement, allocate

    snap = allocate(snap, Placement("a", (0,), memory_mib=100, compute_milli=500, kind=DemandKind.SHARE))
    learner = MixLearner()
    for d in (Demand.whole(1), Demand.share(100, 250)):
        learner.observe(d)
    mix = learner.mix()
    sc = score(fit(snap, Demand.share(100, 250)), mix)
    assert sc.integer.tolist() == [MAX_SCORE, 0] and int(sc.choice[0]) == 0
    two = Mix.of([(TaskClass(2, FULL_MILLI), 1.0)])
    sc = score(fit(snap, Demand.whole(1)), two)
    assert sc.value[1] < sc.value[0]  # on b a 2-GPU task no longer fits; on a it never did
