"""filter and prioritize on a state view: binpack's vectorised fit/score, mapped onto the request's nodes.

A fit is computed once per (demand, snapshot generation) and a score once per (demand, generation,
mix version), then reused by every pod with the same demand and by prioritize after filter (the
pod's demand itself is parsed once per UID by ClusterState.request). Request node names become
snapshot rows with one dict lookup each into a NumPy array; reasons are worded once per distinct
(reason, amount) and shared by every node that has them, so 5,000 failing nodes cost no more than
a few distinct sentences. Messages start with "gpupack: " so `kubectl describe pod` says who spoke.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, Protocol

import numpy as np

from binpack import Demand, FitResult, Reason, fit, score
from binpack.score import MAX_SCORE, integer_scores
from scheduler.extender import wire
from scheduler.extender.shortlist import shortlist
from scheduler.state.cluster import StateView
from scheduler.state.plugin import Pin, Plugins
from scheduler.translate.pod import PodRequest

PREFIX = "gpupack: "
UNKNOWN = PREFIX + "unknown to gpupack (no inventory yet)"
NEUTRAL = MAX_SCORE // 2



class NodeVeto(Protocol):
    """A per-node check after the fit (DRA allocate mode: can the pod's claims get devices there?).
    Answers node -> (reason, whether preemption could help) for the nodes it refuses."""

    def applies(self, req: PodRequest) -> bool: ...

    def __call__(self, req: PodRequest, view: StateView, names: Sequence[str]) -> dict[str, tuple[str, bool]]: ...


@dataclass
class FilterOutcome:
    passed: list[int]  # positions in the request's node list
    passed_names: list[str] | None = None  # their names, when already at hand
    failed: dict[str, str] = field(default_factory=dict)
    unresolvable: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)  # rejections by reason (a metric)


class _Lru(OrderedDict[Any, Any]):
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


class Names:
    """A request's node list resolved against one snapshot layout: rows (-1: unknown).

    kube-scheduler filters nodes in parallel, so the list it sends comes in a different order pod
    after pod: it is resolved with one dict lookup per name (no key over the whole list, which
    would cost as much and rarely hit). An unchanged list is still recognised by one comparison
    with the few lists seen last; the list prioritize gets is usually exactly what filter passed
    for the pod, and is then cut from filter's rows. A list seen again (`reused`) gets a byte
    template of its prioritize answer, filled per request without a Python loop; any other list is
    answered from its names (wire.prioritize_result)."""

    def __init__(self, names: Sequence[str], rows: np.ndarray, parts: dict[str, bytes], static: object,
                 parent: tuple[Names, np.ndarray] | None = None) -> None:
        self.names = names
        self.rows = rows
        self.static = static  # the snapshot layout the rows index
        self.reused = False
        self._parts = parts
        self._parent = parent  # (the list this one was cut from, the positions kept)
        self._template: wire.ScoreTemplate | None = None

    def _full(self) -> wire.ScoreTemplate:
        if self._template is None:
            if self._parent is not None:
                whole, keep = self._parent
                self._template = wire.sub_template(whole._full(), keep)
            else:
                parts = self._parts
                if len(parts) > 100_000:  # node names come and go: start over rather than grow forever
                    parts.clear()
                get = parts.get
                self._template = wire.score_template(
                    [get(n) or parts.setdefault(n, wire.score_part(n)) for n in self.names])
        return self._template

    @property
    def template(self) -> wire.ScoreTemplate | wire.HostList:
        whole = self._parent[0] if self._parent is not None else self
        if whole.reused and len(self.names) > wire.FULL_UP_TO:
            return self._full()
        return wire.HostList(self.names)

    def subset(self, keep: np.ndarray, names: list[str]) -> Names:
        return Names(names, self.rows[keep], self._parts, self.static, (self, keep))


class Engine:
    """The verbs' arithmetic, with the fit, score and node-list caches."""

    def __init__(self, cache_size: int = 256, plugins: Plugins | None = None, keep: int = 0) -> None:
        # filter passes at most this many best nodes (ties kept) to pods without soft preferences of
        # their own; 0 passes every fitting node (scheduler/extender/shortlist.py)
        self.keep = keep
        self._fits = _Lru(cache_size)
        self._fit_gen = -1  # the newest snapshot generation fitted
        self._scores = _Lru(cache_size)
        self._recent: deque[Names] = deque(maxlen=4)  # the node lists resolved last
        self._parts: dict[str, bytes] = {}  # per node name, its piece of a prioritize answer template
        # pod UID -> (filter's node list, positions passed, names passed), for the prioritize that follows
        # at once; each holds a whole node list (5,000 fresh strings: ~0.4 MB), so only a few are kept,
        # and at most 500,000 names passed in all
        self._passed = _Lru(32, lambda v: len(v[2]) + 1, 500_000)
        # (node list, demand, generation) -> filter answer bytes, rejections...; at most 64 MiB of answers
        self._answers = _Lru(64, lambda v: len(v[0]), 64 * 2**20)
        self._lock = threading.Lock()
        # plugins (pod groups) may hold a pod back before any node is looked at, or pin it to one node; only
        # for the pods they claim, so other pods keep the answer cache (scheduler/state/plugin.py)
        self.plugins = plugins or Plugins()
        self.veto: NodeVeto | None = None

    def fit(self, view: StateView, demand: Demand) -> FitResult:
        key = (demand, view.snapshot.generation)
        with self._lock:
            hit = self._fits.get(key)
        if hit is None:
            hit = fit(view.snapshot, demand)
            gen = view.snapshot.generation
            with self._lock:
                self._fits.put(key, hit)
                if gen > self._fit_gen:  # a verdict holds its snapshot: let those of old generations go
                    self._fit_gen = gen
                    for k in [k for k in self._fits if k[1] < gen - 1]:
                        del self._fits[k]
        return hit

    def values(self, view: StateView, demand: Demand) -> np.ndarray:
        """Float scores for every snapshot node (-inf where the demand does not fit).

        binpack.score remembers each demand's values per node and, after a bind, redoes only the
        nodes that changed; this keeps the answer per generation too (filter, then prioritize)."""
        snap = view.snapshot
        key = (demand, view.mix.version, len(view.mix), snap.static)
        with self._lock:
            hit = self._scores.get(key)
        if hit is not None and hit[0] == snap.generation:
            return hit[1]
        vals = score(self.fit(view, demand), view.mix).value
        vals.flags.writeable = False
        with self._lock:
            self._scores.put(key, (snap.generation, vals))
        return vals

    # -- filter -----------------------------------------------------------------------------------------
    def names(self, view: StateView, names: Sequence[str], uid: str = "") -> Names:
        """The node list resolved to snapshot rows; WireError when a name is not a string.

        `uid`: prioritize's list is usually exactly what filter passed for the pod; then it is cut
        from filter's list (one list comparison) instead of being looked up name by name."""
        static = view.snapshot.static
        with self._lock:
            stash = self._passed.get(uid) if uid else None
        if stash is not None:
            whole, keep, passed = stash
            if whole.static is static and names == passed:
                return whole.subset(keep, passed)
        with self._lock:
            recent = list(self._recent)
        for t in recent:  # a different order fails at the first name or so
            if t.static is static and t.names == names:
                t.reused = True
                return t
        try:
            rows = np.fromiter(map(static.index.get, names, repeat(-1)), np.int64, len(names))
        except TypeError:  # an unhashable element
            raise wire.WireError("node names must be strings") from None
        if (rows < 0).any():
            wire.require_names(names)  # an unknown name may be a number, not a node
        hit = Names(names, rows, self._parts, static)
        with self._lock:
            self._recent.append(hit)
        return hit

    def filter_answer(self, view: StateView, req: PodRequest | None, invalid: str, table: Names,
                      args: wire.ExtenderArgs) -> tuple[bytes, dict[str, int]]:
        """The ExtenderFilterResult and the rejections by reason. In NodeNames mode the answer is the
        same for every pod with the same demand, node list and snapshot, so it is made once."""
        key = None
        held = req is not None and self.plugins.applies(req)  # a plugin may answer differently per pod
        held = held or (req is not None and self.veto is not None and self.veto.applies(req))
        if args.items is None and req is not None and req.managed and not view.invalid and not held:
            key = (table, req.demand, req.soft, view.snapshot.generation)
            with self._lock:
                hit = self._answers.get(key)
            if hit is not None:
                body, reasons, keep, passed = hit
                with self._lock:
                    self._passed.put(req.uid, (table, keep, passed))
                return body, reasons
        out = self.filter(view, req, invalid, table)
        body = wire.filter_result(args, out.passed, out.failed, out.unresolvable, out.passed_names)
        if key is not None:
            with self._lock:
                self._answers.put(key, (body, out.reasons, np.asarray(out.passed, np.int64), out.passed_names))
        return body, out.reasons

    def filter(self, view: StateView, req: PodRequest | None, invalid: str, table: Names) -> FilterOutcome:
        """Which nodes pass; the others with a reason, split by whether preemption could help."""
        out = self._filter(view, req, invalid, table)
        if req is not None and self.veto is not None and out.passed and self.veto.applies(req):
            _veto(out, self.veto(req, view, [table.names[j] for j in out.passed]), table.names)
        if req is not None and self.keep > 0 and req.managed and not req.soft and len(out.passed) > self.keep:
            self._shortlist(view, req, table, out)
        if req is not None and req.uid and out.passed_names is not None:
            with self._lock:
                self._passed.put(req.uid, (table, np.asarray(out.passed, np.int64), out.passed_names))
        return out

    def _shortlist(self, view: StateView, req: PodRequest, table: Names, out: FilterOutcome) -> None:
        """Keep only the best `keep` passed nodes (and their ties); the rest leave the answer unnamed."""
        rows = table.rows[np.asarray(out.passed, np.int64)]
        if (rows < 0).any():  # a node that passed without being in the snapshot: pinned or unmanaged
            return
        best = shortlist(self.values(view, req.demand)[rows], self.keep).tolist()
        out.passed = [out.passed[i] for i in best]
        if out.passed_names is not None:
            names = out.passed_names
            out.passed_names = [names[i] for i in best]

    def _filter(self, view: StateView, req: PodRequest | None, invalid: str, table: Names) -> FilterOutcome:
        names = table.names
        if req is None:  # a malformed request: no node can ever take it as written
            msg = PREFIX + invalid
            return FilterOutcome([], [], {}, dict.fromkeys(names, msg), {"invalid_pod": len(names)})
        if not req.managed:
            return FilterOutcome(list(range(len(names))), list(names))
        held = self.plugins.filter(req, view, names)  # None unless a plugin claims the pod
        if isinstance(held, Pin):
            return _pinned(names, held)
        if held:
            return FilterOutcome([], [], dict.fromkeys(names, PREFIX + held), {}, {"held": len(names)})
        rows = table.rows
        verdict = self.fit(view, req.demand)
        out = FilterOutcome([])
        known = rows >= 0
        ok = np.zeros(len(names), bool)
        ok[known] = verdict.fits[rows[known]]
        out.passed = np.flatnonzero(ok).tolist()
        out.passed_names = list(compress(names, ok.tolist()))
        self._unknown(view, names, np.flatnonzero(~known), out)
        bad = np.flatnonzero(known & ~ok)
        if len(bad):
            self._reasons(verdict, rows[bad], np.asarray([names[i] for i in bad.tolist()], dtype=object), out)
        return out

    @staticmethod
    def _unknown(view: StateView, names: Sequence[str], pos: np.ndarray, out: FilterOutcome) -> None:
        for j in pos.tolist():
            n = names[j]
            why = view.invalid.get(n)
            if why is None:
                out.failed[n] = UNKNOWN  # may be known soon (the watch is behind): not final
                out.reasons["unknown_node"] = out.reasons.get("unknown_node", 0) + 1
            else:
                out.unresolvable[n] = f"{PREFIX}inventory unreadable: {why}"
                out.reasons["invalid_inventory"] = out.reasons.get("invalid_inventory", 0) + 1

    @staticmethod
    def _reasons(verdict: FitResult, rows: np.ndarray, names: np.ndarray, out: FilterOutcome) -> None:
        reason = verdict.reason[rows].astype(np.int64)
        have = np.clip(verdict.have[rows], 0, (1 << 40) - 1)
        sig = np.where(reason == Reason.WRONG_MODEL, _model_sig(verdict)[rows], 0)
        key = (reason << 56) | (sig << 40) | have
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        words = np.asarray([PREFIX + verdict.message(int(rows[f])) for f in first.tolist()], dtype=object)
        msgs = words[inv.reshape(-1)]
        res = verdict.resolvable[rows]
        out.failed.update(zip(names[res].tolist(), msgs[res].tolist(), strict=True))
        out.unresolvable.update(zip(names[~res].tolist(), msgs[~res].tolist(), strict=True))
        codes, counts = np.unique(reason, return_counts=True)
        for c, k in zip(codes.tolist(), counts.tolist(), strict=True):
            label = Reason(c).name.lower()
            out.reasons[label] = out.reasons.get(label, 0) + k

    # -- prioritize -------------------------------------------------------------------------------------
    def prioritize(self, view: StateView, req: PodRequest | None, table: Names) -> np.ndarray:
        """Integer scores 0..10 for the nodes given, spread over those where the pod fits."""
        names = table.names
        if req is None:
            return np.zeros(len(names), np.int64)
        if not req.managed:
            return np.full(len(names), NEUTRAL, np.int64)
        rows = table.rows
        known = rows >= 0
        vals = np.full(len(names), -np.inf)
        vals[known] = self.values(view, req.demand)[rows[known]]
        # the best node alone at 10: kube-scheduler breaks equal totals at random, which would undo
        # the consolidation the float scores encode
        return integer_scores(vals)


def _veto(out: FilterOutcome, refused: dict[str, tuple[str, bool]], names: Sequence[str]) -> None:
    """Take the refused nodes out of the passed ones, with their reasons."""
    if not refused:
        return
    objs = dict(zip(out.passed, out.passed_names, strict=True)) if out.passed_names is not None else None
    out.passed = [j for j in out.passed if names[j] not in refused]
    if objs is not None:
        out.passed_names = [objs[j] for j in out.passed]
    for n, (why, resolvable) in refused.items():
        (out.failed if resolvable else out.unresolvable)[n] = PREFIX + why
    out.reasons["claims"] = out.reasons.get("claims", 0) + len(refused)


def _pinned(names: Sequence[str], pin: Pin) -> FilterOutcome:
    """Only the pinned node passes (its devices are already reserved for the pod, so no fit is asked)."""
    others = dict.fromkeys((n for n in names if n != pin.node), PREFIX + pin.elsewhere)
    if len(others) == len(names):
        return FilterOutcome([], [], others, {}, {"held": len(names)})
    at = list(names).index(pin.node)
    return FilterOutcome([at], [pin.node], others, {}, {"held": len(others)} if others else {})


def _model_sig(verdict: FitResult) -> np.ndarray:
    """Per node, an id of its set of GPU models (the wrong-model sentence names them)."""
    s = verdict.snapshot.static
    hit = s.cache.get("gpupack.model_sig")
    if hit is None:
        ids: dict[frozenset[str], int] = {}
        hit = np.asarray([ids.setdefault(frozenset(g.model for g in n.gpus), len(ids)) for n in s.nodes], np.int64)
        s.cache["gpupack.model_sig"] = hit
    return hit
