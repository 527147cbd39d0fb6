"""filter's shortlist found without resolving the request's list (shortlist.pick via
Engine.shortlisted) names exactly the nodes the full path would, in the same order."""

from __future__ import annotations

import functools

import numpy as np
import orjson
from extender_support import args, as_bound, gpu_cluster, pod, serve
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.extender import wire
from scheduler.extender.shortlist import pick
from scheduler.extender.verdicts import Engine
from scheduler.state.cluster import ClusterState, StateView

N = wire.FULL_UP_TO + 60
DEMANDS = [{"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": "4"}, {"nvidia.com/gpu": "8"},
           {"gpupack.io/gpu-memory": "20000", "gpupack.io/gpu-compute": "25"}]


@functools.cache
def _state() -> tuple[ClusterState, StateView, list[str]]:
    """N nodes, each with 0..7 of its GPUs taken by a bound pod (so the packing values differ)."""
    nodes = gpu_cluster(N)
    names = [n["metadata"]["name"] for n in nodes]
    rng = np.random.default_rng(7)
    used = [as_bound(pod(f"u{i}", {"nvidia.com/gpu": str(k)}), names[i])
            for i, k in enumerate(rng.integers(0, 8, N).tolist()) if k]
    state = ClusterState(mix_refresh_s=1e9)
    state.replace("nodes", nodes)
    state.replace("pods", used)
    return state, state.view(), names


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(DEMANDS) - 1), st.integers(1, 12), st.randoms(use_true_random=False),
       st.floats(0.5, 1.0), st.booleans())
def test_the_quick_shortlist_is_the_full_paths(d: int, keep: int, rnd: object, share: float, stranger: bool) -> None:
    state, view, names = _state()
    asked = [n for n in names if rnd.random() < share]  # type: ignore[attr-defined]
    rnd.shuffle(asked)  # type: ignore[attr-defined]
    if stranger:
        asked.insert(len(asked) // 2, "not-a-node-of-this-cluster")
    if len(asked) <= wire.FULL_UP_TO:
        return
    p = pod(f"p{d}", DEMANDS[d])
    req = state.request(p)
    a = wire.parse_args(orjson.dumps(args(p, asked)))
    engine = Engine(keep=keep)
    assert engine.quick_list(view, a)
    fast = engine.shortlisted(view, req, a)
    full = engine.filter(view, req, "", engine.names(view, asked))
    if fast is None:  # no node of the list fits (the probe cannot run out on this cluster)
        assert not full.passed
        return
    got = orjson.loads(fast)
    assert got["NodeNames"] == full.passed_names
    assert got["FailedNodes"] == {} and got["FailedAndUnresolvableNodes"] == {}


def test_pick_gives_up_rather_than_guess() -> None:
    raw = orjson.dumps([f"n{i}" for i in range(10)])
    opens = wire.plain_strings(raw)
    assert opens is not None
    quoted = [b'"' + f"n{i}".encode() + b'"' for i in range(200)]
    values = -np.arange(200, dtype=float)
    values[:150] = -np.inf  # only nodes 150..199 fit: none of them is in the list
    assert pick(raw, opens, values, quoted, 3) is None
    values = np.full(200, 1.0)  # everything ties: past the probe, more ties may follow
    assert pick(raw, opens, values, quoted, 3) is None
    values = -np.arange(200, dtype=float)
    assert pick(raw, opens, values, quoted, 3) == [0, 1, 2]
    sub = orjson.dumps(["n12", "n1"])  # "n1" must match a whole name, never the start of "n12"
    assert pick(sub, wire.plain_strings(sub), values, quoted, 1) == [1]  # type: ignore[arg-type]


def test_pods_the_shortlist_must_not_answer_quickly_take_the_full_path() -> None:
    state, view, names = _state()
    engine = Engine(keep=8)
    soft = pod("s", {"nvidia.com/gpu": "1"})
    soft["spec"]["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}
    huge = pod("h", {"nvidia.com/gpu": "9"})  # fits nowhere: every node's reason is due
    cpu = pod("c")  # asks for nothing gpupack manages
    for p in (soft, cpu):
        a = wire.parse_args(orjson.dumps(args(p, names)))
        assert engine.quick_list(view, a) and engine.shortlisted(view, state.request(p), a) is None
    a = wire.parse_args(orjson.dumps(args(huge, names)))
    assert engine.shortlisted(view, None, a) is None


def test_over_http_a_large_cluster_gets_the_shortlist_and_a_bad_list_a_400() -> None:
    nodes = gpu_cluster(N)
    names = [n["metadata"]["name"] for n in nodes]
    p = pod("w", {"nvidia.com/gpu": "1"})
    with serve(nodes, [p]) as (client, _, state):  # the default shortlist (8)
        got = client.post("/filter", content=orjson.dumps(args(p, names[::-1])))
        assert got.status_code == 200 and len(got.json()["NodeNames"]) == 8
        assert set(got.json()["NodeNames"]) <= set(names)
        assert 'gpupack_filter_answers_total{path="quick"} 1.0' in client.get("/metrics").text
        before = state.view().mix.version
        bad = orjson.dumps(args(p, names)).replace(b'"]}', b'",]}')
        assert client.post("/filter", content=bad).status_code == 400
        assert state.view().mix.version == before
        many = orjson.dumps(args(p, names * 200))
        assert client.post("/filter", content=many).status_code == 413


ASCII = st.one_of(st.from_regex(r"[a-z0-9.-]{1,6}", fullmatch=True),
                  st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=6))


@settings(max_examples=300)
@given(st.lists(ASCII, max_size=6), st.sampled_from(["as is", "spaced", "trailing comma", "cut", "nested"]))
def test_plain_strings_accepts_exactly_arrays_of_plain_strings(names: list[str], how: str) -> None:
    raw = orjson.dumps(names)
    raw = {"as is": raw, "spaced": raw.replace(b",", b", "), "trailing comma": raw[:-1] + b",]",
           "cut": raw[:-1], "nested": b"[" + raw + b"]"}[how]
    opens = wire.plain_strings(raw)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    # compact (as Go writes it), every element a non-empty string that needs no escape
    plain = isinstance(doc, list) and raw == orjson.dumps(doc) and all(
        isinstance(n, str) and n and orjson.dumps(n) == b'"' + n.encode() + b'"' and n.isprintable() for n in doc)
    assert (opens is not None) == plain
    if opens is not None:  # each name is the bytes between its opening quote and the next quote
        assert [raw[o + 1:raw.index(b'"', o + 1)].decode() for o in opens.tolist()] == doc
