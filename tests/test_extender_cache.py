"""The extender's scores after binds (binpack.score redoing only the nodes a bind changed) equal a
full score with nothing remembered."""

from __future__ import annotations

import dataclasses

import numpy as np

from binpack import Demand, Mix, Placement, TaskClass, score
from binpack.score import forget
from scheduler.extender.verdicts import Engine
from scheduler.state.cluster import ClusterState
from scheduler.state.standalone import demo_objects


def test_incremental_scores_equal_full_scores() -> None:
    state = ClusterState(mix_refresh_s=1e9)
    state.replace("nodes", demo_objects())
    state.replace("pods", [])
    mix = Mix.of([(TaskClass(1, 1000), 2.0), (TaskClass(1, 250), 1.0), (TaskClass(2, 1000), 1.0)], version=7)
    engine = Engine()
    for d in (Demand.whole(1), Demand.share(10_000, 250), Demand.whole(2)):
        for step, p in enumerate([Placement("t4-0", gpus=(0,)), Placement("t4-1", gpus=(1, 2)),
                                  Placement("dgx-h100-0", gpus=(3,))]):
            view = dataclasses.replace(state.view(), mix=mix)
            first = engine.values(view, d)  # remembered at this generation
            assert engine.values(view, d) is first  # the same generation: the same answer object
            state.assume(f"{d.kind.value}-{step}", p, None)
            view2 = dataclasses.replace(state.view(), mix=mix)
            assert view2.snapshot.generation != view.snapshot.generation
            got = engine.values(view2, d)  # only the bound node is scored again
            forget(view2.snapshot.static)
            want = score(engine.fit(view2, d), mix).value
            assert np.array_equal(got, want)
            changed = np.flatnonzero(got != first)
            assert set(changed.tolist()) <= {view2.snapshot.node_index(p.node)}
        for uid in list(state.assumed()):
            state.unassume(uid)


def test_verdicts_of_old_snapshots_are_let_go() -> None:
    """A fit verdict holds its snapshot: only the newest two generations are kept, whatever the LRU size."""
    state = ClusterState(mix_refresh_s=1e9)
    state.replace("nodes", demo_objects())
    state.replace("pods", [])
    engine = Engine(cache_size=256)
    d = Demand.whole(1)
    for step in range(6):
        view = state.view()
        got = engine.fit(view, d)
        assert engine.fit(view, d) is got  # the same generation: remembered
        state.assume(f"p-{step}", Placement("t4-0" if step % 2 else "t4-1", gpus=(step // 2,)), None)
    gens = engine.cache.generations
    assert len(gens) == 2 and gens[1] - gens[0] == 1 and gens[1] == view.snapshot.generation
