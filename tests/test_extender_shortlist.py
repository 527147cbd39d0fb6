"""Filter's shortlist (scheduler/extender/shortlist.py): with `shortlist=k`, filter passes only the k
nodes gpupack packs best (ties kept), so kube-scheduler scores k nodes instead of thousands; pods with
soft preferences of their own, and pods no node fits, are answered exactly as without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from extender_support import args, as_bound, fixture_nodes, pod, post, serve
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.scheduler_parts import node_objects
from scheduler.extender.shortlist import shortlist
from scheduler.translate.pod import read_pod

NODES = node_objects(24)
NAMES = [n["metadata"]["name"] for n in NODES]
# a few nodes partly used, so packing values differ: the fullest that still fits pack best
USED = [as_bound(pod(f"used-{i}", {"nvidia.com/gpu": str(g)}), NAMES[i]) for i, g in
        ((0, 6), (1, 4), (2, 4), (3, 7), (5, 2))]


@given(st.lists(st.sampled_from([-3.0, 0.0, 0.5, 1.0, 2.0, 7.5]), max_size=40), st.integers(0, 45))
def test_shortlist_is_the_best_k_with_their_ties_in_order(values: list[float], keep: int) -> None:
    v = np.asarray(values, float)
    got = shortlist(v, keep)
    assert got.tolist() == sorted(got.tolist())  # the order of the request's node list is kept
    if keep <= 0 or len(v) <= keep:
        assert got.tolist() == list(range(len(v)))
        return
    assert len(got) >= keep
    cut = sorted(values, reverse=True)[keep - 1]
    assert got.tolist() == [i for i, x in enumerate(values) if x >= cut]  # every tie of the k-th kept


def test_filter_passes_the_best_nodes_and_prioritize_agrees() -> None:
    p = pod("ask-1", {"nvidia.com/gpu": "1"})
    with serve(NODES, USED) as (client, _, _):
        full = post(client, "prioritize", args(p, NAMES))
        best = max(s["Score"] for s in full)
        top = {s["Host"] for s in full if s["Score"] == best}
    with serve(NODES, USED, shortlist=3) as (client, _, _):
        res = post(client, "filter", args(p, NAMES))
        passed = res["NodeNames"]
        assert 3 <= len(passed) < len(NAMES) and not res["FailedNodes"] and not res["Error"]
        assert top <= set(passed)  # the node gpupack scores best without a shortlist is on it
        assert passed == [n for n in NAMES if n in set(passed)]  # in kube-scheduler's order
        scores = post(client, "prioritize", args(p, passed))
        assert {s["Host"] for s in scores if s["Score"] == 10} <= top
    # the shortlist is the head of gpupack's own ranking: no node left out scores above one kept
    by = {s["Host"]: s["Score"] for s in full}
    assert min(by[n] for n in passed) >= max(by[n] for n in NAMES if n not in passed)


def test_soft_preferences_and_failures_are_answered_as_without_shortlist(shared: Path) -> None:
    soft = pod("soft", {"nvidia.com/gpu": "1"})
    soft["spec"]["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": {"app": "x"}}}}]}}
    huge = pod("huge", {"nvidia.com/gpu": "9"})
    with serve(NODES, USED) as (client, _, _):
        plain = [post(client, "filter", args(p, NAMES)) for p in (soft, huge)]
    with serve(NODES, USED, shortlist=2) as (client, _, _):
        short = [post(client, "filter", args(p, NAMES)) for p in (soft, huge)]
    assert short == plain
    assert plain[0]["NodeNames"] == NAMES  # every node has a free GPU: all pass, as without the shortlist
    failed = {**plain[1]["FailedNodes"], **plain[1]["FailedAndUnresolvableNodes"]}
    assert not plain[1]["NodeNames"] and sorted(failed) == NAMES  # no fit: every node's reason, as before


def test_default_is_off_and_the_fixture_cluster_answers_the_same(shared: Path) -> None:
    nodes = fixture_nodes(shared)
    names = [n["metadata"]["name"] for n in nodes]
    p = pod("one", {"nvidia.com/gpu": "1"})
    with serve(nodes) as (client, _, _):
        off = post(client, "filter", args(p, names))
    with serve(nodes, shortlist=10) as (client, _, _):
        wide = post(client, "filter", args(p, names))
    assert off == wide and len(off["NodeNames"]) == 3  # fewer fitting nodes than the shortlist: all pass


def test_soft_is_read_from_each_kind_of_preference() -> None:
    def with_spec(**spec: object) -> bool:
        p = pod("p", {"nvidia.com/gpu": "1"})
        p["spec"].update(spec)
        return read_pod(p).soft

    preferred = {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}
    required: dict[str, object] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
    assert not with_spec()
    assert not with_spec(affinity={"nodeAffinity": required})  # a hard rule: kube-scheduler's filters apply it
    assert not with_spec(topologySpreadConstraints=[{"whenUnsatisfiable": "DoNotSchedule", "maxSkew": 1}])
    for kind in ("nodeAffinity", "podAffinity", "podAntiAffinity"):
        assert with_spec(affinity={kind: preferred})
    assert with_spec(topologySpreadConstraints=[{"whenUnsatisfiable": "ScheduleAnyway", "maxSkew": 1}])
    assert with_spec(affinity="odd")  # unreadable: the safe side
    assert with_spec(topologySpreadConstraints={"odd": 1})
