"""The prioritize answer is assembled from cached byte pieces: it must decode to exactly {Host, Score}
per name, in order, for any names and any subsequence (as prioritize gets what filter passed)."""

from __future__ import annotations

import numpy as np
import orjson
from extender_support import args, pod, post, serve
from hypothesis import given
from hypothesis import strategies as st

from scheduler.extender import wire
from scheduler.state.standalone import demo_objects


@given(st.lists(st.text(min_size=1, max_size=12), max_size=30, unique=True), st.data())
def test_template_and_subsets_decode_exactly(names: list[str], data: st.DataObject) -> None:
    t = wire.score_template([wire.score_part(n) for n in names])
    scores = np.asarray(data.draw(st.lists(st.integers(0, 10), min_size=len(names), max_size=len(names))), np.int64)
    assert orjson.loads(wire.prioritize_result(t, scores)) == [
        {"Host": n, "Score": int(s)} for n, s in zip(names, scores, strict=True)]
    keep = sorted(data.draw(st.sets(st.integers(0, max(len(names) - 1, 0)), max_size=len(names))) if names else [])
    sub = wire.sub_template(t, np.asarray(keep, np.int64))
    assert orjson.loads(wire.prioritize_result(sub, scores[keep])) == [
        {"Host": names[k], "Score": int(scores[k])} for k in keep]


@given(st.lists(st.text(min_size=1, max_size=12), max_size=30, unique=True), st.data())
def test_small_answers_list_every_node_in_order(names: list[str], data: st.DataObject) -> None:
    scores = np.asarray(data.draw(st.lists(st.integers(0, 10), min_size=len(names), max_size=len(names))), np.int64)
    assert orjson.loads(wire.prioritize_result(wire.HostList(names), scores)) == [
        {"Host": n, "Score": int(s)} for n, s in zip(names, scores, strict=True)]


@given(st.lists(st.integers(0, 10), min_size=wire.FULL_UP_TO + 1, max_size=wire.FULL_UP_TO + 40),
       st.lists(st.integers(0, 100), min_size=wire.FULL_UP_TO + 40, max_size=wire.FULL_UP_TO + 40))
def test_large_answers_keep_kube_schedulers_ranking(scores: list[int], own: list[int]) -> None:
    """kube-scheduler's total: its own score + weight x 10 x the extender's score, 0 for a node not
    listed. Every node's total shifts by the same amount, so the ranking (and the best) is unchanged."""
    names = [f"n{i}" for i in range(len(scores))]
    got = orjson.loads(wire.prioritize_result(wire.HostList(names), np.asarray(scores, np.int64)))
    listed = {e["Host"]: e["Score"] for e in got}
    assert len(listed) == sum(s > min(scores) for s in scores)
    assert all(0 < v <= 10 for v in listed.values())
    full = [o + 50 * s for o, s in zip(own, scores, strict=False)]
    sparse = [o + 50 * listed.get(n, 0) for o, n in zip(own, names, strict=False)]
    assert all(f - s == full[0] - sparse[0] for f, s in zip(full, sparse, strict=True))


def test_a_uniform_large_answer_lists_only_the_best() -> None:
    names = [f"n{i}" for i in range(5000)]
    scores = np.full(5000, 9, np.int64)
    scores[1234] = 10
    assert orjson.loads(wire.prioritize_result(wire.HostList(names), scores)) == [{"Host": "n1234", "Score": 1}]
    assert orjson.loads(wire.prioritize_result(wire.HostList(names), np.full(5000, 5, np.int64))) == []


def test_prioritize_after_filter_scores_exactly_the_passed_nodes() -> None:
    nodes = demo_objects()
    names = [n["metadata"]["name"] for n in nodes]
    p = pod("w", {"nvidia.com/gpu": "8"})
    with serve(nodes, [p]) as (client, _, _):
        passed = post(client, "filter", args(p, names))["NodeNames"]
        assert 0 < len(passed) < len(names)
        for asked in (passed, passed[::-1], [*passed[:1], "t4-0"]):  # as filtered, reordered, changed
            scores = post(client, "prioritize", args(p, asked))
            assert [s["Host"] for s in scores] == asked
            assert all(s["Score"] == 0 for s in scores if s["Host"] == "t4-0")


def test_a_reordered_node_list_is_resolved_afresh_and_answered_alike() -> None:
    """kube-scheduler filters in parallel: the same nodes come in another order pod after pod."""
    nodes = demo_objects()
    names = [n["metadata"]["name"] for n in nodes]
    p = pod("w", {"nvidia.com/gpu": "2"})
    with serve(nodes, [p]) as (client, _, _):
        first = post(client, "filter", args(p, names))
        again = post(client, "filter", args(p, names[::-1]))
        assert again["NodeNames"] == [n for n in names[::-1] if n in set(first["NodeNames"])]
        assert again["FailedNodes"] == first["FailedNodes"]
        bad = client.post("/filter", content=orjson.dumps({"Pod": p, "NodeNames": [*names[:2], 7]}))
        assert bad.status_code == 400
        bad = client.post("/filter", content=orjson.dumps({"Pod": p, "NodeNames": [*names[:2], [1]]}))
        assert bad.status_code == 400


def test_a_large_list_seen_again_is_answered_in_full_from_its_template() -> None:
    from binpack import Gpu, Node
    from binpack.topology import nvswitch
    from scheduler.state.standalone import node_object

    nv, pc = nvswitch(8, 12)
    nodes = [node_object(Node(f"n{i:04d}", tuple(Gpu(g, "A100-SXM4-80GB", uuid=f"G-{i}-{g}") for g in range(8)),
                              128_000, 1_000_000, nv, pc)) for i in range(wire.FULL_UP_TO + 50)]
    names = [n["metadata"]["name"] for n in nodes]
    p = pod("w", {"nvidia.com/gpu": "1"})
    with serve(nodes, [p], shortlist=0) as (client, _, _):  # every fitting node passes
        for order, full in ((names[::-1], False), (names, False), (names, True)):  # the third sees a known list
            passed = post(client, "filter", args(p, order))["NodeNames"]
            assert passed == order
            scores = post(client, "prioritize", args(p, passed))
            assert ([s["Host"] for s in scores] == passed) is full
            assert sum(s["Score"] == max(t["Score"] for t in scores) for s in scores) == 1
