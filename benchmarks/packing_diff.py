"""Are two `gpupack bench packing --json` results the same packing? Every field compared but timings.

The architecture issue's bar is that a refactor leaves packing bit-identical: run `bench packing` on
the old and the new code with the same traces and seeds, then

    python -m benchmarks.packing_diff OLD.json NEW.json [OLD2.json NEW2.json ...]

prints "identical apart from timings" per pair, or the paths of the fields that differ, and exits 1
on any difference. Timing fields (seconds, milliseconds, CPU) differ run to run and are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson


def _timing(key: str) -> bool:
    parts = key.split("_")
    return key in ("seconds", "time") or "ms" in parts or "seconds" in parts


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """The paths where two results differ, timings skipped (a list of a different length is one path)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            if not _timing(k):
                out += differences(old.get(k), new.get(k), f"{path}/{k}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [path or "/"]


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print("usage: python -m benchmarks.packing_diff OLD.json NEW.json [OLD.json NEW.json ...]", file=sys.stderr)
        return 2
    bad = 0
    for old, new in zip(argv[::2], argv[1::2], strict=True):
        d = differences(orjson.loads(Path(old).read_bytes()), orjson.loads(Path(new).read_bytes()))
        bad += len(d)
        print(f"{old} -> {new}: " + ("identical apart from timings" if not d else f"{len(d)} differences: {d[:8]}"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
