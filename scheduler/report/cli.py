"""`gpupack report` and `gpupack explain POD`: read-only, from `--from dump.json` or `--kubeconfig K`.

Both read the cluster once (a dump file, or list calls with a progress bar), then compute offline;
neither writes to the cluster. A bad source stops the command with the reason, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from scheduler.report.bulk import bulk_read
from scheduler.report.dump import Dump, DumpError, from_kubeconfig, load
from scheduler.translate.pod import InvalidPod

FromFile = Annotated[Path | None, typer.Option("--from", help="`kubectl get nodes,pods -A -o json` output")]
Kubeconfig = Annotated[Path | None, typer.Option(help="list the cluster live (read-only: list nodes and pods)")]
Context = Annotated[str | None, typer.Option(help="kubeconfig context (default: the current one)")]
JsonOut = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def _console(json_out: bool) -> Console:
    # with --json the tables' progress goes to stderr so stdout stays one JSON document
    return Console(stderr=json_out, width=None if sys.stdout.isatty() else 120)


def _source(src: Path | None, kubeconfig: Path | None, context: str | None, console: Console) -> Dump:
    if (src is None) == (kubeconfig is None):
        raise typer.BadParameter("give exactly one of --from FILE or --kubeconfig FILE")
    try:
        if src is not None:
            return load(src)
        with Progress(SpinnerColumn(), TextColumn("listing {task.description}"), TextColumn("{task.completed:,}"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            bars = {w: progress.add_task(w, total=None) for w in ("nodes", "pods")}
            return from_kubeconfig(kubeconfig, context,
                                   lambda what, n: progress.update(bars[what], completed=n))
    except DumpError as e:
        console.print(f"[red]gpupack: {e}[/red]")
        raise typer.Exit(2) from None


def report(
    src: FromFile = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    json_out: JsonOut = False,
    plot: Annotated[Path | None, typer.Option(help="write a PNG of allocation and the replay here")] = None,
    replay: Annotated[bool, typer.Option(help="place the same GPU pods again with gpupack, FGD and best-fit")] = True,
    replay_workers: Annotated[int, typer.Option(min=0, help="processes for the replay's policies (0: one per "
                                                          "policy, at most one per CPU)")] = 0,
) -> None:
    """GPU allocation, stranded GPUs and MIG slices per model, pending GPU pods and why, and a replay."""
    from scheduler.report.analyze import pending, per_model, read
    from scheduler.report.render import report_json, report_png, report_tables
    from scheduler.report.replay import POLICIES, ReplayRow, start

    console = _console(json_out)
    with bulk_read():
        dump = _source(src, kubeconfig, context, console)
        running = start(dump, POLICIES, replay_workers) if replay else None  # some policies begin now
        pic = read(dump)
    models, waiting = per_model(pic.snapshot, pic.mix), pending(pic)
    rows: tuple[ReplayRow, ...] = ()
    if running is not None:
        with Progress(TextColumn("replay {task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            bars = {p: progress.add_task(p, total=None, start=False) for p in POLICIES}

            def tick(policy: str, done: int, total: int) -> None:
                if not progress.tasks[bars[policy]].started:
                    progress.start_task(bars[policy])
                progress.update(bars[policy], completed=done, total=total)

            rows = running.finish(pic, tick)
    invalid = dict(pic.view.invalid)
    if json_out:
        typer.echo(orjson.dumps(report_json(dump.source, models, waiting, rows, invalid),
                                option=orjson.OPT_INDENT_2).decode())
    else:
        console.print(report_tables(dump.source, models, waiting, rows, invalid))
    if plot is not None:
        report_png(models, rows, plot)
        console.print(f"wrote {plot}")


def explain(
    pod: Annotated[str, typer.Argument(help="NAMESPACE/NAME (or NAME when unique)")],
    src: FromFile = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    json_out: JsonOut = False,
    limit: Annotated[int, typer.Option(min=0, help="nodes shown in the table (0: all)")] = 40,
) -> None:
    """Every node's verdict and reason for one pod, and the node and devices gpupack would pick."""
    from scheduler.report.analyze import read
    from scheduler.report.explain import explain as run_explain
    from scheduler.report.render import explain_json, explain_tables

    console = _console(json_out)
    with bulk_read():
        pic = read(_source(src, kubeconfig, context, console))
    try:
        e = run_explain(pic, pod)
    except (DumpError, InvalidPod) as err:
        console.print(f"[red]gpupack explain: {err}[/red]")
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(orjson.dumps(explain_json(e), option=orjson.OPT_INDENT_2).decode())
    else:
        console.print(explain_tables(e, limit or len(e.verdicts)))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("explain")(explain)
