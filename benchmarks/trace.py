"""Trace loaders: openb-format node lists and pod lists into NumPy tables, checked on the way in.

Owns the file format (required columns, value ranges) and the names of the shipped trace files.
A malformed file stops with TraceError naming the file, the line and the column, never with a
KeyError or a silently wrong number.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
MAX_GPUS = 16  # per node and per task; binpack's MAX_GPUS_PER_NODE
FULL = 1000  # milli-GPU of one whole GPU

SHIPPED_NODES = {"openb": "openb_node_list_gpu_node.csv"}
SHIPPED_PODS = {
    "default": "openb_pod_list_default.csv",
    "gpushare40": "openb_pod_list_gpushare40.csv",
    "multigpu50": "openb_pod_list_multigpu50.csv",
    "gpuspec33": "openb_pod_list_gpuspec33.csv",
}


class TraceError(ValueError):
    """A trace file that cannot be read as the openb format; the message says where and why."""


@dataclass(frozen=True, eq=False)
class NodeTable:
    """GPU nodes, one row each; `model` indexes `models` (-1 for a node without GPUs)."""

    source: str
    names: tuple[str, ...]
    cpu: np.ndarray  # (N,) int64 milli
    mem: np.ndarray  # (N,) int64 MiB
    gpus: np.ndarray  # (N,) int64
    model: np.ndarray  # (N,) int64
    models: tuple[str, ...]

    @property
    def capacity_milli(self) -> int:
        return int(self.gpus.sum()) * FULL


@dataclass(frozen=True, eq=False)
class PodTable:
    """Tasks, one row each; `spec` indexes `specs`, the allowed GPU models (empty set = any)."""

    source: str
    cpu: np.ndarray  # (P,) int64 milli
    mem: np.ndarray  # (P,) int64 MiB
    num_gpu: np.ndarray  # (P,) int64
    milli: np.ndarray  # (P,) int64 per GPU; 0 for CPU-only tasks
    spec: np.ndarray  # (P,) int64
    specs: tuple[frozenset[str], ...]

    @property
    def gpu_milli(self) -> np.ndarray:
        """(P,) GPU request of each task in milli (num_gpu x per-GPU milli)."""
        return self.num_gpu * self.milli


def data_dir() -> Path:
    return Path(str(resources.files("benchmarks") / "data"))


def resolve(name_or_path: str, shipped: dict[str, str], what: str) -> Path:
    """A shipped trace by name, or a file by path; a clear error when neither exists."""
    if name_or_path in shipped:
        return data_dir() / shipped[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise TraceError(f"{what} {name_or_path!r}: not a shipped name ({', '.join(shipped)}) and no such file")
    return path


def _rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: cannot be read ({e})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; header is {','.join(header) or '(empty)'}")
    reader.fieldnames = header
    rows = [(n + 2, row) for n, row in enumerate(reader)]  # line 1 is the header
    if not rows:
        raise TraceError(f"{path}: no rows after the header")
    return header, rows


def _int(path: Path, line: int, row: dict[str, str], col: str, lo: int, hi: int) -> int:
    raw = (row.get(col) or "").strip()
    try:
        value = int(float(raw)) if raw and float(raw).is_integer() else int(raw)
    except ValueError:
        raise TraceError(f"{path}:{line}: column {col}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise TraceError(f"{path}:{line}: column {col}: {value} is outside {lo}..{hi}")
    return value


def load_nodes(path: Path) -> NodeTable:
    """A node list: `sn,cpu_milli,memory_mib,gpu,model` (one GPU model per node)."""
    _, rows = _rows(path, NODE_COLUMNS)
    names: list[str] = []
    cols: dict[str, list[int]] = {"cpu": [], "mem": [], "gpus": [], "model": []}
    models: dict[str, int] = {}
    seen: set[str] = set()
    for line, row in rows:
        name = (row.get("sn") or "").strip()
        if not name:
            raise TraceError(f"{path}:{line}: column sn: empty node name")
        if name in seen:
            raise TraceError(f"{path}:{line}: column sn: node {name!r} appears twice")
        seen.add(name)
        gpus = _int(path, line, row, "gpu", 0, MAX_GPUS)
        model = (row.get("model") or "").strip()
        if gpus and not model:
            raise TraceError(f"{path}:{line}: column model: a node with {gpus} GPUs needs its GPU model")
        names.append(name)
        cols["cpu"].append(_int(path, line, row, "cpu_milli", 0, 10**9))
        cols["mem"].append(_int(path, line, row, "memory_mib", 0, 10**12))
        cols["gpus"].append(gpus)
        cols["model"].append(models.setdefault(model, len(models)) if gpus else -1)
    if not any(cols["gpus"]):
        raise TraceError(f"{path}: no node has a GPU")
    arr = {k: np.asarray(v, np.int64) for k, v in cols.items()}
    return NodeTable(str(path), tuple(names), arr["cpu"], arr["mem"], arr["gpus"], arr["model"], tuple(models))


def load_pods(path: Path) -> PodTable:
    """A pod list: `cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec]`; other columns are ignored."""
    header, rows = _rows(path, POD_COLUMNS)
    has_spec = "gpu_spec" in header
    cols: dict[str, list[int]] = {"cpu": [], "mem": [], "num_gpu": [], "milli": [], "spec": []}
    specs: dict[frozenset[str], int] = {frozenset(): 0}
    for line, row in rows:
        num = _int(path, line, row, "num_gpu", 0, MAX_GPUS)
        milli = _int(path, line, row, "gpu_milli", 0, FULL) if num else 0
        if num and milli == 0:
            raise TraceError(f"{path}:{line}: column gpu_milli: a task with {num} GPU(s) needs gpu_milli 1..{FULL}")
        if num > 1 and milli != FULL:
            raise TraceError(f"{path}:{line}: column gpu_milli: {milli} on a {num}-GPU task; only 1-GPU tasks share")
        raw = (row.get("gpu_spec") or "").strip() if has_spec and num else ""
        spec = frozenset(m.strip() for m in raw.split("|") if m.strip())
        cols["cpu"].append(_int(path, line, row, "cpu_milli", 0, 10**9))
        cols["mem"].append(_int(path, line, row, "memory_mib", 0, 10**12))
        cols["num_gpu"].append(num)
        cols["milli"].append(milli)
        cols["spec"].append(specs.setdefault(spec, len(specs)))
    arr = {k: np.asarray(v, np.int64) for k, v in cols.items()}
    return PodTable(str(path), arr["cpu"], arr["mem"], arr["num_gpu"], arr["milli"], arr["spec"], tuple(specs))


def load_trace(nodes: str = "openb", pods: str = "default") -> tuple[NodeTable, PodTable]:
    """Both tables, each from a shipped name or a path."""
    return (load_nodes(resolve(nodes, SHIPPED_NODES, "node list")),
            load_pods(resolve(pods, SHIPPED_PODS, "pod list")))
