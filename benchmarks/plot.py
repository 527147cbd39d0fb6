"""The one picture of `bench packing`: GPU allocation and fragmentation against the arrived workload.

Three panels: (a) allocation over the whole run, (b) the saturation region zoomed, with the
configuration-LP upper bound and the offline best-fit-decreasing packing at arrived 100% when they
were computed (not under --no-bound), (c) the
GPUs left fragmented. Lines are the mean over seeds, bands the seeds' min..max.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np

from benchmarks.packing import Packing
from benchmarks.report import bound_means, summarise
from benchmarks.simulate import Curve

COLORS = {
    "random": "#9e9e9e", "dot-product": "#8c6d31", "gpu-clustering": "#6baed6", "gpu-packing": "#31a354",
    "best-fit": "#fd8d3c", "fgd": "#756bb1", "gpupack": "#d62728",
}


def _band(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, min, max over the seeds, on the arrived points every seed has."""
    common = set.intersection(*(set(x for x, _ in c) for c in curves))
    xs = np.asarray(sorted(common))
    ys = np.asarray([[dict(c)[x] for x in xs] for c in curves])
    return xs, ys.mean(0), ys.min(0), ys.max(0)


def panel_titles(p: Packing) -> tuple[str, str, str]:
    """Panel (b) names the bound only when it was computed (not under --no-bound)."""
    return ("(a) GPU allocation",
            "(b) saturation (zoom), bound and offline reference" if p.bounds else "(b) saturation (zoom)",
            "(c) free GPUs fragmented for the target mix (FGD's measure)")


def plot(p: Packing, path: Path) -> None:
    fig, (full, zoom, frag) = plt.subplots(1, 3, figsize=(17, 5.4), gridspec_kw={"width_ratios": [1, 1.25, 1]})
    order = [s.policy for s in sorted(summarise(p), key=lambda s: -s.alloc_100)]
    for name in order:
        runs = [r for r in p.results if r.policy == name]
        color = COLORS.get(name)
        width = 2.6 if name == "gpupack" else 1.6
        label = f"{name} ({np.mean([r.alloc_at_100 for r in runs]):.2f}% @100)"
        for ax, curves in ((full, [r.curve for r in runs]), (zoom, [r.curve for r in runs]),
                           (frag, [r.frag_curve for r in runs])):
            xs, mean, lo, hi = _band(curves)
            ax.plot(xs, mean, color=color, lw=width, label=label if ax is zoom else name)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
    full.plot([0, 100, 130], [0, 100, 100], color="black", lw=0.8, ls=":", label="capacity")
    means = bound_means(p)
    if means is not None:
        lp, bfd = means
        zoom.axhline(lp, color="black", ls="--", lw=1.2, label=f"configuration-LP bound ({lp:.2f}%)")
        zoom.plot([100], [bfd], marker="D", color="black", ls="none", ms=7,
                  label=f"offline best-fit-decreasing ({bfd:.2f}%)")
    lows = [min(y for x, y in r.curve if x >= 90) for r in p.results]
    zoom.set_xlim(90, 131)
    zoom.set_ylim(max(min(lows) - 1.0, 0), 100)
    zoom.axvline(100, color="black", lw=0.6, alpha=0.5)
    full.set_xlim(0, 131)
    full.set_ylim(0, 101)
    frag.set_xlim(0, 131)
    titles = panel_titles(p)
    ylabels = ("GPUs allocated, % of capacity", "GPUs allocated, % of capacity", "fragmented GPU milli, % of capacity")
    for ax, title, ylabel in zip((full, zoom, frag), titles, ylabels, strict=True):
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("arrived GPU request, % of capacity")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    zoom.legend(fontsize=8.5, loc="lower right", framealpha=0.95)
    full.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"gpupack bench packing: {p.pods} trace on {p.nodes} nodes ({p.gpus} GPUs), "
                 f"mean of {len(p.seeds)} seed(s)" + (", band = min..max" if len(p.seeds) > 1 else ""),
                 fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
