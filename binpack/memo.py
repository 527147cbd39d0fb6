"""Everything binpack remembers between calls, as typed fields of two holders (no module-level caches).

- `LayoutMemo` hangs off a cluster layout (snapshot.Static, shared by every version of one cluster):
  tables derived from the layout alone, a bounded store of per-demand work (`per_demand`, typed keys),
  and per workload mix a `MixMemory` (weakly keyed: a mix replaced by a newer one takes its memory
  with it). What a `MixMemory` holds is valid across snapshot generations by construction: each entry
  carries the epoch of the columns it saw and is brought up to date from the columns' change log
  (persist.Columns), never read stale.
- `MixTables` hangs off a Mix (immutable): what is derived from the mix alone (frag's threshold
  groups and CPU/memory ratios, the pairing plan, the share ranking tables).

Invalidation is by ownership: a new layout (nodes added or removed) starts empty, a new mix starts
empty; nothing is keyed by `id()`. Per-cycle answers of the extender live in its own cycle object.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

if TYPE_CHECKING:
    from binpack.frag import Current, Groups
    from binpack.mix import Mix
    from binpack.score_memo import DemandValues
    from binpack.snapshot import NodeRow

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
PER_DEMAND_ENTRIES = 2048  # demands differ by CPU and memory asks: keep the per-demand store bounded
MEMO_SIZE = 32  # demands whose values are remembered per (layout, mix), least recently used first


class Bounded(Generic[K, V]):
    """A dict that drops its oldest entry when full (first in, first out)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._d: dict[K, V] = {}

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        hit = self._d.get(key)
        if hit is None:
            if len(self._d) >= self.size:
                del self._d[next(iter(self._d))]
            hit = self._d[key] = build()
        return hit

    def __len__(self) -> int:
        return len(self._d)


@dataclass(frozen=True, slots=True)
class VerdictKey:
    """per_demand: the reasons no eviction changes, for one demand."""

    demand: Hashable


@dataclass(frozen=True, slots=True)
class ShareOkKey:
    """per_demand: the GPUs a share of these models may use at all."""

    models: frozenset[str]


@dataclass(frozen=True, slots=True)
class MigKey:
    """per_demand: one MIG profile's table over the GPUs of these models."""

    profile: str
    models: frozenset[str]


@dataclass(frozen=True, slots=True)
class SetQualityKey:
    """per_board: the link quality of the best set of `count` GPUs (`nvlink`: all NVLinked)."""

    count: int
    nvlink: bool


@dataclass(eq=False)
class Contention:
    """Per (mix, layout): restricted demand per model, capacity, and the last contention (terms/contention.py)."""

    want: np.ndarray  # (M,) share of all GPU volume that restricted pods ask of each model
    cap: np.ndarray  # (M,) plain GPUs of each model
    value: np.ndarray  # (M + 1,) the last computed contention (last entry: no GPU, always 0)
    calls: int = 0


@dataclass(eq=False)
class MixMemory:
    """Per (layout, mix): frag's per-node state, the contention, and each demand's values per node.
    One writer at a time per store (the extender's threads share mixes and layouts); two locks,
    because computing values reads `current` (values_lock, then current_lock: never the reverse)."""

    current: Current | None = None
    contention: Contention | None = None
    values: OrderedDict[Hashable, DemandValues] = field(default_factory=OrderedDict)
    current_lock: threading.Lock = field(default_factory=threading.Lock)
    values_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(eq=False)
class LayoutMemo:
    """What is derived from one cluster layout, built on first use (snapshot.Static.memo)."""

    plain: np.ndarray | None = None
    model_mask: dict[frozenset[str], np.ndarray] = field(default_factory=dict)
    model_ok: dict[frozenset[str], np.ndarray] = field(default_factory=dict)
    model_bits: dict[frozenset[str], np.ndarray] = field(default_factory=dict)
    per_model_bits: np.ndarray | None = None  # (M, N) each model's plain GPUs per node
    model_sets: np.ndarray | None = None  # (N,) an id of each node's set of GPU models
    threshold_models: dict[tuple[Hashable, bytes], np.ndarray] = field(default_factory=dict)
    node_rows: dict[int, NodeRow] = field(default_factory=dict)
    incomplete: list[tuple[int, np.ndarray]] | None = None  # boards not fully NVLinked, by topology
    clique_tables: dict[int, np.ndarray] = field(default_factory=dict)
    offsets: tuple[np.ndarray, int] | None = None  # per_board's flat table layout
    per_board: dict[Hashable, np.ndarray] = field(default_factory=dict)
    mig_placements: dict[str, tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=dict)
    place_whole: dict[tuple[int, tuple[int, ...], int, bool], tuple[int, ...] | None] = field(default_factory=dict)
    disjoint: dict[tuple[int, int, int], int] = field(default_factory=dict)
    per_demand: Bounded[Hashable, Any] = field(default_factory=lambda: Bounded(PER_DEMAND_ENTRIES))
    per_mix: weakref.WeakKeyDictionary[Mix, MixMemory] = field(default_factory=weakref.WeakKeyDictionary)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def of_mix(self, mix: Mix) -> MixMemory:
        """This layout's memory for `mix` (made on first use)."""
        hit = self.per_mix.get(mix)
        if hit is None:
            with self._lock:  # two threads must not each make one and lose the other's work
                hit = self.per_mix.get(mix)
                if hit is None:
                    hit = self.per_mix[mix] = MixMemory()
        return hit


@dataclass(eq=False)
class MixTables:
    """What is derived from one mix alone, built on first use (Mix.tables)."""

    groups: Groups | None = None
    ratios: tuple[float, float] | None = None  # CPU and host memory per GPU milli (frag.stranded)
    plan: np.ndarray | None = None  # plan.planned_gaps
    ranks: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # share_choice._rank_table
