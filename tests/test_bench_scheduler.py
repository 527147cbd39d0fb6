"""`gpupack bench scheduler`: everything but the cluster (the run itself needs a real control plane)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.scheduler_parts import (
    NoControlPlane,
    cpu_between,
    find_control_plane,
    histogram,
    node_objects,
    pod_object,
    pod_sizes,
    quantile,
    scheduler_config,
    summary,
    throughput,
)
from benchmarks.scheduler_profile import top_frames
from scheduler.cli import app


def test_without_a_control_plane_it_stops_with_a_clear_message_and_no_figure(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["bench", "scheduler", "--verify-dir", str(tmp_path / "none")])
    assert r.exit_code == 2
    out = " ".join(r.output.split())
    assert "no control plane at" in out and "No figures were made" in out
    assert "pods/s" not in out and "ratio" not in out


def test_find_control_plane_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kube-scheduler").write_text("")
    with pytest.raises(NoControlPlane, match=r"start-control-plane\.sh"):
        find_control_plane(tmp_path)


def test_pod_sizes_follow_the_issue_mix_exactly() -> None:
    sizes = pod_sizes(1000)
    assert {g: sizes.count(g) for g in (1, 2, 4, 8)} == {1: 850, 2: 70, 4: 50, 8: 30}
    assert pod_sizes(1000) == sizes and sizes != sorted(sizes)  # seeded, shuffled
    assert len(pod_sizes(7)) == 7


def test_objects_are_ready_gpu_nodes_and_pending_gpu_pods() -> None:
    node = node_objects(2)[1]
    assert node["metadata"]["name"] == "gpu-node-00001"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert node["status"]["conditions"][0] == {**node["status"]["conditions"][0], "type": "Ready", "status": "True"}
    assert "gpupack.io/gpu-inventory" in node["metadata"]["annotations"]
    pod = pod_object(3, 4)
    assert pod["spec"]["schedulerName"] == "gpupack-scheduler"
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "4"}


def test_scheduler_config_with_and_without_the_extender() -> None:
    import yaml

    plain = yaml.safe_load(scheduler_config(Path("/k"), None))
    assert plain["percentageOfNodesToScore"] == 100 and "extenders" not in plain
    assert plain["clientConnection"]["qps"] >= 1000
    ext = yaml.safe_load(scheduler_config(Path("/k"), 8899))["extenders"][0]
    assert ext["urlPrefix"] == "http://127.0.0.1:8899" and ext["weight"] == 5 and ext["nodeCacheCapable"]
    assert {ext[k] for k in ("filterVerb", "prioritizeVerb", "bindVerb", "preemptVerb")} == {
        "filter", "prioritize", "bind", "preempt"}


PROM = """# HELP x
x_bucket{result="scheduled",le="0.001"} 0
x_bucket{result="scheduled",le="0.002"} 50
x_bucket{result="scheduled",le="0.004"} 100
x_bucket{result="scheduled",le="+Inf"} 100
x_bucket{result="error",le="0.001"} 7
x_bucket{result="error",le="0.002"} 7
x_bucket{result="error",le="0.004"} 7
x_bucket{result="error",le="+Inf"} 7
"""


def test_histogram_quantiles_interpolate_like_prometheus() -> None:
    h = histogram(PROM, "x", result="scheduled")
    assert h == [(0.001, 0.0), (0.002, 50.0), (0.004, 100.0), (float("inf"), 100.0)]
    assert quantile(h, 0.5) == pytest.approx(0.002)
    assert quantile(h, 0.75) == pytest.approx(0.003)
    assert quantile(histogram(PROM, "x"), 1.0) == pytest.approx(0.004)
    assert quantile([], 0.5) is None


def test_cpu_and_throughput_over_the_bind_window() -> None:
    samples = [(0.0, 0.0), (1.0, 0.5), (2.0, 1.5)]
    assert cpu_between(samples, 0.5, 1.5) == pytest.approx(0.75)
    rate, t0, t1 = throughput([3.0, 1.0, 2.0, 5.0])
    assert (rate, t0, t1) == (0.75, 1.0, 5.0)
    s = summary({"plain": {"pods_per_s": 40.0}, "gpupack": {"pods_per_s": 34.0, "cpu_ms_per_pod": {"gpupack": 4.0}}})
    assert s["ratio"] == 0.85 and s["ratio_met"] and s["gpupack_cpu_met"]
    s = summary({"plain": {"pods_per_s": 40.0}, "gpupack": {"pods_per_s": 20.0},
                 "shortlist": {"pods_per_s": 36.0, "cpu_ms_per_pod": {"gpupack": 3.0}}})
    assert s["ratio"] == 0.5 and not s["ratio_met"]
    assert s["ratio_shortlist"] == 0.9 and s["ratio_shortlist_met"] and s["gpupack_cpu_ms_per_pod_shortlist"] == 3.0


def test_profile_top_counts_self_and_total_time() -> None:
    raw = ("main (app.py:1);handle (routes.py:10);fit (/x/site-packages/binpack/fit.py:5) 30\n"
           "main (app.py:1);handle (routes.py:12) 10\n")
    top = top_frames(raw)
    assert top["samples"] == 40
    assert top["self"][0] == ("fit (binpack/fit.py)", 75.0)
    assert ("handle (routes.py)", 100.0) in top["total"]


def test_a_control_plane_in_use_is_refused_not_taken_over(tmp_path: Path) -> None:
    import os

    from benchmarks.scheduler_bench import control_plane
    from benchmarks.scheduler_parts import ControlPlane

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "apiserver.pid").write_text(str(os.getpid()))  # a live process
    (tmp_path / "start-control-plane.sh").write_text("touch started\n")
    cp = ControlPlane(tmp_path)
    with pytest.raises(NoControlPlane, match="in use"), control_plane(cp):
        pass
    assert not (tmp_path / "started").exists()
