"""The workload mix that fragmentation is measured against, learned online from the pods seen.

A Mix is an immutable set of task classes with probabilities; MixLearner builds one from observed
demands with exponential decay (recent pods weigh more) and an optional prior (e.g. another
cluster's mix) that fades as real observations accumulate. As FGD's "typical pods": classes are
keyed by GPU shape, CPU and models (not host memory; a class carries its pods' mean host memory),
the most frequent ones up to `coverage` of all tasks are kept, and tasks asking for no GPU count too
(all free GPU is lost to them). Beside the classes, a Mix keeps the share of GPU volume asked for by
each restricted set of models, and by each multi-GPU class (which only some nodes may be big enough
for), over every pod seen: rare classes fall out of the classes but their claim on scarce nodes must
not (score.py's contention term).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from binpack.catalog import FULL_MILLI
from binpack.memo import MixTables
from binpack.types import MAX_AMOUNT, MAX_GPUS_PER_NODE, Demand, DemandKind, Topology


@dataclass(frozen=True, slots=True)
class TaskClass:
    """A kind of task in the mix: GPUs it takes (count x per-GPU milli), CPU, memory, models, and
    whether its GPUs must be NVLinked pairwise (only some boards can host that: contention)."""

    count: int
    milli: int
    cpu_milli: int = 0
    host_memory_mib: int = 0
    models: frozenset[str] = frozenset()
    nvlink: bool = False

    def __post_init__(self) -> None:
        # the mix's arrays are int64: one class out of range would break every score, so none is made
        if not 0 <= self.count <= MAX_GPUS_PER_NODE or not 0 <= self.milli <= FULL_MILLI:
            raise ValueError(f"task class: count 0..{MAX_GPUS_PER_NODE} and milli 0..{FULL_MILLI}, "
                             f"got {self.count} x {self.milli}")
        if not 0 <= self.cpu_milli <= MAX_AMOUNT or not 0 <= self.host_memory_mib <= MAX_AMOUNT:
            raise ValueError(f"task class: cpu_milli and host_memory_mib must be 0..{MAX_AMOUNT}")

    @classmethod
    def of(cls, d: Demand) -> TaskClass | None:
        if d.kind is DemandKind.WHOLE:
            linked = d.topology is Topology.NVLINK and d.count > 1
            return cls(d.count, FULL_MILLI, d.cpu_milli, 0, d.models, linked)
        if d.kind is DemandKind.SHARE:
            return cls(1, max(d.compute_milli, 1), d.cpu_milli, 0, d.models)
        return None


@dataclass(frozen=True, eq=False)
class Mix:
    """Task classes and their probabilities, as arrays for vectorised fragmentation."""

    classes: tuple[TaskClass, ...]
    prob: np.ndarray  # (T,) float64, sums to 1 - cpu_only
    version: int = 0
    cpu_only: float = 0.0  # probability of a task asking for no GPU
    # (models, share of all GPU volume asked for) per restricted set of models; shares sum to <= 1
    restricted: tuple[tuple[frozenset[str], float], ...] = ()
    # (milli, frequency among shares) per share size, over every pod seen (plan.py's pairing plan)
    shares: tuple[tuple[int, float], ...] = ()
    # (class with its pods' mean host memory, share of all GPU volume) per multi-GPU class that allows
    # any model: whether only some nodes can host it depends on the cluster (score.py's contention)
    shaped: tuple[tuple[TaskClass, float], ...] = ()
    # what binpack derives from this mix alone, built on first use (not an init field: `replace` and
    # a new mix start empty)
    tables: MixTables = field(default_factory=MixTables, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, weighted: Iterable[tuple[TaskClass, float]], version: int = 0, cpu_only: float = 0.0,
           volume: Iterable[tuple[frozenset[str], float]] | None = None,
           shares: Iterable[tuple[int, float]] | None = None,
           shaped: Iterable[tuple[TaskClass, float]] | None = None) -> Mix:
        """Probabilities from weights; `cpu_only` is the weight of tasks asking for no GPU; `volume`
        the GPU volume (milli) asked for per set of models (frozenset() = any), `shares` the weight
        of each share size, `shaped` the GPU volume of each class, all by default the classes' own."""
        items = [(c, w) for c, w in weighted if w > 0]
        w0 = max(cpu_only, 0.0)
        total = sum(w for _, w in items) + w0
        if not items or total <= 0:
            return EMPTY_MIX
        prob = np.asarray([w / total for _, w in items], np.float64)
        prob.flags.writeable = False
        volume = [(c.models, w * c.count * c.milli) for c, w in items] if volume is None else list(volume)
        if shares is None:
            shares = [(c.milli, w) for c, w in items if c.count == 1 and c.milli < FULL_MILLI]
        restricted = sorted(((m, f) for m, f in _fractions(volume) if m), key=lambda mf: sorted(mf[0]))
        share_freq = sorted(_fractions(shares))
        vol = sum(max(v, 0.0) for _, v in volume)
        shaped = [(c, w * c.count * c.milli) for c, w in items] if shaped is None else shaped
        multi = tuple((c, v / vol) for c, v in shaped if c.count > 1 and not c.models and v > 0) if vol > 0 else ()
        return cls(tuple(c for c, _ in items), prob, version, w0 / total, tuple(restricted), tuple(share_freq),
                   multi)

    def __len__(self) -> int:
        return len(self.classes)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(count, milli, cpu, memory) per class."""
        c = self.classes
        return (np.asarray([x.count for x in c], np.int64), np.asarray([x.milli for x in c], np.int64),
                np.asarray([x.cpu_milli for x in c], np.int64),
                np.asarray([x.host_memory_mib for x in c], np.int64))


K = TypeVar("K")


def _fractions(weighted: Iterable[tuple[K, float]]) -> list[tuple[K, float]]:
    """Weights summed per key, as fractions of the total (keys with no weight left out)."""
    per: dict[K, float] = {}
    for key, w in weighted:
        per[key] = per.get(key, 0.0) + max(w, 0.0)
    total = sum(per.values())
    return [(k, w / total) for k, w in per.items() if w > 0] if total > 0 else []


EMPTY_MIX = Mix((), np.zeros(0), 0)


_CPU_ONLY = TaskClass(0, 0)  # the key under which tasks asking for no GPU are counted


class MixLearner:
    """Learns the mix online: each observation decays the old weights by `decay`.

    The Mix is rebuilt when a new class appears or every `refresh_every` observations, so scoring
    reuses its per-mix tables between pods. `max_classes` and `coverage` keep the frequent classes
    only, so scoring stays O(classes x GPUs); with `keep_multi`, every multi-GPU class is kept too
    (up to `max_classes`): an 8-GPU job may be 3% of pods and 15% of the GPUs asked for, and below
    the cut FGD's measure lets 1-GPU pods scatter over the only nodes it fits."""

    def __init__(self, decay: float = 0.9995, prior: Mix | None = None, prior_weight: float = 200.0,
                 max_classes: int = 24, coverage: float = 0.95, refresh_every: int = 64,
                 keep_multi: bool = True) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay: must be in (0, 1], got {decay}")
        if max_classes < 1:
            raise ValueError(f"max_classes: must be >= 1, got {max_classes}")
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage: must be in (0, 1], got {coverage}")
        if refresh_every < 1:
            raise ValueError(f"refresh_every: must be >= 1, got {refresh_every}")
        self.decay = decay
        self.max_classes = max_classes
        self.coverage = coverage
        self.refresh_every = refresh_every
        self.keep_multi = keep_multi
        self._w: dict[TaskClass, float] = {}
        self._mem: dict[TaskClass, float] = {}  # weighted host memory, for each class's mean
        self._vol: dict[frozenset[str], float] = {}  # weighted GPU milli per set of models
        self._sizes: dict[int, float] = {}  # weight per share size
        self._scale = 1.0  # weights are stored divided by the running decay factor
        self._version = 0
        self._since = 0
        self._cached: Mix | None = None
        if prior is not None:
            for c, p in zip(prior.classes, prior.prob, strict=True):
                self._add(replace(c, host_memory_mib=0), float(p) * prior_weight, c.host_memory_mib)
            if prior.cpu_only:
                self._w[_CPU_ONLY] = prior.cpu_only * prior_weight
            if prior.restricted:  # the prior's volume split, restricted sets as the prior saw them
                vol = sum(float(p) * c.count * c.milli for c, p in zip(prior.classes, prior.prob, strict=True))
                self._vol = {m: share * vol * prior_weight for m, share in prior.restricted}
                self._vol[frozenset()] = max(vol * prior_weight - sum(self._vol.values()), 0.0)

    def _add(self, cls: TaskClass, w: float, host_memory_mib: int) -> None:
        self._w[cls] = self._w.get(cls, 0.0) + w
        self._mem[cls] = self._mem.get(cls, 0.0) + w * host_memory_mib
        if cls.count:
            self._vol[cls.models] = self._vol.get(cls.models, 0.0) + w * cls.count * cls.milli
        if cls.count == 1 and cls.milli < FULL_MILLI:
            self._sizes[cls.milli] = self._sizes.get(cls.milli, 0.0) + w

    def observe(self, demand: Demand, weight: float = 1.0) -> None:
        """Count one pod. Everything is checked before anything changes: a bad weight raises ValueError
        and leaves the learner as it was (Demand and TaskClass bound every amount, so no pod can make
        the learner's floats or the mix's int64 arrays overflow)."""
        if not (isinstance(weight, int | float) and math.isfinite(weight) and 0 <= weight <= 1e6):
            raise ValueError(f"observe: weight must be a finite number in 0..1e6, got {weight!r}")
        # a MIG slice counts as CPU-only: like a pod without GPUs it can use none of the free milli of
        # the plain GPUs that the measure counts (leaving MIG pods out cost 0.16 on bench synthetic)
        cls = TaskClass.of(demand) or _CPU_ONLY
        self._scale /= self.decay
        if self._scale > 1e100:  # renormalise before floats overflow
            s = self._scale
            self._w = {c: w / s for c, w in self._w.items()}
            self._mem = {c: w / s for c, w in self._mem.items()}
            self._vol = {m: w / s for m, w in self._vol.items()}
            self._sizes = {m: w / s for m, w in self._sizes.items()}
            self._scale = 1.0
        new = cls not in self._w
        self._add(cls, weight * self._scale, demand.host_memory_mib)
        self._version += 1
        self._since += 1
        if new or self._since >= self.refresh_every:
            self._cached = None

    def mix(self) -> Mix:
        if self._cached is None:
            w0 = self._w.get(_CPU_ONLY, 0.0)
            gpu = sorted(((c, w) for c, w in self._w.items() if c != _CPU_ONLY), key=lambda kv: -kv[1])
            total, acc = sum(w for _, w in gpu) + w0, w0
            chosen: list[tuple[TaskClass, float]] = []
            for c, w in gpu[: self.max_classes]:  # the most frequent, up to `coverage` of all tasks
                if chosen and acc >= self.coverage * total:
                    break
                chosen.append((c, w))
                acc += w
            if self.keep_multi:  # rare by count, large by volume, and the first that scattering strands
                rest = [(c, w) for c, w in gpu[len(chosen):] if c.count > 1]
                chosen += rest[: max(self.max_classes - len(chosen), 0)]
            kept = [(self._with_memory(c, w), w) for c, w in chosen]
            shaped = [(self._with_memory(c, w), w * c.count * c.milli) for c, w in gpu if c.count > 1]
            self._cached = Mix.of(kept, self._version, cpu_only=w0, volume=self._vol.items(),
                                  shares=self._sizes.items(), shaped=shaped)
            self._since = 0
        return self._cached

    def _with_memory(self, c: TaskClass, w: float) -> TaskClass:
        """The class with its pods' mean host memory (classes are keyed without it)."""
        return replace(c, host_memory_mib=round(self._mem.get(c, 0.0) / w))
