"""What the bench commands print: rich tables that fit 80 columns, `--json` for machines, `--port`,
per-run clocks and no invented spread or bound in `bench packing`."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import benchmarks.latency as latency
from benchmarks.latency_tables import extender_tables, webhook_tables
from benchmarks.packing import run_packing
from benchmarks.plot import panel_titles
from benchmarks.report import table as packing_table
from benchmarks.synthetic import make_cluster, run_synthetic
from benchmarks.synthetic_cli import FIELDS
from benchmarks.synthetic_cli import table as synthetic_table
from scheduler.cli import app
from tests.test_bench_cli import NODES, PODS

_VERB = {"n": 10, "p50_ms": 1.234, "p99_ms": 4.5, "handler_p50_ms": 0.8, "handler_p99_ms": 2.0}
_PHASE = {"pods": 10, "pods_per_s": 120.0, "pods_per_s_http": 200.0, "pods_per_s_handler": 400.0,
          "filter": _VERB, "prioritize": _VERB}
LATENCY: dict[str, Any] = {
    "cluster": {"nodes": 5000, "gpus": 40000, "bound_pods": 20000, "ready_s": 9.1, "server_rss_mib": 300.0,
                "server_rss_mib_after": 310.0},
    "steady": _PHASE, "binding": {**_PHASE, "bind": _VERB},
    "nodes_mode": {**_PHASE, "nodes_per_request": 500, "request_kib": 2000.0},
    "load_average": 1.5,
    "solver_only": {"nodes": 5000.0, "fit_score_p50_ms.whole-1": 0.5, "fit_score_p99_ms.whole-1": 1.5,
                    "fit_score_full_p50_ms.whole-1": 0.9, "fit_score_full_p99_ms.whole-1": 2.5,
                    "fits_nodes.whole-1": 4000.0},
}


def _render(renderable: Any, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _fits(text: str, width: int = 80) -> None:
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text  # nothing truncated


def test_latency_tables_fit_80_columns_and_show_every_figure() -> None:
    text = _render(extender_tables(LATENCY, 5.0, 300.0))
    _fits(text)
    assert "1.23" in text and "4.50" in text and "Nodes x500" in text and "whole-1" in text
    assert "{" not in text  # no raw dict


def test_bench_latency_passes_the_port_and_prints_tables_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(nodes: int, pods: int, nodes_mode: int, port: int = 0, shortlist: int = 0) -> dict[str, Any]:
        seen.update(nodes=nodes, port=port, shortlist=shortlist)
        return LATENCY

    monkeypatch.setattr(latency, "run_latency", fake)
    out = CliRunner().invoke(app, ["bench", "latency", "--nodes", "10", "--port", "18999", "--shortlist", "8"])
    assert out.exit_code == 0, out.output
    assert seen == {"nodes": 10, "port": 18999, "shortlist": 8} and "prioritize" in out.output and "{" not in out.output
    out = CliRunner().invoke(app, ["bench", "latency", "--json"])
    assert json.loads(out.output)["cluster"]["nodes"] == 5000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bench_webhook_latency_on_a_given_port() -> None:
    port = _free_port()
    out = CliRunner().invoke(app, ["bench", "webhook-latency", "--reviews", "100", "--handshakes", "10",
                                   "--port", str(port), "--json"])
    assert out.exit_code == 0, out.output
    r = json.loads(out.output)
    assert r["keepalive"]["n"] == 100
    text = _render(webhook_tables(r))
    _fits(text)
    assert "keep-alive, all" in text and "new TLS connection" in text and "{" not in text


def test_synthetic_table_fits_80_columns() -> None:
    cluster = make_cluster(10)
    results = [run_synthetic(p, cluster, 42, 0.5) for p in ("gpupack", "fgd", "first-fit")]
    text = _render(synthetic_table(results, 10, 0.5))
    _fits(text)
    for _, title in FIELDS:
        assert title in text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("trace")
    (d / "n.csv").write_text(NODES)
    (d / "p.csv").write_text(PODS)
    return str(d / "n.csv"), str(d / "p.csv")


def test_each_run_reports_its_own_start(tiny: tuple[str, str]) -> None:
    calls: list[tuple[tuple[str, int], float]] = []
    run_packing(*tiny, ["fgd", "gpupack"], [42, 43], workers=1, with_bound=True,
                on_progress=lambda k, f: calls.append((k, f)))
    first: dict[tuple[str, int], float] = {}
    for k, f in calls:
        first.setdefault(k, f)
    assert len(first) == 6 and set(first.values()) == {0.0}  # each clock starts when its run does


def test_one_seed_shows_no_spread_and_no_bound_promised(tiny: tuple[str, str]) -> None:
    one = run_packing(*tiny, ["fgd"], [42], workers=1, with_bound=False)
    text = _render(packing_table(one), 150)
    assert "±" not in text and "upper bound" not in text
    assert "bound" not in panel_titles(one)[1]
    two = run_packing(*tiny, ["fgd"], [42, 43], workers=1, with_bound=True)
    assert "±" in _render(packing_table(two), 150)
    assert "bound" in panel_titles(two)[1]


def test_packing_progress_runs_under_the_cli(tmp_path: Path, tiny: tuple[str, str]) -> None:
    out = CliRunner().invoke(app, ["bench", "packing", "--nodes", tiny[0], "--pods", tiny[1], "--policies", "fgd",
                                   "--seeds", "1", "--workers", "1", "--no-bound"])
    assert out.exit_code == 0, out.output
    assert "±" not in out.output and "fgd" in out.output


def test_the_readme_picture_is_drawn_from_a_shipped_result(tmp_path: Path) -> None:
    from benchmarks.summary_plot import main

    root = Path(__file__).resolve().parents[1]
    main([str(root / "benchmarks" / "results" / "packing_default.json"), str(tmp_path / "p.png")])
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(docs/packing.png)" in (root / "README.md").read_text()
    assert (root / "docs" / "packing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
