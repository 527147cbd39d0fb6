"""score against its definition: FGD fragmentation written out per task class in plain Python.

`score` takes shortcuts for speed (per-threshold sums, the state after a placement derived from the
state before, a rank table for a share's GPU); these tests recompute every number the slow way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_binpack_gen import FAST, clusters, demands, mixes, states

from binpack import Demand, DemandKind, Gpu, Mix, MixLearner, Node, Snapshot, TaskClass, fit, score
from binpack.catalog import FULL_MILLI
from binpack.frag import frag
from binpack.score import MAX_SCORE, ScorePolicy
from binpack.types import MigMode, Topology


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


def plain_stranded(x: list[list[int]], cpu: list[int], hmem: list[int], mix: Mix) -> list[float]:
    """Free milli beyond what free CPU (memory) feeds at the mix's CPU (memory) per GPU milli."""
    vol = sum(float(p) * c.count * c.milli for c, p in zip(mix.classes, mix.prob, strict=True))
    if not vol:  # no GPU task to feed
        return [0.0] * len(x)
    per_cpu = sum(float(p) * c.cpu_milli for c, p in zip(mix.classes, mix.prob, strict=True)) / vol
    per_mem = sum(float(p) * c.host_memory_mib for c, p in zip(mix.classes, mix.prob, strict=True)) / vol
    out = []
    for xs, c, h in zip(x, cpu, hmem, strict=True):
        total = sum(xs)
        short = [0.0]
        if per_cpu > 0:
            short.append(total - c / per_cpu)
        if per_mem > 0:
            short.append(total - h / per_mem)
        out.append(max(short))
    return out


def plain_contention(snap: Snapshot, mix: Mix) -> dict[str, float]:
    """Per model: its share of restricted GPU volume (spread by capacity) over its share of free milli."""
    nodes = list(snap.static.nodes)
    plain = [(g.model, i, g.index) for i, n in enumerate(nodes) for g in n.gpus
             if g.healthy and g.mig_mode is MigMode.NONE]
    cap = {m: sum(1 for mm, _, _ in plain if mm == m) for m in {m for m, _, _ in plain}}
    want = dict.fromkeys(cap, 0.0)
    for models, share in mix.restricted:
        room = sum(cap.get(m, 0) for m in models)
        for m in models:
            if cap.get(m) and room:
                want[m] += share * cap[m] / room
    for c, share in mix.shaped:  # multi-GPU classes that only a few nodes (<= 1/3 of GPUs) can host
        hosts: dict[str, int] = {}
        for i, n in enumerate(nodes):
            for m in {mm for mm, ii, _ in plain if ii == i}:
                mine = [k for mm, ii, k in plain if ii == i and mm == m]
                # an NVLink class needs that many of them NVLinked pairwise: the largest such subset
                big = len(mine)
                if c.nvlink:
                    big = max(len(sub) for r in range(len(mine) + 1) for sub in itertools.combinations(mine, r)
                              if all(n.nvlink[a][b] > 0 for a, b in itertools.combinations(sub, 2)))
                if big >= c.count and n.cpu_milli >= c.cpu_milli and n.memory_mib >= c.host_memory_mib:
                    hosts[m] = hosts.get(m, 0) + len(mine)
        room = sum(hosts.values())
        if 0 < room <= sum(cap.values()) / 3:
            for m, k in hosts.items():
                want[m] += share * k / room
    with snap.read() as v:
        milli = v.free_milli()
        free = {m: 0.0 for m in cap}
        for i, n in enumerate(nodes):
            for k, g in enumerate(n.gpus):
                if g.model in free:
                    free[g.model] += float(milli[i, k])
    everything = max(sum(free.values()), 1.0)
    return {m: min(want[m] / max(free[m] / everything, 1e-3), 20.0) for m in cap}


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
    exact = ScorePolicy(bucket_milli=0, balance=0, contention=0, pairing=0)  # FGD's float growth, no buckets
    sc = score(verdict, mix, policy=exact)
    rows = np.flatnonzero(verdict.fits)
    assert (sc.value[~verdict.fits] == -np.inf).all() and (sc.integer[~verdict.fits] == 0).all()
    prod = score(verdict, mix)  # the production policy (buckets, consolidation) on the same verdict
    if not len(rows) or d.kind is DemandKind.MIG or (d.kind is DemandKind.NONE and not len(mix)):
        return  # MIG packs by its own rule; a pod without GPUs against no mix scores flat
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
        if d.kind is DemandKind.NONE:  # only CPU and memory change
            continue
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
    cpu2, hmem2 = [c - d.cpu_milli for c in cpu], [h - d.host_memory_mib for h in hmem]
    before = np.asarray(plain_frag(nodes, x, cpu, hmem, mix))
    later = np.asarray(plain_frag(nodes, after, cpu2, hmem2, mix))
    freed = np.asarray([sum(x[r]) - sum(after[r]) for r in range(len(rows))], np.float64)
    growth = later - before - mix.cpu_only * freed  # CPU-only tasks lose the freed milli
    sc_default = score(verdict, mix, policy=ScorePolicy(bucket_milli=0, balance=1.0, contention=1.0, pairing=0))
    # the balance term: GPU milli the node's CPU and memory can no longer feed
    growth_b = growth + np.asarray(plain_stranded(after, cpu2, hmem2, mix)) - plain_stranded(x, cpu, hmem, mix)
    # the contention term: milli taken from each model, weighted by its contention
    con = plain_contention(snap, mix)
    taken = [sum(con.get(nodes[r].gpus[g].model, 0.0) * (x[r][g] - after[r][g]) for g in range(len(nodes[r].gpus)))
             for r in range(len(rows))]
    growth_b = growth_b + (np.asarray(taken) if mix.restricted or mix.shaped else 0.0)
    multi = d.kind is DemandKind.WHOLE and d.count > 1
    if not multi:
        got = sc_default.value[rows] + rows * (1e-6 / len(verdict.fits))
        assert got == pytest.approx(-growth_b / FULL_MILLI, abs=1e-6)
    growth = np.asarray(growth)
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


