"""The cluster snapshot: NumPy columns per node and per GPU slot, immutable, with a generation.

Layout: N nodes x K GPU slots (K = most GPUs on any node rounded up to a multiple of 8; missing
slots are `valid == False`), so a row of bools is whole machine words and per-node counts are a
popcount (see rows.py). Static facts (model, memory, MIG layout, links) are shared by every version;
free capacity lives in persistent columns (persist.py), so allocate/release make a new snapshot in
O(GPUs of one node) while older snapshots stay readable. Two columns are derived from the others
and kept up to date by allocate/release, because every fit and score reads them: `free_milli` (the
usable fraction of each GPU) and `whole_bits` (a node's whole-free GPUs as a bit set).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from binpack.catalog import FULL_MILLI, lookup
from binpack.memo import LayoutMemo
from binpack.persist import Columns, Diff, _Version
from binpack.topology import pair_scores
from binpack.types import MigMode, Node

VERSIONED = ("mem_free", "compute_free", "mig_used", "me_used", "cpu_free", "hmem_free", "foreign", "free_milli",
             "whole_bits")


@dataclass(frozen=True, eq=False)
class Static:
    """What does not change between versions of one cluster (plus caches of what is derived from it)."""

    nodes: tuple[Node, ...]
    names: tuple[str, ...]
    index: dict[str, int]
    k: int
    valid: np.ndarray  # (N,K) bool
    healthy: np.ndarray  # (N,K) bool
    model: np.ndarray  # (N,K) int16, index into `models`, -1 for no GPU
    models: tuple[str, ...]
    mem_total: np.ndarray  # (N,K) int32 MiB
    mig_mode: np.ndarray  # (N,K) int8 MigMode
    layout: np.ndarray  # (N,K) uint32: static MIG layouts as bits of (profile, start) placements
    nvlink: np.ndarray  # (N,K,K) int16 link counts
    pair: np.ndarray  # (N,K,K) int32 pair scores (100 per NVLink + PCIe points)
    gpu_count: np.ndarray  # (N,) int16
    cpu_total: np.ndarray  # (N,) int64 milli
    hmem_total: np.ndarray  # (N,) int64 MiB
    topo_id: np.ndarray  # (N,) int32: nodes with equal NVLink and PCIe matrices share an id
    complete: np.ndarray  # (N,) bool: every GPU pair NVLinked (NVSwitch-like)
    memo: LayoutMemo = field(default_factory=LayoutMemo, repr=False)  # what binpack derives from the layout

    @property
    def plain(self) -> np.ndarray:
        """(N,K) valid, healthy GPUs not in MIG mode: the ones whole GPUs and shares use."""
        hit = self.memo.plain
        if hit is None:
            hit = self.memo.plain = _frozen(self.valid & self.healthy & (self.mig_mode == MigMode.NONE))
        return hit

    @property
    def gpu_bit(self) -> np.ndarray:
        """(K,) int64: the bit of each GPU slot in a node's bit set."""
        return np.left_shift(np.int64(1), np.arange(self.k, dtype=np.int64))

    def model_mask(self, models: frozenset[str]) -> np.ndarray:
        """(M,) bool per model id of the cluster: whether it is one of `models`."""
        hit = self.memo.model_mask.get(models)
        if hit is None:
            hit = self.memo.model_mask[models] = _frozen(np.asarray([m in models for m in self.models], bool))
        return hit

    def model_ok(self, models: frozenset[str]) -> np.ndarray:
        """(N,K) mask of valid, healthy GPUs of an allowed model (any model when empty)."""
        hit = self.memo.model_ok.get(models)
        if hit is None:
            base = self.valid & self.healthy
            if models:
                base = base & np.isin(self.model, np.flatnonzero(self.model_mask(models)).astype(np.int16))
            hit = self.memo.model_ok[models] = _frozen(base)
        return hit

    def model_bits(self, models: frozenset[str]) -> np.ndarray:
        """(N,) bit sets of the plain GPUs (see `plain`) of an allowed model (any model when empty)."""
        hit = self.memo.model_bits.get(models)
        if hit is None:
            bits = ((self.model_ok(models) & self.plain) * self.gpu_bit).sum(axis=1)
            hit = self.memo.model_bits[models] = _frozen(bits)
        return hit


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class View:
    """One version's columns, read inside Snapshot.read(); attribute access only."""

    __slots__ = ("_cols", "compute_free", "cpu_free", "foreign", "hmem_free", "me_used", "mem_free", "mig_used",
                 "milli", "s", "whole_bits")

    def __init__(self, s: Static, cols: dict[str, np.ndarray], columns: Columns | None = None) -> None:
        self.s = s
        self._cols = columns
        self.mem_free = cols["mem_free"]
        self.compute_free = cols["compute_free"]
        self.mig_used = cols["mig_used"]
        self.me_used = cols["me_used"]
        self.cpu_free = cols["cpu_free"]
        self.hmem_free = cols["hmem_free"]
        self.foreign = cols["foreign"]
        self.milli = cols["free_milli"]
        self.whole_bits = cols["whole_bits"]

    @property
    def epoch(self) -> int | None:
        """A count of the changes made to this cluster's columns so far (None: not tracked)."""
        return None if self._cols is None else self._cols.epoch

    def changed_since(self, epoch: int | None) -> np.ndarray | None:
        """Sorted rows that differ from what a reader saw at `epoch` (None: unknown, assume all)."""
        return None if self._cols is None or epoch is None else self._cols.changed_since(epoch)

    def whole_free(self, models: frozenset[str] = frozenset()) -> np.ndarray:
        """(N,K) GPUs free as whole GPUs: healthy, non-MIG, nothing shared on them (of the models)."""
        free = self.milli == FULL_MILLI
        return free & self.s.model_ok(models) if models else free

    def free_milli(self) -> np.ndarray:
        """(N,K) usable fraction of each non-MIG GPU in milli: the scarcer of compute and memory."""
        return self.milli


