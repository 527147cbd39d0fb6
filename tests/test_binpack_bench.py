"""The solver latency benchmark runs end to end on a small cluster (figures, not timings, are checked)."""

from __future__ import annotations

import math

import pytest

from benchmarks.solver_latency import KINDS, main, run_solver_latency


def test_run_solver_latency_reports_every_figure() -> None:
    res = run_solver_latency(nodes=40, gpus_per_node=8, repeats=3, seed=1)
    assert res["nodes"] == 40 and res["gpus"] == 320
    assert 0.2 < res["gpus_booked_frac"] < 0.9  # "half full"
    assert 0 < res["snapshot_mb"] < 1
    for name in KINDS:
        for key in (f"fit_score_p50_ms.{name}", f"fit_score_p99_ms.{name}", f"fit_score_full_p50_ms.{name}",
                    f"fit_score_full_p99_ms.{name}"):
            assert math.isfinite(res[key]) and res[key] > 0, key  # each figure measured, none missing
        assert 0 <= res[f"fits_nodes.{name}"] <= 40
    for name in ("whole-2", "share-25%", "mig-1g.10gb"):
        assert math.isfinite(res[f"allocate_us.{name}"]) and res[f"release_us.{name}"] > 0


def test_main_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--nodes", "20", "--repeats", "2", "--fresh-malloc"])
    out = capsys.readouterr().out
    assert "whole-8-nvlink" in out and "allocate mig-1g.10gb" in out and "20 nodes" in out
    assert "after a bind" in out and "nothing remembered" in out
