"""The verbs' one cache (scheduler/extender/cycle.py) and binpack's typed memory (binpack/memo.py):
each store's invalidation rule, table-driven where it is a rule over generations."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

from binpack import Demand, Gpu, Mix, Node, Snapshot, TaskClass, allocate, fit, score
from binpack.memo import Bounded
from binpack.types import Placement
from scheduler.extender.cycle import Answer, AnswerKey, VerbCache

ROOT = Path(__file__).resolve().parents[1]


def _answer() -> Answer:
    return Answer(b"{}", {}, None)


@pytest.mark.parametrize(("asked", "kept"), [
    ([1], [1]),
    ([1, 2], [1, 2]),
    ([1, 2, 3], [2, 3]),  # a newer generation lets all but the previous one go
    ([3, 1], [3]),  # a request on an old view gets a cycle of its own, not kept
    ([3, 2], [2, 3]),  # the previous generation may still come (a request holding that view)
    ([1, 5], [5]),
])
def test_cycles_kept_are_the_newest_two_generations(asked: list[int], kept: list[int]) -> None:
    cache = VerbCache()
    for g in asked:
        assert cache.cycle(g).generation == g
    assert cache.generations == kept


def test_a_superseded_cycle_keeps_its_verdicts_but_drops_its_answers() -> None:
    cache = VerbCache()
    snap = Snapshot.build([Node("n", (Gpu(0, "T4"),), 1000, 1000)])
    old = cache.cycle(1)
    verdict = old.fit(Demand.whole(1), lambda: fit(snap, Demand.whole(1)))
    key = AnswerKey(object(), Demand.whole(1), False)  # type: ignore[arg-type]
    old.keep_answer(key, _answer())
    assert old.answer(key) is not None
    cache.cycle(2)
    assert old.answer(key) is None  # only the newest generation is asked for answers again
    assert old.fit(Demand.whole(1), lambda: pytest.fail("rebuilt")) is verdict


def test_a_new_layout_starts_with_empty_node_tables() -> None:
    cache = VerbCache()
    a = Snapshot.build([Node("n", (Gpu(0, "T4"),), 1000, 1000)])
    b = Snapshot.build([Node("n", (Gpu(0, "T4"),), 1000, 1000), Node("m", (), 1000, 1000)])
    first = cache.layout(a.static)
    assert cache.layout(a.static) is first
    assert cache.layout(allocate(a, Placement("n", (0,))).static) is first  # a bind keeps the layout
    assert cache.layout(b.static) is not first and cache.layout(b.static).static is b.static


def test_binpack_memory_lives_with_the_layout_and_the_mix() -> None:
    snap = Snapshot.build([Node(f"n{i}", (Gpu(0, "T4"), Gpu(1, "T4")), 8000, 32000) for i in range(4)])
    mix = Mix.of([(TaskClass(1, 1000), 1.0), (TaskClass(1, 500), 1.0)])
    score(fit(snap, Demand.whole(1)), mix)
    memory = snap.static.memo.per_mix[mix]
    assert memory.current is not None and len(memory.values) == 1
    assert mix.tables.groups is not None and mix.tables.ratios is not None
    other = Mix.of([(TaskClass(1, 1000), 1.0)])
    assert other.tables.groups is None and other not in snap.static.memo.per_mix  # a new mix starts empty


def test_bounded_store_drops_the_oldest() -> None:
    store: Bounded[int, str] = Bounded(2)
    for k in range(3):
        assert store.get_or_build(k, lambda k=k: str(k)) == str(k)  # type: ignore[misc]
    assert len(store) == 2
    assert store.get_or_build(0, lambda: "again") == "again"  # 0 went first


def test_binpack_keeps_no_module_level_cache() -> None:
    """Every cache keyed by a mix or a layout is a typed field of LayoutMemo or MixTables: no
    module-level WeakKeyDictionary (plan.py's _BY_KEY, a bounded memo of a pure function of values, aside)."""
    found = []
    for path in sorted((ROOT / "binpack").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            if isinstance(value, ast.Call) and "WeakKey" in ast.unparse(value.func):
                found.append(f"{path.name}: {ast.unparse(node)[:60]}")
    assert found == []


def test_pods_answered_alike_share_one_cut_list_for_prioritize() -> None:
    """Filter's answer is cached per (node list, demand) in the cycle; every pod given it gets the same
    Passed, so prioritize's list (and its answer template) is cut once, not per pod."""
    from extender_support import pod

    from scheduler.extender import wire
    from scheduler.extender.verdicts import Engine
    from scheduler.state.cluster import ClusterState
    from scheduler.state.standalone import demo_objects

    state = ClusterState(mix_refresh_s=1e9)
    state.replace("nodes", demo_objects())
    state.replace("pods", [])
    engine = Engine()
    view = state.view()
    names = list(view.snapshot.names)
    cut = []
    for i in range(3):
        p = pod(f"p{i}", {"nvidia.com/gpu": "1"})
        args = wire.parse_args(orjson.dumps({"Pod": p, "Nodes": None, "NodeNames": names}))
        passed = orjson.loads(engine.filter_answer(view, state.request(p), "", engine.names(view, args.names), args)[0])
        cut.append(engine.names(view, passed["NodeNames"], p["metadata"]["uid"]))
    assert cut[0] is cut[1] is cut[2] and len(cut[0].names) > 1
    assert list(cut[0].names) == passed["NodeNames"]
