"""benchmarks/group_latency.py on a small cluster: both measurements run, every group is reserved whole and
released again, and the command prints its figures (table and JSON)."""

from __future__ import annotations

import orjson
import pytest

from benchmarks.group_latency import build_half_full, main, run_group_latency


def test_small_run_plans_every_group_and_reports() -> None:
    r = run_group_latency(n_nodes=80, members=4, gpus=8, plans=3, plan_s=0.5)
    b, e = r["binpack"], r["extender"]
    assert sum(b["status"].values()) == 3 and set(b["status"]) <= {"optimal", "feasible", "timed-out-greedy"}
    assert b["plan_ms"]["n"] == 3 and all(b["plan_ms"][k] > 0 for k in ("p50", "p99", "max"))  # 3 plans timed
    assert b["nodes_used_median"] == 4.0  # 8 GPUs each: one whole free node per member
    assert 0.4 < b["gpus_booked_share"] < 0.6
    assert e["groups_reserved"] == 3 and e["filter_pinned_ms"]["n"] == 9  # 3 other members per group
    assert r["margin_to_http_timeout"] > 1


def test_the_cluster_is_half_full_with_whole_free_nodes() -> None:
    nodes, pods = build_half_full(90, seed=1)
    assert len(nodes) == 90 and 60 <= len(pods) < 90
    assert all(p["spec"]["nodeName"] and "gpupack.io/devices" in p["metadata"]["annotations"] for p in pods)


@pytest.mark.parametrize("as_json", [True, False])
def test_command_prints_figures(as_json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--nodes", "40", "--members", "2", "--plans", "2"] + (["--json"] if as_json else []))
    out = capsys.readouterr().out
    if as_json:
        assert orjson.loads(out)["binpack"]["plan_ms"]["n"] == 2
    else:
        assert "binpack place_group" in out and "httpTimeout" in out
