"""`gpupack bench ...`: the benchmark commands, registered on the main CLI by `register(app)`.

`bench packing` reruns the FGD paper's experiment on the openb trace (or any node/pod list in its
format); `bench synthetic` packs generated NVLink/MIG/share/pod-group workloads; `bench latency`
comes from benchmarks.latency when that module exists.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from benchmarks.policies import POLICIES, parse_policies
from benchmarks.trace import SHIPPED_PODS, TraceError

bench = typer.Typer(help="Packing-quality and latency benchmarks.", no_args_is_help=True)


@bench.command()
def packing(
    trace: Annotated[str, typer.Option(help=f"shipped pod list: {', '.join(SHIPPED_PODS)}")] = "default",
    pods: Annotated[str | None, typer.Option(help="a pod list file in the openb format (overrides --trace)")] = None,
    nodes: Annotated[str, typer.Option(help="'openb' or a node list file in the openb format")] = "openb",
    policies: Annotated[str, typer.Option(help="comma-separated policies")] = ",".join(POLICIES),
    seeds: Annotated[int, typer.Option(help="number of seeds: 42, 43, ... as the paper")] = 10,
    workers: Annotated[int, typer.Option(help="processes; 0 = one per CPU")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON here")] = None,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="write the PNG here")] = None,
    out: Annotated[Path | None, typer.Option(help="write packing_<trace>.json and .png into this folder")] = None,
    bound: Annotated[bool, typer.Option(help="compute the configuration-LP bound and offline BFD")] = True,
) -> None:
    """The FGD paper's experiment: tasks arrive until 130% of GPU capacity; allocation per policy."""
    from benchmarks.packing import run_packing, seeds_from
    from benchmarks.plot import plot
    from benchmarks.report import table, write_json

    console = Console(width=None if sys.stdout.isatty() else 150)  # a piped table keeps its columns
    try:
        names = parse_policies(policies)
        seed_list = seeds_from(seeds)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    pod_arg = pods or trace
    keys = [(p, s) for p in names for s in seed_list] + ([("bound", s) for s in seed_list] if bound else [])
    try:
        with Progress(TextColumn("{task.description:>24}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=console, transient=len(keys) > 40) as progress:
            # Each bar's clock starts at that run's first progress report, not when all were queued:
            # with fewer workers than runs, most wait, and a shared start showed their wait as run time.
            bars: dict[tuple[str, int], TaskID] = {
                k: progress.add_task(f"{k[0]} seed {k[1]}", total=1.0, start=False) for k in keys}
            started: set[tuple[str, int]] = set()

            def on_progress(key: tuple[str, int], frac: float) -> None:
                if key not in started:
                    started.add(key)
                    progress.start_task(bars[key])
                progress.update(bars[key], completed=frac)

            result = run_packing(nodes, pod_arg, names, seed_list, workers, bound, on_progress)
    except TraceError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    console.print(table(result))
    cpu = sum(r.cpu_seconds for r in result.results)
    console.print(f"{len(result.results)} runs in {result.seconds:.0f} s wall on {result.workers} worker(s); "
                  f"{cpu:.0f} CPU s in the scheduling loops")
    stem = Path(pod_arg).stem if pods else trace
    targets = [(json_path, plot_path)]
    if out is not None:
        targets.append((out / f"packing_{stem}.json", out / f"packing_{stem}.png"))
    for jp, pp in targets:
        if jp is not None:
            write_json(result, jp)
            console.print(f"wrote {jp}")
        if pp is not None:
            plot(result, pp)
            console.print(f"wrote {pp}")


def _register_optional(module: str) -> None:
    """Add a sub-command module's commands to `bench`; skip only when that exact module is absent."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return
    mod.register(bench)


def register(app: typer.Typer) -> None:
    """Add the `bench` group to the main CLI."""
    from benchmarks.synthetic_cli import register as register_synthetic

    register_synthetic(bench)
    for module in ("benchmarks.latency", "benchmarks.webhook_latency", "benchmarks.group_latency",
                   "benchmarks.report_bench", "benchmarks.report_packing", "benchmarks.scheduler_bench"):
        _register_optional(module)
    app.add_typer(bench, name="bench")
