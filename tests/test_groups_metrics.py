"""Metrics of pod groups (scheduler/groups/metrics.py): every outcome counter exists at 0 before anything
happens, the planning time is observed per plan, and the gauge counts groups waiting and reserved at scrape
time (a scrape also closes a plan whose members are all bound)."""

from __future__ import annotations

from groups_support import Sim, member, nodes


def test_counters_start_at_zero_and_the_gauge_follows_a_group() -> None:
    sim = Sim(nodes(2))
    for e in ("planned", "unplaceable", "bound", "expired"):
        assert sim.registry.get_sample_value("gpupack_pod_groups_total", {"event": e}) == 0.0
    a, b = member("job", 0, 2), member("job", 1, 2)
    sim.create([a])
    sim.filter(a)
    assert (sim.metric("gpupack_pod_groups", state="waiting"), sim.metric("gpupack_pod_groups", state="reserved")) \
        == (1, 0)
    sim.create([b])
    sim.filter(a)
    assert (sim.metric("gpupack_pod_groups", state="waiting"), sim.metric("gpupack_pod_groups", state="reserved")) \
        == (0, 1)
    assert sim.metric("gpupack_pod_group_planning_seconds_count") == 1
    assert sim.schedule(a) and sim.schedule(b)
    assert sim.metric("gpupack_pod_groups", state="reserved") == 0  # the scrape closed the plan
    assert sim.metric("gpupack_pod_groups_total", event="bound") == 1
