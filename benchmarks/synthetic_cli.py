"""`gpupack bench synthetic`: the command around synthetic.py (table, JSON, progress)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benchmarks.synthetic import ABLATIONS, POLICIES, SyntheticResult, make_cluster, run_synthetic

FIELDS = (("allocated_pct", "GPU allocated %"), ("failed_pct", "GPU asked, refused %"),
          ("best_links_pct", "multi-GPU on best links %"), ("nvlinked_pct", "multi-GPU all NVLinked %"),
          ("nvlink_placed_pct", "NVLink-required jobs placed %"),
          ("group_success_pct", "pod groups placed %"),
          ("room_refused_pct", "whole-GPU asks refused with room %"),
          ("groups_room_refused_pct", "pod groups refused with room %"), ("decision_ms", "ms/pod"))


def table(results: list[SyntheticResult], nodes: int, load: float) -> Table:
    """One row per figure, one column per policy: narrow enough for an 80-column terminal."""
    t = Table(title=f"bench synthetic: {nodes} nodes (DGX H100, DGX-1 V100, A100 MIG, T4, L4), load {load:.0%}, "
                    f"mean over {len({r.seed for r in results})} seed(s)")
    t.add_column("figure", ratio=1, overflow="fold")
    names = list(dict.fromkeys(r.policy for r in results))
    for name in names:
        t.add_column(name, justify="right", no_wrap=False, overflow="fold", min_width=6)
    for f, title in FIELDS:
        t.add_row(title, *(f"{np.mean([getattr(r, f) for r in results if r.policy == n]):.2f}" for n in names))
    return t


def synthetic(
    nodes: Annotated[int, typer.Option(help="cluster size (split across the five node kinds)")] = 200,
    seeds: Annotated[int, typer.Option(help="number of seeds: 42, 43, ...")] = 3,
    policies: Annotated[str, typer.Option(help=f"comma-separated: {', '.join((*POLICIES, *ABLATIONS))}")] = ",".join(
        POLICIES),
    load: Annotated[float, typer.Option(help="GPU request of the workload as a fraction of capacity")] = 1.1,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON here")] = None,
) -> None:
    """Generated NVSwitch/cube-mesh/MIG/PCIe clusters; multi-GPU, share, MIG and pod-group workloads."""
    names = [p.strip() for p in policies.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES and p not in ABLATIONS]
    if bad or not names or seeds < 1 or load <= 0:
        raise typer.BadParameter(f"policies from {', '.join((*POLICIES, *ABLATIONS))}, seeds >= 1, load > 0")
    try:
        cluster = make_cluster(nodes)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    console = Console(width=None if sys.stdout.isatty() else 150)  # a piped table keeps its columns
    results: list[SyntheticResult] = []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("synthetic", total=len(names) * seeds)
        for p in names:
            for s in range(42, 42 + seeds):
                progress.update(bar, description=f"{p} seed {s}")
                results.append(run_synthetic(p, cluster, s, load))
                progress.advance(bar)
    console.print(table(results, nodes, load))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"nodes": nodes, "load": load, "results": [vars(r) for r in results]}) + "\n")
        console.print(f"wrote {json_path}")


def register(bench: typer.Typer) -> None:
    bench.command()(synthetic)
