"""benchmarks/packing_diff.py: the check that a refactor left packing bit-identical must itself be able to fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from benchmarks.packing_diff import differences, main

RESULT: dict[str, Any] = {"trace": "default", "seeds": [42, 43], "seconds": 12.5,
          "results": [{"policy": "gpupack", "seed": 42, "allocated": [0.5, 0.9], "decision_ms": 0.3,
                       "cpu_seconds": 4.0, "placed": 812}]}


def test_timings_are_skipped_and_everything_else_compared(tmp_path: Path) -> None:
    slower = {**RESULT, "seconds": 99.0, "results": [{**RESULT["results"][0], "decision_ms": 9.9, "cpu_seconds": 8.0}]}
    assert differences(RESULT, slower) == []
    moved = {**RESULT, "results": [{**RESULT["results"][0], "allocated": [0.5, 0.91]}]}
    assert differences(RESULT, moved) == ["/results[0]/allocated[1]"]
    fewer = {**RESULT, "results": []}
    assert differences(RESULT, fewer) == ["/results"]
    assert differences(RESULT, {**RESULT, "extra": 1}) == ["/extra"]
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_bytes(orjson.dumps(RESULT))
    b.write_bytes(orjson.dumps(slower))
    c.write_bytes(orjson.dumps(moved))
    assert main([str(a), str(b)]) == 0
    assert main([str(a), str(b), str(a), str(c)]) == 1
    assert main([str(a)]) == 2
