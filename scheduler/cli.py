"""The `gpupack` command line: one typer app; each component registers its own sub-commands.

`gpupack demo` runs the packer on the embedded demo cluster. `serve`, `webhook`, `agent` and
`bench` come from the modules named in _COMPONENTS, each exposing `register(app)`.
"""

from __future__ import annotations

import importlib

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from binpack import MixLearner, Snapshot, allocate, fit, place, score, validate
from binpack.demo import demo_nodes, demo_workload

app = typer.Typer(help="gpupack: GPU bin-packing scheduler extender for Kubernetes", no_args_is_help=True)



@app.callback()
def _root() -> None:
    """gpupack: GPU bin-packing scheduler extender for Kubernetes."""


_COMPONENTS = ("scheduler.serve_cli", "webhook.cli", "scheduler.agent.cli", "benchmarks.cli", "scheduler.report.cli")


@app.command()
def demo() -> None:
    """Pack a mixed GPU workload onto the embedded demo cluster and show where each pod went."""
    console = Console()
    snap = base = Snapshot.build(demo_nodes())
    learner = MixLearner()
    table = Table(title=f"gpupack demo: {len(snap.names)} nodes, embedded cluster")
    for col in ("pod", "asks", "node", "devices", "score 0-10"):
        table.add_column(col)
    placed = []
    for name, d in demo_workload():
        learner.observe(d)
        verdict = fit(snap, d)
        asks = _describe(d)
        if not verdict.fits.any():
            i = int(np.argmin(verdict.reason))
            why = verdict.message(i)
            table.add_row(name, asks, "-", f"[red]unschedulable: {why}[/red]", "-")
            continue
        scores = score(verdict, learner.mix())
        best = int(np.argmax(scores.value))
        p = place(snap, d, snap.names[best], learner.mix())
        assert p is not None
        snap = allocate(snap, p)
        placed.append((d, p))
        devices = ", ".join(f"{m.profile}@gpu{m.gpu}:{m.start}" for m in p.mig) or f"GPUs {list(p.gpus)}"
        table.add_row(name, asks, p.node, devices, str(int(scores.integer[best])))
    console.print(table)
    problems = validate(base, placed)
    console.print("validate: " + ("[green]all placements valid[/green]" if not problems else str(problems)))
    if problems:
        raise typer.Exit(1)


def _describe(d: object) -> str:
    from binpack import Demand, DemandKind

    assert isinstance(d, Demand)
    models = f" of {'|'.join(sorted(d.models))}" if d.models else ""
    if d.kind is DemandKind.WHOLE:
        return f"{d.count} GPU{models} ({d.topology.value})"
    if d.kind is DemandKind.SHARE:
        return f"{d.memory_mib} MiB + {d.compute_milli / 10:.0f}% of a GPU{models}"
    return f"{d.count} x MIG {d.mig_profile}"


def _register_components() -> None:
    # every component exists: an import that fails is a broken install, and must say so rather than
    # leave the command out of `gpupack --help`
    for mod in _COMPONENTS:
        importlib.import_module(mod).register(app)


_register_components()


def main() -> None:
    app()


if __name__ == "__main__":  # `python -m scheduler.cli` runs this checkout, whatever `gpupack` on PATH points at
    main()
