"""The README's small picture: GPUs allocated per policy at arrived 100%, from a `bench packing` JSON.

Reads a result file written by `gpupack bench packing --json` (e.g. benchmarks/results/
packing_default.json); draws the baselines and gpupack (ablation rows left out) as bars with the
seeds' standard deviation, and the configuration-LP bound when the file has it.

    python -m benchmarks.summary_plot benchmarks/results/packing_default.json docs/packing.png
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import orjson

from benchmarks.plot import COLORS


def summary_png(result: dict[str, Any], path: Path) -> None:
    """A ~700x300 px bar chart of allocation @100% per policy (ablations left out)."""
    rows = sorted((s for s in result["summary"] if not s["policy"].startswith("gpupack-")),
                  key=lambda s: s["alloc_100"])
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    names = [s["policy"] for s in rows]
    ax.barh(names, [s["alloc_100"] for s in rows], xerr=[s["alloc_100_std"] for s in rows],
            color=[COLORS.get(n, "#777777") for n in names], height=0.65)
    for i, s in enumerate(rows):
        ax.text(s["alloc_100"] + s["alloc_100_std"] + 0.15, i, f"{s['alloc_100']:.2f}", va="center", fontsize=8)
    low = min(s["alloc_100"] for s in rows)
    if result.get("bound"):
        lp = result["bound"]["lp_at_100"]
        ax.axvline(lp, color="black", ls="--", lw=1)
        ax.text(lp, len(rows) - 0.4, f" LP bound {lp:.2f}", fontsize=8, va="top")
    ax.set_xlim(low - 2, 99)
    t = result["trace"]
    ax.set_xlabel(f"GPUs allocated at arrived 100%, % of {t['gpus']:,} GPUs "
                  f"(openb {t['pods']}, {len(result['seeds'])} seeds)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m benchmarks.summary_plot RESULT.json OUT.png")
    summary_png(orjson.loads(Path(args[0]).read_bytes()), Path(args[1]))


if __name__ == "__main__":
    main()
