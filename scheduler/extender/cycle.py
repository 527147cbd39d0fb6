"""The verbs' memory: what filter and prioritize compute for a snapshot, in one object (`VerbCache`).

As kube-scheduler's CycleState, what a demand needs is computed once and read by every later call
that sees the same cluster. Two holders, each with one invalidation rule:

- `Cycle`, per snapshot generation (any bind, watch event or learned mix change makes a new one):
  per demand its fit verdict, per (demand, mix) its float scores, per (node list, demand) the filter
  and the prioritize answer bytes. The newest two generations are kept (a request may still hold the previous view);
  the older one drops its answers at once (only the newest is asked for them again).
- `LayoutTables`, per cluster layout (snapshot Static: the nodes and their GPUs, shared by every
  generation until a node is added or removed): request node lists resolved to snapshot rows, and
  per pod what filter passed (prioritize follows with exactly that list).

binpack keeps its own incremental memory (per-node scores, fragmentation state) with the layout and
the mix (binpack/memo.py); nothing here is keyed by strings or ids. Every store is bounded by entries
and, where its values grow with the node list, by bytes or names held (issue 17).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from binpack import Demand, FitResult
from binpack.snapshot import Static

if TYPE_CHECKING:
    from scheduler.extender.verdicts import Names

CACHE_SIZE = 256  # demands per generation (verdicts, scores)
ANSWERS = 64  # filter answers per generation...
ANSWER_BYTES = 64 * 2**20  # ...and at most this many bytes of them
RECENT_LISTS = 4  # node lists compared with a new request's list before resolving it name by name
PASSED_PODS = 32  # each holds a whole node list (5,000 fresh strings: ~0.4 MB)...
PASSED_NAMES = 500_000  # ...and at most this many names passed in all
TEMPLATE_BYTES = 96  # a passed name's rows entry, template bytes and offsets: ~60 at 20,000 nodes, rounded up
PARTS = 100_000  # node names' answer pieces kept before starting over (names come and go)


class Lru(OrderedDict[Any, Any]):
    """An LRU bounded by entries and, with `weigh`, by the total weight of its values (node names or
    bytes held): entries grow with the requests' node lists, so a count alone bounds no memory."""

    def __init__(self, size: int, weigh: Callable[[Any], int] | None = None, max_weight: int = 0) -> None:
        super().__init__()
        self.size = size
        self._weigh = weigh
        self._max = max_weight
        self._weights: dict[Any, int] = {}
        self.weight = 0

    def put(self, key: Any, value: Any) -> None:
        if self._weigh is not None:
            self.weight -= self._weights.pop(key, 0)
            w = self._weigh(value)
            if w > self._max:
                self.pop(key, None)
                return  # larger than the whole cache: not kept
            self._weights[key] = w
            self.weight += w
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size or (self._weigh is not None and self.weight > self._max):
            old, _ = self.popitem(last=False)
            self.weight -= self._weights.pop(old, 0)

    def clear(self) -> None:
        super().clear()
        self._weights.clear()
        self.weight = 0


class Passed:
    """What filter passed: the node list it was sent, the positions and names passed. Shared by every
    pod given the same cached answer, so the list prioritize then gets is cut from the filter's list
    once (`subset`, with its answer template) rather than per pod."""

    __slots__ = ("_sub", "keep", "names", "raw", "table")

    def __init__(self, table: Names, keep: np.ndarray, names: list[str]) -> None:
        self.table = table
        self.keep = keep
        self.names = names
        self.raw: bytes | None = None  # the names as filter's answer encoded them
        self._sub: Names | None = None

    def subset(self) -> Names:
        if self._sub is None:  # two threads racing make equal tables: no lock needed
            self._sub = self.table.subset(self.keep, self.names)
        return self._sub


@dataclass(frozen=True, slots=True)
class Answer:
    """A filter answer as sent, the rejections by reason (a metric), and what passed (for prioritize)."""

    body: bytes
    reasons: dict[str, int]
    passed: Passed | None

    @property
    def weight(self) -> int:
        """Bytes held: the body, the passed names' encoding, and at most TEMPLATE_BYTES per passed name
        once prioritize has cut their list and answer template."""
        if self.passed is None:
            return len(self.body)
        return len(self.body) + len(self.passed.raw or b"") + TEMPLATE_BYTES * len(self.passed.names)


@dataclass(frozen=True, slots=True)
class ValuesKey:
    """Float scores depend on the demand and the learned mix (its version and size) at a generation."""

    demand: Demand
    mix_version: int
    mix_len: int


@dataclass(frozen=True, slots=True)
class AnswerKey:
    """A NodeNames filter answer is the same for every pod with this demand, node list and soft
    preferences (the shortlist keeps every node for a pod with preferences of its own)."""

    table: Names
    demand: Demand
    soft: bool


@dataclass(frozen=True, slots=True)
class RankKey:
    """A prioritize answer is the same for every pod with this demand (its float scores) and node list,
    in the form the list gets (every node from its template, or the sparse list: wire.prioritize_result)."""

    table: Names
    values: ValuesKey
    full: bool


