"""Issue 17: the captured kube-scheduler bodies, mutated, through the real app for every verb.

Every leaf (and every object or list) of a fixture body from tests/data/shared/fixtures/extender may be
replaced by null, a value of another type, a huge or negative number, a long string or a bad
quantity. Whatever arrives: no 5xx, no "internal error", always the verb's result type; a value of
the wrong type where the wire format or a Pod has an object, a list or a string is a 400; and a
rejected request (4xx) leaves the cluster state (ledger, assumptions, learned mix) as it was.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from extender_support import fixture_nodes, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SHARED

FIXTURES = SHARED / "fixtures" / "extender"
BODIES = {
    "filter": ["filter-nodenames-request.json", "filter-nodes-request.json",
               "filter-gpu-memory-ignoredbyscheduler-nodenames-request.json",
               "filter-mig-single-feasible-node-request.json"],
    "prioritize": ["prioritize-nodenames-request.json", "prioritize-nodes-request.json"],
    "bind": ["bind-request.json", "bind-ncc-request.json"],
    "preempt": ["preempt-nodenametovictims-request.json", "preempt-nodenametometavictims-request.json"],
}
VALUES = st.one_of(
    st.none(), st.booleans(), st.just({}), st.just([]), st.just([1, "a", None]), st.just({"a": [None]}),
    st.integers(-2**70, 2**70), st.sampled_from([-1, -2**63, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False), st.just("x" * 100_000), st.text(max_size=20),
    st.sampled_from(["99999999999999999999999", "-5", "1Qi", "1e999", "NaN", "1e30", "9E", "0.5m", "", " "]),
)
def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in the document (objects' keys, lists' indexes), depth first, the root excluded."""
    if isinstance(doc, dict):
        items: Any = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        return
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    at = out
    for k in path[:-1]:
        at = at[k]
    at[path[-1]] = value
    return out


def _wrong_shape(verb: str, doc: dict[str, Any]) -> bool:
    """Whether the (mutated) body has a value of the wrong type where the wire format or a Pod fixes one:
    then the answer must be a 400."""
    if verb == "bind":
        vals = [doc.get(k) for k in ("PodNamespace", "PodName", "PodUID", "Node")]
        return not all(isinstance(v, str) for v in vals) or not all(vals[1:])
    pod = doc.get("Pod")
    if not isinstance(pod, dict):
        return True
    meta, spec = pod.get("metadata"), pod.get("spec")
    if not isinstance(meta, dict | None) or not isinstance(spec, dict | None):
        return True
    if isinstance(meta, dict) and not isinstance(meta.get("annotations"), dict | None):
        return True
    if isinstance(spec, dict) and not isinstance(spec.get("containers"), list | None):
        return True
    if verb == "preempt":
        full, metas = doc.get("NodeNameToVictims"), doc.get("NodeNameToMetaVictims")
        src = full if full is not None else metas
        return not isinstance(src, dict) or not all(isinstance(v, dict) for v in src.values())
    names = doc.get("NodeNames")
    if names is not None:
        return not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    return not isinstance(doc.get("Nodes"), dict)


def _state(state: Any) -> tuple[Any, ...]:
    with state.lock:
        return (dict(state.ledger.bookings), set(state.ledger.assumed), state._learner._version,
                state.ledger.snapshot().generation)


def _check_result(verb: str, status: int, body: bytes, what: object = None) -> None:
    doc = orjson.loads(body)
    if verb == "prioritize":
        assert isinstance(doc, list)
        assert all(set(h) == {"Host", "Score"} and 0 <= h["Score"] <= 10 for h in doc)
        return
    assert isinstance(doc, dict)
    error = doc.get("Error", "")
    assert "internal error" not in error, (what, error[:500])
    if verb == "filter":
        assert set(doc) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
    elif verb == "preempt":
        assert isinstance(doc["NodeNameToMetaVictims"], dict)
    if status != 200:
        assert error.startswith("gpupack: ")


@pytest.fixture(scope="module")
def app() -> Iterator[tuple[Any, Any, Any]]:
    nodes = fixture_nodes(Path(SHARED))
    with serve(nodes, []) as served:
        yield served


_UIDS = itertools.count()
MUTATIONS = st.lists(st.tuples(st.integers(0, 10**6), VALUES), min_size=1, max_size=3)


@pytest.mark.parametrize("verb", list(BODIES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(which=st.integers(0, 3), mutations=MUTATIONS)
def test_mutated_fixture_bodies_never_break_the_extender(app: tuple[Any, Any, Any], verb: str, which: int,
                                                        mutations: list[tuple[int, Any]]) -> None:
    client, _api, state = app
    doc = orjson.loads((FIXTURES / BODIES[verb][which % len(BODIES[verb])]).read_bytes())
    if "Pod" in doc:  # a pod is parsed once per (UID, resourceVersion): each example is a new pod
        doc["Pod"]["metadata"]["uid"] = f"fuzz-{next(_UIDS)}"
    what = []  # (path, type of the new value): the failure message, without the (huge) body
    for pick, value in mutations:
        paths = list(_paths(doc))
        path = paths[pick % len(paths)]
        what.append((path, type(value).__name__))
        doc = _set(doc, path, value)
    before = _state(state)
    r = client.post(f"/{verb}", content=json.dumps(doc).encode())  # json: integers past 64 bits too
    assert r.status_code in (200, 400, 413), (what, r.text[:500])
    _check_result(verb, r.status_code, r.content, what)
    if _wrong_shape(verb, doc):
        assert r.status_code == 400, (what, r.text[:500])
    if r.status_code >= 400:
        assert _state(state) == before


@pytest.mark.parametrize("verb", list(BODIES))
def test_not_json_and_wrong_top_level_types_are_400(app: tuple[Any, Any, Any], verb: str) -> None:
    client, _api, state = app
    before = _state(state)
    for body in (b"", b"not json", b"[]", b"null", b"7", b'"Pod"', b'{"Pod": []}'):
        r = client.post(f"/{verb}", content=body)
        assert r.status_code == 400, (body, r.text)
        _check_result(verb, r.status_code, r.content)
    assert _state(state) == before
