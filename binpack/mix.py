"""The workload mix that fragmentation is measured against, learned online from the pods seen.

A Mix is an immutable set of task classes with probabilities; MixLearner builds one from observed
demands with exponential decay (recent pods weigh more) and an optional prior (e.g. another
cluster's mix) that fades as real observations accumulate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from binpack.catalog import FULL_MILLI
from binpack.types import Demand, DemandKind


@dataclass(frozen=True, slots=True)
class TaskClass:
    """A kind of task in the mix: GPUs it takes (count x per-GPU milli), CPU, memory, models."""

    count: int
    milli: int
    cpu_milli: int = 0
    host_memory_mib: int = 0
    models: frozenset[str] = frozenset()

    @classmethod
    def of(cls, d: Demand) -> TaskClass | None:
        if d.kind is DemandKind.WHOLE:
            return cls(d.count, FULL_MILLI, d.cpu_milli, d.host_memory_mib, d.models)
        if d.kind is DemandKind.SHARE:
            return cls(1, max(d.compute_milli, 1), d.cpu_milli, d.host_memory_mib, d.models)
        return None


@dataclass(frozen=True, eq=False)
class Mix:
    """Task classes and their probabilities, as arrays for vectorised fragmentation."""

    classes: tuple[TaskClass, ...]
    prob: np.ndarray  # (T,) float64, sums to 1
    version: int = 0

    @classmethod
    def of(cls, weighted: Iterable[tuple[TaskClass, float]], version: int = 0) -> Mix:
        items = [(c, w) for c, w in weighted if w > 0]
        total = sum(w for _, w in items)
        if not items or total <= 0:
            return EMPTY_MIX
        prob = np.asarray([w / total for _, w in items], np.float64)
        prob.flags.writeable = False
        return cls(tuple(c for c, _ in items), prob, version)

    def __len__(self) -> int:
        return len(self.classes)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(count, milli, cpu, memory) per class."""
        c = self.classes
        return (np.asarray([x.count for x in c], np.int64), np.asarray([x.milli for x in c], np.int64),
                np.asarray([x.cpu_milli for x in c], np.int64),
                np.asarray([x.host_memory_mib for x in c], np.int64))


EMPTY_MIX = Mix((), np.zeros(0), 0)


class MixLearner:
    """Learns the mix online: each observation decays the old weights by `decay`.

    `max_classes` keeps the heaviest classes only, so scoring stays O(classes x GPUs)."""

    def __init__(self, decay: float = 0.9995, prior: Mix | None = None, prior_weight: float = 200.0,
                 max_classes: int = 24) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay: must be in (0, 1], got {decay}")
        if max_classes < 1:
            raise ValueError(f"max_classes: must be >= 1, got {max_classes}")
        self.decay = decay
        self.max_classes = max_classes
        self._w: dict[TaskClass, float] = {}
        self._scale = 1.0  # weights are stored divided by the running decay factor
        self._version = 0
        self._cached: Mix | None = None
        if prior is not None:
            for c, p in zip(prior.classes, prior.prob, strict=True):
                self._w[c] = float(p) * prior_weight

    def observe(self, demand: Demand, weight: float = 1.0) -> None:
        cls = TaskClass.of(demand)
        if cls is None:
            return
        self._scale /= self.decay
        if self._scale > 1e100:  # renormalise before floats overflow
            self._w = {c: w / self._scale for c, w in self._w.items()}
            self._scale = 1.0
        self._w[cls] = self._w.get(cls, 0.0) + weight * self._scale
        self._version += 1
        self._cached = None

    def mix(self) -> Mix:
        if self._cached is None:
            top = sorted(self._w.items(), key=lambda kv: -kv[1])[: self.max_classes]
            self._cached = Mix.of(top, self._version)
        return self._cached
