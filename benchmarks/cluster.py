"""The simulator's cluster: NumPy columns per node and per GPU slot, and the task being placed.

Nodes are stored in the seed's tie-break order (row 0 wins ties), so every policy breaks ties by
taking the first best row. Per node: free CPU and memory, free milli of each GPU slot (padding
slots hold 0 and never fit), and derived columns kept up to date on every placement (whole free
GPUs, largest free share, total free milli, the kinds of GPU task present) so that feasibility and
most policies' scores are O(nodes) vector operations, never a Python loop over nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.trace import FULL, NodeTable, PodTable

TAGS = 18  # task kinds for GPU clustering: 0 share, n (1..16) n-GPU, 17 unused


@dataclass(frozen=True)
class Task:
    """One arriving task: CPU milli, memory MiB, GPU count, per-GPU milli, allowed models."""

    row: int  # row of the pod table
    cpu: int
    mem: int
    num_gpu: int
    milli: int
    spec: int  # index into PodTable.specs
    models: frozenset[str]

    @property
    def share(self) -> bool:
        return self.num_gpu == 1 and self.milli < FULL

    @property
    def gpu_milli(self) -> int:
        return self.num_gpu * self.milli

    @property
    def tag(self) -> int:
        """GPU clustering's affinity kind: 0 for a share, n for n whole GPUs."""
        return 0 if self.share else self.num_gpu


def task_of(pods: PodTable, row: int) -> Task:
    return Task(row, int(pods.cpu[row]), int(pods.mem[row]), int(pods.num_gpu[row]), int(pods.milli[row]),
                int(pods.spec[row]), pods.specs[int(pods.spec[row])])


@dataclass(frozen=True)
class Choice:
    """Where a task goes: a row of the state and the GPU slots it takes (empty for CPU-only)."""

    node: int
    gpus: tuple[int, ...]


class State:
    """Mutable free capacity of every node, in tie-break order; `apply` books one choice."""

    def __init__(self, nodes: NodeTable, order: np.ndarray) -> None:
        self.nodes = nodes
        self.order = order
        self.names = tuple(nodes.names[i] for i in order)
        self.gpus = nodes.gpus[order]
        self.model = nodes.model[order]
        self.cpu_total = nodes.cpu[order]
        self.k = max(int(self.gpus.max()), 1)
        self.valid = np.arange(self.k)[None, :] < self.gpus[:, None]
        self.cpu = self.cpu_total.copy()
        self.mem = nodes.mem[order].copy()
        self.left = np.where(self.valid, FULL, 0).astype(np.int64)  # (N,K) free milli per GPU slot
        self.full = self.gpus.copy()  # (N,) whole free GPUs
        self.maxleft = np.where(self.gpus > 0, FULL, 0).astype(np.int64)  # (N,) largest free share
        self.total = self.gpus * FULL  # (N,) free milli
        self.tags = np.zeros((len(order), TAGS), np.int64)  # GPU tasks per kind on each node
        self.allocated = 0  # milli booked in the whole cluster
        self._model_ok: dict[frozenset[str], np.ndarray] = {}

    @property
    def capacity(self) -> int:
        return self.nodes.capacity_milli

    def model_ok(self, models: frozenset[str]) -> np.ndarray:
        """(N,) nodes whose GPU model the task accepts (all nodes with GPUs when any model goes)."""
        hit = self._model_ok.get(models)
        if hit is None:
            allowed = [i for i, m in enumerate(self.nodes.models) if not models or m in models]
            hit = self._model_ok[models] = (self.gpus > 0) & np.isin(self.model, allowed)
        return hit

    def feasible(self, t: Task) -> np.ndarray:
        """(N,) bool: rows where the task fits now (CPU, memory, GPU model and free GPU capacity)."""
        ok = (self.cpu >= t.cpu) & (self.mem >= t.mem)
        if t.num_gpu:
            ok &= self.model_ok(t.models)
            ok &= (self.maxleft >= t.milli) if t.share else (self.full >= t.num_gpu)
        return ok

    def first_free(self, node: int, n: int) -> tuple[int, ...]:
        """The first n whole free GPUs of a node by index (the simulators' exclusive-GPU rule)."""
        return tuple(int(g) for g in np.flatnonzero(self.left[node] == FULL)[:n])

    def best_fit_gpu(self, node: int, milli: int) -> int:
        """The GPU with the least free milli that still fits the share (lowest index among equals)."""
        left = self.left[node]
        return int(np.argmin(np.where(left >= milli, left, FULL + 1)))

    def apply(self, t: Task, c: Choice) -> None:
        i = c.node
        if self.cpu[i] < t.cpu or self.mem[i] < t.mem:
            raise ValueError(f"{self.names[i]}: CPU or memory exhausted by {t}")
        for g in c.gpus:
            need = t.milli
            if self.left[i, g] < need or (not t.share and self.left[i, g] != FULL):
                raise ValueError(f"{self.names[i]}: GPU {g} cannot take {t}")
            self.left[i, g] -= need
        if len(c.gpus) != t.num_gpu:
            raise ValueError(f"{self.names[i]}: {t} needs {t.num_gpu} GPUs, got {c.gpus}")
        self.cpu[i] -= t.cpu
        self.mem[i] -= t.mem
        row = self.left[i]
        self.full[i] = int((row == FULL).sum())
        self.maxleft[i] = int(row.max())
        self.total[i] = int(row.sum())
        self.allocated += t.gpu_milli
        if t.num_gpu:
            self.tags[i, t.tag] += 1