def test_learner_keeps_restricted_volume_and_class_memory() -> None:
    """A rare model-restricted class falls out of the classes (coverage) but not out of `restricted`;
    classes carry their pods' mean host memory. A rare multi-GPU class stays a class (keep_multi)
    unless the learner keeps only FGD's coverage cut."""
    for keep_multi in (False, True):
        learner = MixLearner(decay=1.0, coverage=0.9, keep_multi=keep_multi)
        for i in range(95):
            learner.observe(Demand.whole(1, cpu_milli=4_000, host_memory_mib=10_000 + 2_000 * (i % 2)))
        for _ in range(5):
            learner.observe(Demand.whole(2, models=frozenset({"T4"})))
        learner.observe(Demand.share(100, 250))  # rare, one GPU: cut either way
        mix = learner.mix()
        assert [c.models for c in mix.classes] == [frozenset()] + [frozenset({"T4"})] * keep_multi
        assert mix.classes[0].host_memory_mib == round((48 * 10_000 + 47 * 12_000) / 95)
        assert mix.restricted == ((frozenset({"T4"}), pytest.approx(10 / 105.25)),)


def _two_kinds(t4_cpu: int) -> Snapshot:
    dense = Node("dense", tuple(Gpu(i, "A100-SXM4-80GB") for i in range(8)), 96_000, 1_000_000)
    rich = Node("rich", (Gpu(0, "T4"), Gpu(1, "T4")), t4_cpu, 1_000_000)
    return Snapshot.build([dense, rich])


def test_balance_sends_cpu_only_pods_where_cpu_is_spare() -> None:
    """GPU pods need 12 cores per GPU: a 30-core CPU-only pod on the 8-GPU, 96-core node would strand
    GPUs; on the 2-GPU node with 100 cores it strands none. FGD alone sees no difference."""
    snap = _two_kinds(100_000)
    mix = Mix.of([(TaskClass(1, FULL_MILLI, 12_000), 1.0)])
    d = Demand.none(cpu_milli=30_000)
    assert int(np.argmax(score(fit(snap, d), mix).value)) == 1
    fgd = score(fit(snap, d), mix, policy=ScorePolicy(balance=0, contention=0))
    assert int(np.argmax(fgd.value)) == 0  # first node among equals


def test_contention_keeps_unrestricted_pods_off_a_scarce_model() -> None:
    """Half of the GPU volume may only run on T4, which is 2 of 10 GPUs: a pod that may run anywhere
    goes to the A100 node even though the T4 node comes first and fits as well."""
    dense = Node("dense", tuple(Gpu(i, "A100-SXM4-80GB") for i in range(8)), 96_000, 1_000_000)
    rich = Node("rich", (Gpu(0, "T4"), Gpu(1, "T4")), 96_000, 1_000_000)
    snap = Snapshot.build([rich, dense])
    mix = Mix.of([(TaskClass(1, FULL_MILLI), 1.0), (TaskClass(1, FULL_MILLI, models=frozenset({"T4"})), 1.0)])
    assert mix.restricted == ((frozenset({"T4"}), 0.5),)
    d = Demand.whole(1)
    exact_on = ScorePolicy(bucket_milli=0)
    on = score(fit(snap, d), mix, policy=exact_on)
    off = score(fit(snap, d), mix, policy=ScorePolicy(bucket_milli=0, contention=0))  # whole GPUs: no pairing
    assert snap.names[int(np.argmax(score(fit(snap, d), mix).value))] == "dense"
    # T4 holds 20% of the free milli and half of the demand: contention 2.5 per milli taken there
    assert (off.value[0] - on.value[0]) - (off.value[1] - on.value[1]) == pytest.approx(2.5, abs=1e-6)



