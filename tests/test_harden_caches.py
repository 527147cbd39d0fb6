"""Issue 17, defect 3: caches are bounded by what they hold, not by a count of entries.

The parsed-pod cache kept 4,096 raw pod bodies; with 256 KiB of annotations each that is a gigabyte
(benchmarks/cache_rss.py measured +1,038 MiB before, +6 MiB after). It now keeps only what the verbs
need; raw pods are kept only in demo/standalone mode (bind adopts them), bounded by their JSON size.
"""

from __future__ import annotations

import orjson
from extender_support import pod

from benchmarks.cache_rss import run
from scheduler.extender.cycle import Lru
from scheduler.state.cluster import ClusterState

BLOB = "x" * (256 * 1024 - 20)


def _big(i: int) -> dict:
    return pod(f"big{i}", {"nvidia.com/gpu": "1"}, annotations={"example.com/blob": BLOB})


def test_the_verbs_cache_keeps_no_raw_pod_in_live_mode() -> None:
    state = ClusterState()
    for i in range(8):
        assert state.request(_big(i)).managed
    assert state.raw_pod("uid-big0") is None and state.request_for("uid-big7") is not None
    assert all(len(hit.error) <= 1024 and not hasattr(hit, "raw") for hit in state._requests.values())


def test_demo_mode_raw_pods_are_bounded_by_bytes() -> None:
    cap = 1024 * 1024
    state = ClusterState(keep_raw=True, raw_cache_bytes=cap)
    for i in range(16):
        state.request(_big(i))
    kept = [i for i in range(16) if state.raw_pod(f"uid-big{i}") is not None]
    assert kept and kept == list(range(16 - len(kept), 16))  # the newest, as many as fit
    assert sum(len(orjson.dumps(state.raw_pod(f"uid-big{i}"))) for i in kept) <= cap
    assert state.request_for("uid-big0") is not None  # the parsed request outlives its raw body


def test_lru_weight_bound_evicts_oldest_and_refuses_oversized() -> None:
    lru = Lru(100, len, 10)
    lru.put("a", "xxxx")
    lru.put("b", "xxxx")
    lru.put("c", "xxxx")  # 12 > 10: "a" goes
    assert list(lru) == ["b", "c"] and lru.weight == 8
    lru.put("d", "x" * 11)  # heavier than the whole cache: not kept
    assert "d" not in lru and lru.weight == 8
    lru.put("b", "x")  # replacing an entry re-weighs it
    assert lru.weight == 5 and list(lru) == ["c", "b"]


def test_the_benchmark_reports_rss() -> None:
    r = run(pods=32, annotation_kib=256, mode="live")
    assert r["pods"] == 32 and r["rss_after_mib"] > 0 and r["sent_mib"] == 8.0