@dataclass(eq=False)
class Cycle:
    """What the requests of one snapshot generation computed (read and written under `lock`)."""

    generation: int
    verdicts: Lru = field(default_factory=lambda: Lru(CACHE_SIZE))  # Demand -> FitResult
    scores: Lru = field(default_factory=lambda: Lru(CACHE_SIZE))  # ValuesKey -> (N,) read-only floats
    answers: Lru = field(default_factory=lambda: Lru(ANSWERS, lambda a: a.weight, ANSWER_BYTES))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fit(self, demand: Demand, build: Callable[[], FitResult]) -> FitResult:
        """The demand's verdict at this generation, built once (outside the lock: other demands
        need not wait; two threads racing on one demand build equal verdicts)."""
        with self.lock:
            hit: FitResult | None = self.verdicts.get(demand)
        if hit is None:
            hit = build()
            with self.lock:
                self.verdicts.put(demand, hit)
        return hit

    def values(self, key: ValuesKey, build: Callable[[], np.ndarray]) -> np.ndarray:
        """The demand's float scores at this generation and mix, built once, read-only."""
        with self.lock:
            hit: np.ndarray | None = self.scores.get(key)
        if hit is None:
            hit = build()
            hit.flags.writeable = False
            with self.lock:
                self.scores.put(key, hit)
        return hit

    def answer(self, key: AnswerKey | RankKey) -> Answer | None:
        with self.lock:
            got: Answer | None = self.answers.get(key)
        return got

    def keep_answer(self, key: AnswerKey | RankKey, answer: Answer) -> None:
        with self.lock:
            self.answers.put(key, answer)


@dataclass(eq=False)
class LayoutTables:
    """Node lists resolved against one cluster layout, and what filter passed per pod."""

    static: Static
    recent: deque[Names] = field(default_factory=lambda: deque(maxlen=RECENT_LISTS))
    passed: Lru = field(default_factory=lambda: Lru(PASSED_PODS, lambda p: len(p.names) + 1, PASSED_NAMES))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _quoted: list[bytes] | None = field(default=None, repr=False)

    def quoted(self) -> list[bytes]:
        """Each snapshot row's name as a JSON string (`"name"`), to find it in a list's bytes."""
        if self._quoted is None:  # two threads racing build equal lists
            self._quoted = [b'"' + n.encode() + b'"' for n in self.static.names]
        return self._quoted

    def same_list(self, names: Sequence[str]) -> Names | None:
        """A recently resolved list equal to `names` (a list in another order fails at once)."""
        return self._find(lambda t: t.names == names)

    def same_raw(self, raw: bytes) -> Names | None:
        """A recently resolved list sent as exactly these bytes (one memcmp each)."""
        return self._find(lambda t: t.raw == raw)

    def _find(self, same: Callable[[Names], bool]) -> Names | None:
        with self.lock:
            recent = list(self.recent)
        return next((t for t in recent if same(t)), None)

    def remember(self, table: Names) -> None:
        with self.lock:
            self.recent.append(table)

    def passed_for(self, uid: str) -> Passed | None:
        with self.lock:
            got: Passed | None = self.passed.get(uid)
        return got

    def pass_(self, uid: str, passed: Passed) -> None:
        with self.lock:
            self.passed.put(uid, passed)


class VerbCache:
    """The one place the verbs remember anything: the cycles of the newest two generations, the
    tables of the current layout, and per node name its piece of a prioritize answer. Lock order:
    this cache's lock, then a cycle's (when a newer cycle clears the previous one's answers); no
    lock is held while binpack computes."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._size = cache_size
        self._lock = threading.Lock()
        self._cycles: dict[int, Cycle] = {}
        self._layout: LayoutTables | None = None
        self.parts: dict[str, bytes] = {}  # node name -> its prioritize answer piece (layout-independent)

    def cycle(self, generation: int) -> Cycle:
        """The cycle of a generation. A newer one replaces all but the previous (whose answers go); a
        request still holding a generation older than those gets a cycle of its own, not kept."""
        with self._lock:
            hit = self._cycles.get(generation)
            if hit is not None:
                return hit
            newest = max(self._cycles, default=-1)
            hit = Cycle(generation, Lru(self._size), Lru(self._size))  # the size: tests shrink it
            if generation < newest - 1:
                return hit
            self._cycles[generation] = hit
            top = max(generation, newest)
            for g in [g for g in self._cycles if g < top - 1]:
                del self._cycles[g]
            for g, c in self._cycles.items():
                if g < top:
                    with c.lock:
                        c.answers.clear()
            return hit

    @property
    def generations(self) -> list[int]:
        """The generations whose cycles are kept (tests)."""
        with self._lock:
            return sorted(self._cycles)

    def layout(self, static: Static) -> LayoutTables:
        """The tables of this layout; a new layout starts empty (its rows mean other nodes)."""
        with self._lock:
            if self._layout is None or self._layout.static is not static:
                self._layout = LayoutTables(static)
            return self._layout

    def part_table(self) -> dict[str, bytes]:
        """The answer pieces per node name, started over when it grew past PARTS."""
        with self._lock:
            if len(self.parts) > PARTS:
                self.parts = {}
            return self.parts
