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
