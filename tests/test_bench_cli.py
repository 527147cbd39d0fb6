"""`gpupack bench`: registered on the main CLI; packing and synthetic end to end on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from scheduler.cli import app

NODES = "sn,cpu_milli,memory_mib,gpu,model\na,64000,262144,4,T4\nb,64000,262144,8,G2\nc,8000,65536,2,P100\n"
PODS = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
        "p0,4000,8192,1,1000\np1,2000,4096,1,300\np2,2000,4096,1,500\np3,8000,16384,2,1000\np4,1000,1024,0,0\n")


def test_bench_is_a_group_of_the_main_cli() -> None:
    out = CliRunner().invoke(app, ["bench", "--help"])
    assert out.exit_code == 0 and "packing" in out.output and "synthetic" in out.output


def test_packing_writes_json_and_png(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text(NODES)
    (tmp_path / "p.csv").write_text(PODS)
    out = CliRunner().invoke(app, ["bench", "packing", "--nodes", str(tmp_path / "n.csv"), "--pods",
                                   str(tmp_path / "p.csv"), "--policies", "fgd,gpupack", "--seeds", "2",
                                   "--workers", "1", "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    assert "configuration-LP upper bound" in out.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [(r["policy"], r["seed"]) for r in data["results"]] == [("fgd", 42), ("fgd", 43), ("gpupack", 42),
                                                                    ("gpupack", 43)]
    first = data["results"][0]
    assert {"alloc_at_100", "alloc_at_130", "curve"} <= set(first) and first["curve"][-1][0] == 130
    assert data["bound"]["lp_at_100"] >= data["bound"]["bfd_at_100"] and data["paper"] is None
    png = tmp_path / "o" / "packing_p.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "o" / "packing_p.json").is_file()


def test_packing_stops_clearly_on_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("name,cpu_milli\nx,1\n")
    out = CliRunner().invoke(app, ["bench", "packing", "--pods", str(tmp_path / "bad.csv"), "--seeds", "1"])
    assert out.exit_code == 2 and "missing column(s) memory_mib, num_gpu, gpu_milli" in out.output
    out = CliRunner().invoke(app, ["bench", "packing", "--policies", "fgd,nope", "--seeds", "1"])
    assert out.exit_code != 0 and "unknown policy nope" in out.output


def test_synthetic_end_to_end(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["bench", "synthetic", "--nodes", "10", "--seeds", "1", "--json",
                                   str(tmp_path / "s.json")])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    assert {r["policy"] for r in rows} == {"gpupack", "fgd", "first-fit", "random"}
    assert all(0 < r["allocated_pct"] <= 100 for r in rows)