def test_contention_keeps_pods_off_the_only_nodes_big_enough_for_a_class() -> None:
    """8-GPU, 120-core tasks fit only the V100 node (8 of 40 GPUs: a class restricted by its shape,
    not by a selector), and are too rare to be one of the mix's classes: a 1-GPU pod that may run
    anywhere goes to an A100 node although the V100 node comes first; without the class's volume
    (mix.shaped) it would take the first node."""
    big = Node("big", tuple(Gpu(i, "V100-SXM2-32GB") for i in range(8)), 128_000, 768 * 1024)
    small = [Node(f"small-{j}", tuple(Gpu(i, "A100-SXM4-80GB") for i in range(8)), 64_000, 512 * 1024)
             for j in range(4)]
    snap = Snapshot.build([big, *small])
    learner = MixLearner(keep_multi=False)  # contention alone: the measure does not see the class
    for _ in range(2):
        learner.observe(Demand.whole(8, cpu_milli=120_000, host_memory_mib=600 * 1024))
    for _ in range(60):
        learner.observe(Demand.whole(1, cpu_milli=4_000))
    mix = learner.mix()
    ((cls, share),) = mix.shaped
    assert (cls.count, cls.cpu_milli, cls.host_memory_mib) == (8, 120_000, 600 * 1024)
    assert share == pytest.approx(16 / 76, rel=0.05) and not mix.restricted
    assert all(c.count == 1 for c in mix.classes)  # below the coverage cut
    d = Demand.whole(1, cpu_milli=4_000)
    assert snap.names[int(np.argmax(score(fit(snap, d), mix).value))] != "big"
    flat = Mix.of(zip(mix.classes, mix.prob, strict=True), shaped=[])
    assert not flat.shaped
    assert snap.names[int(np.argmax(score(fit(snap, d), flat).value))] == "big"
    # a class most nodes can host (8 GPUs, 32 cores) is not restricted: no contention from it
    wide = Mix.of([(TaskClass(1, FULL_MILLI, 4_000), 1.0), (TaskClass(8, FULL_MILLI, 32_000), 1.0)])
    assert wide.shaped and snap.names[int(np.argmax(score(fit(snap, d), wide).value))] == "big"


def test_contention_keeps_pods_off_the_only_boards_with_a_large_enough_nvlink_set() -> None:
    """8-GPU NVLink jobs fit only the NVSwitch node (8 of 24 GPUs): the DGX-1 nodes have 8 GPUs but
    no 8 NVLinked pairwise. The class is too rare for the mix's coverage cut, so FGD's measure never
    sees it: a 1-GPU pod goes to a DGX-1 node although the NVSwitch node comes first. The same jobs
    without the NVLink requirement fit every node: no contention, and the first node. (Contention
    is per GPU model: it tells an H100 board from a V100 board, not two boards of one model.)"""
    from binpack.topology import dgx1_v100, nvswitch

    sw, sw_pc = nvswitch(8, 18)
    cube, cube_pc = dgx1_v100()
    nodes = [Node("switch", tuple(Gpu(i, "H100-SXM5-80GB") for i in range(8)), 224_000, 2_000_000, sw, sw_pc),
             *(Node(f"cube-{j}", tuple(Gpu(i, "V100-SXM2-32GB") for i in range(8)), 224_000, 2_000_000, cube, cube_pc)
               for j in range(2))]
    snap = Snapshot.build(nodes)
    d = Demand.whole(1, cpu_milli=4_000)
    for topology, first in ((Topology.NVLINK, False), (Topology.BEST_EFFORT, True)):
        learner = MixLearner(keep_multi=False)  # contention alone: the measure does not see the class
        for _ in range(2):
            learner.observe(Demand.whole(8, topology=topology, cpu_milli=32_000))
        for _ in range(60):
            learner.observe(d)
        mix = learner.mix()
        ((cls, _),) = mix.shaped
        assert cls.nvlink is (topology is Topology.NVLINK) and all(c.count == 1 for c in mix.classes)
        assert (snap.names[int(np.argmax(score(fit(snap, d), mix).value))] == "switch") is first


