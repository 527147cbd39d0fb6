"""filter and prioritize on a state view: binpack's vectorised fit/score, mapped onto the request's nodes.

A fit is computed once per (demand, snapshot generation) and a score once per (demand, generation,
mix version), then reused by every pod with the same demand and by prioritize after filter (the
pod's demand itself is parsed once per UID by ClusterState.request); all of it is kept in one
`VerbCache` (cycle.py), per generation and per cluster layout. Request node names become
snapshot rows with one dict lookup each into a NumPy array (a list sent before is recognised by its
bytes, and a shortlisted pod's large list is not resolved at all: `shortlisted`); reasons are worded once per distinct
(reason, amount) and shared by every node that has them, so 5,000 failing nodes cost no more than
a few distinct sentences. Messages start with "gpupack: " so `kubectl describe pod` says who spoke.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Protocol

import numpy as np
import orjson

from binpack import Demand, FitResult, Reason, fit, score
from binpack.fit import model_sets
from binpack.score import MAX_SCORE, integer_scores
from binpack.snapshot import Static
from scheduler.extender import wire
from scheduler.extender.cycle import (
    CACHE_SIZE,
    Answer,
    AnswerKey,
    LayoutTables,
    Passed,
    RankKey,
    ValuesKey,
    VerbCache,
)
from scheduler.extender.shortlist import pick, shortlist
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
    stash: Passed | None = None  # what passed, kept for the prioritize that follows


class Names:
    """A request's node list resolved against one snapshot layout: rows (-1: unknown).

    kube-scheduler filters nodes in parallel, so the list it sends comes in a different order pod
    after pod: it is resolved with one dict lookup per name (no key over the whole list, which
    would cost as much and rarely hit). An unchanged list is still recognised by one comparison
    with the few lists seen last; the list prioritize gets is usually exactly what filter passed
    for the pod, and is then cut from filter's rows. A list seen again (`reused`) gets a byte
    template of its prioritize answer, filled per request without a Python loop; any other list is
    answered from its names (wire.prioritize_result)."""

    def __init__(self, names: Sequence[str], rows: np.ndarray, parts: dict[str, bytes], static: Static,
                 parent: tuple[Names, np.ndarray] | None = None) -> None:
        self.names = names
        self.rows = rows
        self.static = static  # the snapshot layout the rows index
        self.reused = False
        self.raw: bytes | None = None  # the list's JSON as it was sent, when it came that way
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
    """The verbs' arithmetic over binpack's fit and score, remembering through one VerbCache."""

    def __init__(self, cache_size: int = CACHE_SIZE, plugins: Plugins | None = None, keep: int = 0) -> None:
        # filter passes at most this many best nodes (ties kept) to pods without soft preferences of
        # their own; 0 passes every fitting node (scheduler/extender/shortlist.py)
        self.keep = keep
        self.cache = VerbCache(cache_size)
        # plugins (pod groups) may hold a pod back before any node is looked at, or pin it to one node; only
        # for the pods they claim, so other pods keep the answer cache (scheduler/state/plugin.py)
        self.plugins = plugins or Plugins()
        self.veto: NodeVeto | None = None

    def fit(self, view: StateView, demand: Demand) -> FitResult:
        snap = view.snapshot
        return self.cache.cycle(snap.generation).fit(demand, lambda: fit(snap, demand))

    def values(self, view: StateView, demand: Demand) -> np.ndarray:
        """Float scores for every snapshot node (-inf where the demand does not fit).

        binpack.score remembers each demand's values per node and, after a bind, redoes only the
        nodes that changed; this keeps the answer per generation too (filter, then prioritize)."""
        key = ValuesKey(demand, view.mix.version, len(view.mix))
        return self.cache.cycle(view.snapshot.generation).values(
            key, lambda: score(self.fit(view, demand), view.mix).value)

    # -- filter -----------------------------------------------------------------------------------------
    def names(self, view: StateView, names: Sequence[str], uid: str = "") -> Names:
        """`table` for a list at hand rather than a request's bytes (tests, benchmarks)."""
        return self.table(view, wire.ExtenderArgs({}, list(names), None, {}), uid)

    def table(self, view: StateView, args: wire.ExtenderArgs, uid: str = "") -> Names:
        """The request's node list resolved to snapshot rows; WireError when a name is not a string.

        `uid`: prioritize's list is usually exactly what filter passed for the pod; then it is cut
        from filter's list instead of being looked up name by name. A list seen lately is reused. A
        list sent as raw bytes (wire.ExtenderArgs.raw) is compared as bytes (one memcmp each) and parsed
        only when it matches none."""
        raw = args.raw
        layout = self.cache.layout(view.snapshot.static)
        stash = layout.passed_for(uid) if uid else None
        if stash is not None and (stash.raw == raw if raw is not None else args.names == stash.names):
            return stash.subset()
        same = layout.same_raw(raw) if raw is not None else layout.same_list(args.names)
        if same is not None:
            same.reused = True
            return same
        return self._resolve(layout, args.names, raw)

    def _resolve(self, layout: LayoutTables, names: Sequence[str], raw: bytes | None) -> Names:
        static = layout.static
        try:
            rows = np.fromiter(map(static.index.get, names, repeat(-1)), np.int64, len(names))
        except TypeError:  # an unhashable element
            raise wire.WireError("node names must be strings") from None
        if (rows < 0).any():
            wire.require_names(names)  # an unknown name may be a number, not a node
        hit = Names(names, rows, self.cache.part_table(), static)
        hit.raw = raw
        layout.remember(hit)
        return hit

    def quick_list(self, view: StateView, args: wire.ExtenderArgs) -> bool:
        """Whether filter may answer from the shortlist without resolving the list (`shortlisted`): a
        large list sent as plain bytes, not seen before (a list seen before has its answers cached per
        generation). The list's form and size are checked here (400 / 413 before the pod is read)."""
        raw = args.raw
        if self.keep <= 0 or raw is None or len(raw) < 4 * wire.FULL_UP_TO:
            return False
        if self.cache.layout(view.snapshot.static).same_raw(raw) is not None:
            return False
        opens = args.plain()
        return opens is not None and len(opens) > wire.FULL_UP_TO

    def shortlisted(self, view: StateView, req: PodRequest | None, args: wire.ExtenderArgs) -> bytes | None:
        """filter's answer for a shortlisted pod with a `quick_list`, found without resolving the list
        (shortlist.pick), or None: the pod or the cluster needs the full path (a pod a plugin or the
        DRA veto may answer differently, one with soft preferences, one that fits nowhere). Nodes not
        shortlisted are not named, those that do not fit included (kube-scheduler reads reasons only
        when no node is left), nor counted in gpupack_filter_rejections_total (counting them is what
        resolving the list costs)."""
        opens = args.plain()
        if (opens is None or args.raw is None or req is None or not req.managed or req.soft
                or self.plugins.applies(req) or (self.veto is not None and self.veto.applies(req))):
            return None
        layout = self.cache.layout(view.snapshot.static)
        rows = pick(args.raw, opens, self.values(view, req.demand), layout.quoted(), self.keep)
        if rows is None:
            return None
        names = view.snapshot.static.names
        return wire.filter_result(args, [], {}, {}, [names[r] for r in rows])

    def filter_answer(self, view: StateView, req: PodRequest | None, invalid: str, table: Names,
                      args: wire.ExtenderArgs) -> tuple[bytes, dict[str, int]]:
        """The ExtenderFilterResult and the rejections by reason. In NodeNames mode the answer is the
        same for every pod with the same demand, node list and snapshot, so it is made once."""
        key = None
        held = req is not None and self.plugins.applies(req)  # a plugin may answer differently per pod
        held = held or (req is not None and self.veto is not None and self.veto.applies(req))
        if args.items is None and req is not None and req.managed and not view.invalid and not held:
            key = AnswerKey(table, req.demand, req.soft)
            hit = self.cache.cycle(view.snapshot.generation).answer(key)
            if hit is not None:
                if hit.passed is not None:
                    self.cache.layout(table.static).pass_(req.uid, hit.passed)
                return hit.body, hit.reasons
        out = self.filter(view, req, invalid, table)
        raw = None
        if args.items is None and out.passed_names is not None:
            # encoded once: the answer's NodeNames, and what prioritize's list is compared with
            raw = orjson.dumps(out.passed_names)
            if out.stash is not None:
                out.stash.raw = raw
        body = wire.filter_result(args, out.passed, out.failed, out.unresolvable, out.passed_names, raw)
        if key is not None:
            self.cache.cycle(view.snapshot.generation).keep_answer(
                key, Answer(body, out.reasons, out.stash))
        return body, out.reasons

    def filter(self, view: StateView, req: PodRequest | None, invalid: str, table: Names) -> FilterOutcome:
        """Which nodes pass; the others with a reason, split by whether preemption could help."""
        vetoed = req is not None and self.veto is not None and self.veto.applies(req)
        out = self._filter(view, req, invalid, table, quiet=len(table.names) > wire.FULL_UP_TO and not vetoed)
        if vetoed and req is not None and self.veto is not None and out.passed:
            _veto(out, self.veto(req, view, [table.names[j] for j in out.passed]), table.names)
        if req is not None and self.keep > 0 and req.managed and not req.soft and len(out.passed) > self.keep:
            self._shortlist(view, req, table, out)
        if req is not None and out.passed_names is not None:
            out.stash = Passed(table, np.asarray(out.passed, np.int64), out.passed_names)
            if req.uid:
                self.cache.layout(table.static).pass_(req.uid, out.stash)
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

    def _filter(self, view: StateView, req: PodRequest | None, invalid: str, table: Names,
                quiet: bool = False) -> FilterOutcome:
        """`quiet`: when some node passes, the others are counted by reason but not named. kube-scheduler
        reads the extender's per-node reasons only when no node is left (FailedScheduling, preemption:
        schedule_one.go's schedulePod returns before them otherwise), and at thousands of nodes decoding
        a reason per failed node into its status map is most of an answer's cost. Lists of up to
        wire.FULL_UP_TO nodes always name every node, as the recorded answers do."""
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
        quiet = quiet and bool(out.passed)
        self._unknown(view, names, np.flatnonzero(~known), out, named=not quiet)
        bad = np.flatnonzero(known & ~ok)
        if len(bad) and quiet:
            _count(out, verdict.reason[rows[bad]])
        elif len(bad):
            self._reasons(verdict, rows[bad], np.asarray([names[i] for i in bad.tolist()], dtype=object), out)
        return out

    @staticmethod
    def _unknown(view: StateView, names: Sequence[str], pos: np.ndarray, out: FilterOutcome,
                 named: bool = True) -> None:
        for j in pos.tolist():
            n = names[j]
            why = view.invalid.get(n)
            if why is None:
                if named:
                    out.failed[n] = UNKNOWN  # may be known soon (the watch is behind): not final
                out.reasons["unknown_node"] = out.reasons.get("unknown_node", 0) + 1
            else:
                if named:
                    out.unresolvable[n] = f"{PREFIX}inventory unreadable: {why}"
                out.reasons["invalid_inventory"] = out.reasons.get("invalid_inventory", 0) + 1

    @staticmethod
    def _reasons(verdict: FitResult, rows: np.ndarray, names: np.ndarray, out: FilterOutcome) -> None:
        reason = verdict.reason[rows].astype(np.int64)
        have = np.clip(verdict.have[rows], 0, (1 << 40) - 1)
        sig = np.where(reason == Reason.WRONG_MODEL, model_sets(verdict.snapshot.static)[rows], 0)
        key = (reason << 56) | (sig << 40) | have
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        words = np.asarray([PREFIX + verdict.message(int(rows[f])) for f in first.tolist()], dtype=object)
        msgs = words[inv.reshape(-1)]
        res = verdict.resolvable[rows]
        out.failed.update(zip(names[res].tolist(), msgs[res].tolist(), strict=True))
        out.unresolvable.update(zip(names[~res].tolist(), msgs[~res].tolist(), strict=True))
        _count(out, reason)

    # -- prioritize -------------------------------------------------------------------------------------
    def prioritize_answer(self, view: StateView, req: PodRequest | None, table: Names) -> bytes:
        """The HostPriorityList; the same for every pod with the same demand and node list at one
        snapshot and mix, so it is made once (as filter's answer is)."""
        if req is None or not req.managed or not view.ready:
            scores = self.prioritize(view, req, table) if view.ready else np.zeros(len(table.names), np.int64)
            return wire.prioritize_result(table.template, scores)
        template = table.template
        key = RankKey(table, ValuesKey(req.demand, view.mix.version, len(view.mix)),
                      isinstance(template, wire.ScoreTemplate))
        cycle = self.cache.cycle(view.snapshot.generation)
        hit = cycle.answer(key)
        if hit is None:
            hit = Answer(wire.prioritize_result(template, self.prioritize(view, req, table)), {}, None)
            cycle.keep_answer(key, hit)
        return hit.body

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


def _count(out: FilterOutcome, reason: np.ndarray) -> None:
    """The rejections by reason (gpupack_filter_rejections_total)."""
    codes, counts = np.unique(reason, return_counts=True)
    for c, k in zip(codes.tolist(), counts.tolist(), strict=True):
        label = Reason(int(c)).name.lower()
        out.reasons[label] = out.reasons.get(label, 0) + k


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
