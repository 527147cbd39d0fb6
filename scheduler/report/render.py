"""How `gpupack report` and `gpupack explain` show what they found: rich tables, JSON, one PNG.

Rendering only (analyze.py, replay.py and explain.py compute); tables keep short headers so they
fit an 80-column terminal.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table

from scheduler.report.analyze import ModelRow, PendingPod
from scheduler.report.explain import Explanation
from scheduler.report.replay import ReplayRow


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def report_tables(source: str, models: tuple[ModelRow, ...], waiting: tuple[PendingPod, ...],
                  replay: tuple[ReplayRow, ...], invalid: dict[str, str]) -> Group:
    gpus = sum(m.gpus for m in models)
    alloc = sum(m.allocated for m in models)
    t = Table(title=f"GPU allocation by model ({source})", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False)
    for col in ("model", "nodes", "GPUs", "alloc", "%", "stranded", "idle", "MIG free"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for m in models:
        t.add_row(m.model, str(m.nodes), str(m.gpus), f"{m.allocated:.1f}", _pct(m.allocated, m.gpus),
                  f"{m.stranded:.1f}", str(m.whole_free),
                  f"{m.mig_slices_free}/{m.mig_slices}" if m.mig_slices else "-")
    t.add_section()
    t.add_row("all", str(sum(m.nodes for m in models)), str(gpus), f"{alloc:.1f}", _pct(alloc, gpus),
              f"{sum(m.stranded for m in models):.1f}", str(sum(m.whole_free for m in models)),
              f"{sum(m.mig_slices_free for m in models)}/{sum(m.mig_slices for m in models)}")
    t.caption = ("GPUs (shares count their fraction); stranded: free GPU the cluster's own mix cannot use "
                 "where it lies (FGD's measure); idle: GPUs with nothing on them; MIG free: memory slices")
    parts: list[Any] = [t]
    if invalid:
        bad = Table(title=f"{len(invalid)} node(s) gpupack cannot read", title_justify="left", box=box.SIMPLE_HEAD)
        bad.add_column("node")
        bad.add_column("why", overflow="fold")
        for name, why in sorted(invalid.items())[:20]:
            bad.add_row(name, why)
        parts.append(bad)
    p = Table(title=f"{len(waiting)} pending GPU pod(s)", title_justify="left", box=box.SIMPLE_HEAD)
    p.add_column("pod", overflow="fold")
    p.add_column("asks", overflow="fold")
    p.add_column("why it is not placed", overflow="fold", ratio=2)
    for w in waiting[:50]:
        p.add_row(f"{w.namespace}/{w.name}", w.asks, w.reason)
    if len(waiting) > 50:
        p.caption = f"first 50 of {len(waiting)}; --json lists them all"
    parts.append(p)
    if replay:
        r = Table(title="replay: the same pods, creation order, from empty nodes", title_justify="left",
                  box=box.SIMPLE_HEAD)
        for col in ("policy", "placed", "not placed", "alloc GPUs", "alloc %", "stranded", "FGD frag", "s"):
            r.add_column(col, justify="left" if col == "policy" else "right")
        for row in replay:
            r.add_row(row.policy, str(row.placed), str(row.unplaced), f"{row.allocated:.1f}",
                      _pct(row.allocated, gpus), f"{row.stranded:.1f}", f"{row.fgd_frag:.1f}",
                      f"{row.seconds:.1f}" if row.policy != "as bound" else "-")
        r.caption = ("pods: GPU pods and pending pods without GPUs (bound ones stay on their nodes); FGD frag: "
                     "bench packing's fragmentation, FGD's measure with the replayed pods' typical pods")
        parts.append(r)
    return Group(*parts)


def report_json(source: str, models: tuple[ModelRow, ...], waiting: tuple[PendingPod, ...],
                replay: tuple[ReplayRow, ...], invalid: dict[str, str]) -> dict[str, Any]:
    return {"source": source, "models": [asdict(m) for m in models], "pending": [asdict(w) for w in waiting],
            "replay": [asdict(r) for r in replay], "invalid_nodes": invalid}


def report_png(models: tuple[ModelRow, ...], replay: tuple[ReplayRow, ...], path: Path) -> None:
    """Per model: allocated / stranded / usable free GPUs; per policy: allocated and stranded."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    names = [m.model for m in models]
    alloc = [m.allocated for m in models]
    lost = [m.stranded for m in models]
    usable = [max(m.free - m.stranded, 0.0) for m in models]
    left.barh(names, alloc, color="#d62728", label="allocated")
    left.barh(names, lost, left=alloc, color="#7f7f7f", label="stranded (FGD)")
    left.barh(names, usable, left=[a + s for a, s in zip(alloc, lost, strict=True)], color="#c7e9c0",
              label="free, usable")
    left.set_xlabel("GPUs")
    left.set_title("the cluster by GPU model")
    left.legend(fontsize=8)
    if replay:
        pol = [r.policy for r in replay]
        right.barh(pol, [r.allocated for r in replay], color="#756bb1", label="allocated")
        right.barh(pol, [r.stranded for r in replay], left=[r.allocated for r in replay], color="#7f7f7f",
                   label="stranded (FGD)")
        right.set_xlabel("GPUs")
        right.set_title("replay: the same pods per policy")
        right.legend(fontsize=8)
    else:
        right.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def explain_tables(e: Explanation, limit: int) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_column()
    head.add_column()
    head.add_row("pod", f"{e.namespace}/{e.name}")
    head.add_row("asks", e.asks)
    if e.bound_to:
        head.add_row("bound to", f"{e.bound_to} (judged with its own devices handed back)")
    if e.choice:
        head.add_row("gpupack picks", f"[bold]{e.choice}[/bold], {e.devices}, score {e.choice_score}/10")
    else:
        head.add_row("gpupack picks", "[red]no node: it fits nowhere now[/red]")
    fits = sum(v.fits for v in e.verdicts)
    t = Table(title=f"every node's verdict ({fits} of {len(e.verdicts)} fit)", title_justify="left",
              box=box.SIMPLE_HEAD)
    t.add_column("node", overflow="fold")
    t.add_column("verdict")
    t.add_column("score", justify="right")
    t.add_column("reason", overflow="fold", ratio=2)
    for v in e.verdicts[:limit]:
        verdict = "fits" if v.fits else ("no, preemption may help" if v.preemption_may_help else "no")
        t.add_row(v.node, verdict, "-" if v.score is None else str(v.score), v.reason)
    if len(e.verdicts) > limit:
        t.caption = f"first {limit} of {len(e.verdicts)} nodes (--limit 0 shows all)"
    return Group(head, t)


def explain_json(e: Explanation) -> dict[str, Any]:
    return asdict(e)