def test_pairing_plan_and_its_charge() -> None:
    """470s pair with 470s and 320s with 650s in the fewest GPUs, so a 320 next to a 470 leaves an
    off-plan 210 (a 160 could fill it, but no planned pattern holds 470 + 320 + 160): charged in
    full x pairing. A 320 on an empty GPU leaves 680, on plan (650 + 320). Below the smallest share
    every gap is dead and FGD's measure already counts it."""
    from binpack.plan import patterns, solve

    ok = solve(((160, 0.2), (320, 0.2), (470, 0.4), (650, 0.2)))
    assert all(ok[g] for g in (1000, 530, 350, 680, 0, 159)) and not ok[210]
    pats = patterns([160, 320, 470, 650])
    assert pats is not None and (470, 470) in pats and (650, 320) in pats and (470, 320, 160) in pats
    assert patterns([50, 60, 70], limit=100) is None  # too many patterns: no plan, never slow
    snap = Snapshot.build([Node(n, (Gpu(0, "T4"),), 64_000, 1_000_000) for n in ("a", "b")])
    from binpack import Placement, allocate

    snap = allocate(snap, Placement("a", (0,), compute_milli=470, kind=DemandKind.SHARE))
    mix = Mix.of([(TaskClass(1, m), w) for m, w in ((160, 1.0), (320, 1.0), (470, 2.0), (650, 1.0))])
    d = Demand.share(0, 320)
    on = score(fit(snap, d), mix, policy=ScorePolicy(bucket_milli=0))
    off = score(fit(snap, d), mix, policy=ScorePolicy(bucket_milli=0, pairing=0))
    assert (off.value[0] - on.value[0]) * FULL_MILLI == pytest.approx(10 * 210)
    assert off.value[1] == pytest.approx(on.value[1])
    assert int(np.argmax(on.value)) == 1


def _versions(data: st.DataObject, snap: Snapshot, mix: Mix, asked: st.SearchStrategy[Demand]) -> Iterator[Snapshot]:
    """Binds (of demands drawn from `asked`) and releases on snap; after each, a version to read: the
    newest, or sometimes an older one read again."""
    from binpack import allocate, place, release

    history = [snap]
    booked = []
    for _ in range(data.draw(st.integers(1, 6))):
        if booked and data.draw(st.booleans()):
            snap = release(snap, booked.pop(data.draw(st.integers(0, len(booked) - 1))))
        else:
            d = data.draw(asked)
            where = [n for i, n in enumerate(snap.names) if fit(snap, d).fits[i]]
            if where:
                p = place(snap, d, data.draw(st.sampled_from(where)), mix)
                assert p is not None
                snap = allocate(snap, p)
                booked.append(p)
        history.append(snap)
        yield data.draw(st.sampled_from(history))


@FAST
@given(data=st.data())
def test_kept_state_matches_a_fresh_pass(data: st.DataObject) -> None:
    """frag.current keeps every node's stats and loss between calls and recomputes the nodes whose
    columns changed since (persist.Columns logs them): after binds and releases, and when an older
    snapshot is read again, it must give what a fresh pass over the rows gives, bit for bit."""
    from binpack.frag import current, lost, stats

    mix = data.draw(mixes())
    for seen in _versions(data, data.draw(states(data.draw(clusters()))), mix, demands()):
        balance = data.draw(st.sampled_from([0.0, 1.0]))
        with seen.read() as v:
            every = data.draw(st.booleans())  # None: every row, the kept arrays themselves
            rows = (np.arange(len(seen.names)) if every else
                    np.asarray(sorted(data.draw(st.sets(st.integers(0, len(seen.names) - 1)))), np.int64))
            kept, kept_lost = current(v, None if every else rows, mix, balance)
            if every:  # read-only: a later refresh replaces them, never writes into them
                assert not kept.cnt.flags.writeable and not kept_lost.flags.writeable
            fresh = stats(v, rows, v.milli.take(rows, axis=0).T.copy(), mix)
            assert np.array_equal(kept.total, fresh.total)
            assert np.array_equal(kept.cnt, fresh.cnt) and np.array_equal(kept.on, fresh.on)
            assert np.array_equal(kept_lost, lost(fresh, v.cpu_free.take(rows), v.hmem_free.take(rows), mix, balance))


@FAST
@given(data=st.data())
def test_remembered_scores_match_a_fresh_pass(data: st.DataObject) -> None:
    """score remembers each demand's values per node and redoes only the nodes whose columns changed
    since: after binds, releases and reads of older snapshots, the answer must equal, bit for bit,
    what a pass with nothing remembered gives."""
    from binpack.score import forget

    mix = data.draw(mixes())
    asked = data.draw(st.lists(demands(), min_size=1, max_size=3))
    policy = data.draw(st.sampled_from([ScorePolicy(), ScorePolicy(bucket_milli=0, prefer_used=True)]))
    for seen in _versions(data, data.draw(states(data.draw(clusters()))), mix, st.sampled_from(asked)):
        for d in asked:
            kept = score(fit(seen, d), mix, policy=policy)
            forget(seen.static)
            fresh = score(fit(seen, d), mix, policy=policy)
            assert np.array_equal(kept.value, fresh.value)
            assert np.array_equal(kept.integer, fresh.integer) and np.array_equal(kept.choice, fresh.choice)