@dataclass(frozen=True)
class NodeRow:
    """One node's static facts as plain Python values, for the per-node work of allocate/release."""

    gpus: int  # GPUs on the node (slots 0..gpus-1 are valid)
    plain: tuple[bool, ...]  # healthy and not in MIG mode, per slot
    mig_mode: tuple[int, ...]
    mem_total: tuple[int, ...]


def node_row(s: Static, i: int) -> NodeRow:
    rows = s.memo.node_rows
    hit = rows.get(i)
    if hit is None:
        hit = rows[i] = NodeRow(int(s.gpu_count[i]), tuple(s.plain[i].tolist()), tuple(s.mig_mode[i].tolist()),
                                tuple(s.mem_total[i].tolist()))
    return hit


def derived_row(r: NodeRow, mem: list[int], comp: list[int]) -> tuple[np.ndarray, int]:
    """A node's free_milli row and whole_bits from its free memory and compute (plain ints: one node's
    eight values cost less in Python than in NumPy calls)."""
    milli = [min(c, m * FULL_MILLI // max(t, 1)) if ok else 0
             for ok, m, c, t in zip(r.plain, mem, comp, r.mem_total, strict=True)]
    bits = sum(1 << g for g, x in enumerate(milli) if x == FULL_MILLI)
    return np.asarray(milli, np.int16), bits


_generations = itertools.count(1)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """An immutable cluster state. Read columns with `with snap.read() as v:`."""

    static: Static
    _cols: Columns
    _version: _Version
    generation: int

    @classmethod
    def build(cls, nodes: Sequence[Node]) -> Snapshot:
        return cls(*_build(tuple(nodes)), next(_generations))

    @property
    def names(self) -> tuple[str, ...]:
        return self.static.names

    def node_index(self, name: str) -> int:
        try:
            return self.static.index[name]
        except KeyError:
            raise ValueError(f"node {name!r} is not in the snapshot") from None

    def node(self, name: str) -> Node:
        return self.static.nodes[self.node_index(name)]

    @contextmanager
    def read(self) -> Iterator[View]:
        with self._cols.read(self._version) as cols:
            yield View(self.static, dict(cols), self._cols)

    def derive(self, changes: Diff) -> Snapshot:
        """A new snapshot with the given rows of the versioned columns replaced."""
        return Snapshot(self.static, self._cols, self._cols.derive(self._version, changes), next(_generations))

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the versioned columns (for comparing two snapshots)."""
        with self._cols.read(self._version) as cols:
            return {k: cols[k].copy() for k in VERSIONED}

    def same_state(self, other: Snapshot) -> bool:
        a, b = self.state(), other.state()
        return self.static is other.static and all(np.array_equal(a[k], b[k]) for k in VERSIONED)

    def nbytes(self) -> int:
        """Bytes held in NumPy columns (static and versioned)."""
        s = self.static
        arrays = [s.valid, s.healthy, s.model, s.mem_total, s.mig_mode, s.layout, s.nvlink, s.pair,
                  s.gpu_count, s.cpu_total, s.hmem_total, s.topo_id, s.complete, s.plain]
        with self._cols.read(self._version) as cols:
            return sum(a.nbytes for a in arrays) + sum(cols[k].nbytes for k in VERSIONED)


def _build(nodes: tuple[Node, ...]) -> tuple[Static, Columns, _Version]:
    names = tuple(n.name for n in nodes)
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"nodes: duplicate node name {dup!r}")
    n_nodes = len(nodes)
    k = -(-max([len(n.gpus) for n in nodes] + [1]) // 8) * 8  # whole bytes of bools per row (rows.py)
    valid = np.zeros((n_nodes, k), bool)
    healthy = np.zeros((n_nodes, k), bool)
    model = np.full((n_nodes, k), -1, np.int16)
    mem_total = np.zeros((n_nodes, k), np.int32)
    mig_mode = np.zeros((n_nodes, k), np.int8)
    layout = np.zeros((n_nodes, k), np.uint32)
    mig_used = np.zeros((n_nodes, k), np.uint8)
    nvlink = np.zeros((n_nodes, k, k), np.int16)
    pair = np.zeros((n_nodes, k, k), np.int32)
    model_ids: dict[str, int] = {}
    topo_ids: dict[tuple[object, object], int] = {}  # pair scores (memoised by topo_id) need both matrices
    topo_id = np.zeros(n_nodes, np.int32)
    complete = np.zeros(n_nodes, bool)
    for i, node in enumerate(nodes):
        g = len(node.gpus)
        for j, gpu in enumerate(node.gpus):
            valid[i, j] = True
            healthy[i, j] = gpu.healthy
            model[i, j] = model_ids.setdefault(gpu.model, len(model_ids))
            mem_total[i, j] = gpu.memory_mib
            mig_mode[i, j] = int(gpu.mig_mode)
            if gpu.mig_mode is MigMode.STATIC:
                geom = lookup(gpu.model).mig  # type: ignore[union-attr]
                assert geom is not None
                bits = geom.placement_bits()
                for inst in gpu.mig_instances:
                    layout[i, j] |= np.uint32(1 << bits[(inst.profile, inst.start)])
        if g:
            nv = np.asarray(node.nvlink, np.int16)
            nvlink[i, :g, :g] = nv
            pair[i, :g, :g] = pair_scores(node.nvlink, node.pcie)
            off = ~np.eye(g, dtype=bool)
            complete[i] = bool(g == 1 or (nv[off] > 0).all())
        topo_id[i] = topo_ids.setdefault((node.nvlink, node.pcie), len(topo_ids))
    for a in (valid, healthy, model, mem_total, mig_mode, layout, nvlink, pair, topo_id, complete):
        a.flags.writeable = False
    gpu_count = valid.sum(axis=1).astype(np.int16)
    cpu_total = np.asarray([n.cpu_milli for n in nodes], np.int64)
    hmem_total = np.asarray([n.memory_mib for n in nodes], np.int64)
    static = Static(
        nodes, names, index, k, valid, healthy, model, tuple(model_ids), mem_total, mig_mode, layout,
        nvlink, pair, gpu_count, cpu_total, hmem_total, topo_id, complete,
    )
    compute_free = np.where(valid, FULL_MILLI, 0).astype(np.int16)
    milli = np.where(static.plain, compute_free, 0).astype(np.int16)
    cols = Columns({
        "mem_free": mem_total.copy(),
        "compute_free": compute_free,
        "free_milli": milli,
        "whole_bits": ((milli == FULL_MILLI) * static.gpu_bit).sum(axis=1),
        "mig_used": mig_used,
        "me_used": np.zeros((n_nodes, k), bool),
        "cpu_free": cpu_total.copy(),
        "hmem_free": hmem_total.copy(),
        "foreign": np.zeros(n_nodes, np.int16),
    })
    return static, cols, cols.root
