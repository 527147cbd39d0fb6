"""The score cache refreshes only the nodes a bind changed, and gives exactly what a full score gives."""

from __future__ import annotations

import numpy as np

from binpack import Demand, Mix, Placement, TaskClass, score
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
            view = state.view()
            view = type(view)(view.snapshot, view.invalid, mix, view.ready, view.changed_since)
            engine.values(view, d)  # cached at this generation
            state.assume(f"{d.kind.value}-{step}", p, None)
            view2 = state.view()
            view2 = type(view2)(view2.snapshot, view2.invalid, mix, view2.ready, view2.changed_since)
            assert view2.changed_since(view.snapshot.generation) == {p.node}
            got = engine.values(view2, d)
            want = score(engine.fit(view2, d), mix).value
            assert np.array_equal(got, want)
        for uid in list(state.assumed()):
            state.unassume(uid)
