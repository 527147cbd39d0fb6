"""The NodeNames list read as raw bytes (wire.ExtenderArgs.raw): any body means exactly what the full
JSON parse says it means, and a list seen before is recognised by its bytes without being parsed."""

from __future__ import annotations

import orjson
import pytest
from extender_support import args, gpu_cluster, pod, post, serve
from hypothesis import given
from hypothesis import strategies as st

from scheduler.extender import wire
from scheduler.extender.verdicts import Engine
from scheduler.state.cluster import ClusterState
from scheduler.state.standalone import demo_objects

# names as JSON may carry them: plain DNS names, and anything orjson escapes (quotes, backslashes, controls)
NAMES = st.lists(st.one_of(st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True), st.text(max_size=8)),
                 max_size=20)
SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=10)
JSONISH = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=10), kids,
                                                                                          max_size=3), max_leaves=12)


def _full(body: bytes) -> tuple[object, object] | str:
    """What the plain parse makes of a body: (Pod, NodeNames), or the WireError's text."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(doc, dict) or not isinstance(doc.get("Pod"), dict):
        return "bad shape"
    return doc["Pod"], doc.get("NodeNames")


def _fast(body: bytes) -> tuple[object, object] | str:
    try:
        a = wire.parse_args(body)
        return a.pod, (a.names if a.items is None else None)
    except wire.WireError as e:
        return "not JSON" if "not JSON" in str(e) else "bad shape"


@given(st.dictionaries(st.text(max_size=10), JSONISH, max_size=4), NAMES, st.sampled_from(["last", "first", "twice"]))
def test_any_body_means_what_the_full_parse_says(extra: dict[str, object], names: list[str], where: str) -> None:
    p = pod("w", {"nvidia.com/gpu": "1"})
    rest = {k: v for k, v in extra.items() if k not in ("Pod", "NodeNames", "Nodes")}
    if where == "last":
        body = orjson.dumps({"Pod": p, **rest, "Nodes": None, "NodeNames": names})
    elif where == "first":
        body = orjson.dumps({"NodeNames": names, "Pod": p, **rest})
    else:  # a duplicate key: the last one counts, as in orjson (and Go's encoding/json)
        body = orjson.dumps({"Pod": p, "NodeNames": ["decoy"], **rest}).removesuffix(b"}") + \
            b',"NodeNames":' + orjson.dumps(names) + b"}"
    want = _full(body)
    assert _fast(body) == want
    if where == "last":
        assert wire.parse_args(body).raw == orjson.dumps(names)


@pytest.mark.parametrize("body", [
    b'{"Pod":{},"NodeNames":["a",]}',  # the array is not JSON: a 400 when it is read
    b'{"Pod":{},"NodeNames":["a"]]}',
    b'{,"NodeNames":["a"]}',  # the rest is not an object with members
    b'{"Pod":{},"X":{"NodeNames":["a"]}',  # the key inside another object; braces unbalanced
    b'{"Pod":{} "NodeNames":["a"]}',
])
def test_bodies_that_are_not_json_are_refused(body: bytes) -> None:
    assert _full(body) == "not JSON"
    with pytest.raises(wire.WireError):
        a = wire.parse_args(body)
        a.names  # noqa: B018 - the list is read lazily


def test_the_cap_holds_before_the_list_is_parsed() -> None:
    p = pod("w", {"nvidia.com/gpu": "1"})
    body = orjson.dumps({"Pod": p, "Nodes": None, "NodeNames": [f"n{i}" for i in range(11)]})
    with pytest.raises(wire.TooMany):
        wire.parse_args(body, max_nodes=10).names  # noqa: B018 - the list is read lazily
    broken = body.removesuffix(b"]}") + b',}]}'  # would fail to parse, but the count comes first
    with pytest.raises(wire.TooMany):
        wire.parse_args(broken, max_nodes=10).names  # noqa: B018
    assert wire.parse_args(body, max_nodes=11).names == [f"n{i}" for i in range(11)]


def test_a_list_sent_again_is_not_parsed_and_prioritize_reuses_filters_list() -> None:
    nodes = demo_objects()
    names = [n["metadata"]["name"] for n in nodes]
    state = ClusterState(mix_refresh_s=1e9)
    state.replace("nodes", nodes)
    state.replace("pods", [])
    view = state.view()
    engine = Engine()
    p = pod("w", {"nvidia.com/gpu": "2"})
    req = state.request(p)
    first = wire.parse_args(orjson.dumps(args(p, names)))
    table = engine.table(view, first)
    body, _ = engine.filter_answer(view, req, "", table, first)
    again = wire.parse_args(orjson.dumps(args(p, names)))
    assert engine.table(view, again) is table
    assert again._names is None  # recognised by its bytes, never parsed
    passed = orjson.loads(body)["NodeNames"]
    cut = wire.parse_args(orjson.dumps(args(p, passed)))
    sub = engine.table(view, cut, p["metadata"]["uid"])
    assert cut._names is None and list(sub.names) == passed
    assert sub.rows.tolist() == [view.snapshot.static.index[n] for n in passed]
    other = wire.parse_args(orjson.dumps(args(p, passed[::-1])))
    assert list(engine.table(view, other, p["metadata"]["uid"]).names) == passed[::-1]


def test_over_http_a_repeated_list_gets_the_same_answers() -> None:
    nodes = demo_objects()
    names = [n["metadata"]["name"] for n in nodes]
    p, q = pod("w", {"nvidia.com/gpu": "1"}), pod("v", {"nvidia.com/gpu": "1"})
    with serve(nodes, [p, q]) as (client, _, _):
        a = post(client, "filter", args(p, names))
        b = post(client, "filter", args(q, names))
        assert a["NodeNames"] == b["NodeNames"] and a["FailedNodes"] == b["FailedNodes"]
        for who in (p, q):
            scores = post(client, "prioritize", args(who, a["NodeNames"]))
            assert [s["Host"] for s in scores] == a["NodeNames"]


def test_prioritize_answers_are_made_once_per_demand_list_and_generation() -> None:
    from extender_support import as_bound

    nodes = demo_objects()
    state = ClusterState(mix_refresh_s=1e9)
    state.replace("nodes", nodes)
    state.replace("pods", [])
    engine = Engine()
    view = state.view()
    names = list(view.snapshot.names)
    p, q, r = pod("p", {"nvidia.com/gpu": "1"}), pod("q", {"nvidia.com/gpu": "1"}), pod("r", {"nvidia.com/gpu": "2"})
    table = engine.table(view, wire.parse_args(orjson.dumps(args(p, names))))
    first = engine.prioritize_answer(view, state.request(p), table)
    assert engine.prioritize_answer(view, state.request(q), table) is first  # same demand: the same bytes
    assert engine.prioritize_answer(view, state.request(r), table) != first  # another demand scores anew
    best = max(orjson.loads(first), key=lambda e: e["Score"])["Host"]
    state.replace("pods", [as_bound(pod("x", {"nvidia.com/gpu": "8"}), best)])  # the node is full now
    view = state.view()
    table = engine.table(view, wire.parse_args(orjson.dumps(args(p, names))))
    after = orjson.loads(engine.prioritize_answer(view, state.request(q), table))
    assert {e["Host"]: e["Score"] for e in after}.get(best, 0) == 0


def test_past_full_up_to_nodes_failed_ones_are_named_only_when_none_passes() -> None:
    """kube-scheduler reads per-node reasons only when no node is left: past wire.FULL_UP_TO nodes an
    answer with passing nodes counts the others (metrics) without naming them; small lists (the
    recorded answers) and answers where nothing passes name every node."""
    for n, quiet in ((wire.FULL_UP_TO + 10, True), (wire.FULL_UP_TO - 10, False)):
        nodes = gpu_cluster(n)
        names = [x["metadata"]["name"] for x in nodes]
        a100 = pod("a", {"nvidia.com/gpu": "1"}, annotations={"gpupack.io/gpu-model": "A100-SXM4-80GB"})
        huge = pod("h", {"nvidia.com/gpu": "9"})
        with serve(nodes, [a100, huge], shortlist=0) as (client, _, _):  # every fitting node passes
            got = post(client, "filter", args(a100, names))
            assert got["NodeNames"] == names[0::2]
            assert (got["FailedAndUnresolvableNodes"] == {}) is quiet
            if not quiet:
                assert sorted(got["FailedAndUnresolvableNodes"]) == names[1::2]
            assert got["FailedNodes"] == {}
            none = post(client, "filter", args(huge, names))
            assert none["NodeNames"] == []
            assert len(none["FailedNodes"]) + len(none["FailedAndUnresolvableNodes"]) == n
            metrics = client.get("/metrics").text
            assert 'gpupack_filter_rejections_total{reason="wrong_model"}' in metrics
