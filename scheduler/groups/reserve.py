"""Plans and reservations of pod groups: binpack.place_group on the newest snapshot (computed outside the state
lock), the plan reserved whole or not at all as bookings carrying the group (ClusterState.reserve_all), and
a group released whole when one of its reservations is lost.

When several groups are ready, they are planned in order (priority desc, creation time, namespace/name),
each reserved whole or not at all, so two groups racing for the same GPUs never hold half of them each.
A reservation lost before its member is bound (expired, pod deleted, bind undone) releases the rest of its
group's reservations; the group is planned again on its members' next filter. The reservations live in the
ledger only (state/ledger.py: bookings with a group); this module keeps what the ledger does not: plans that
found nothing (so N members' filters do not each plan the same cluster again) and nodes kube-scheduler refused.
Lock order (state/locks.py): planning, then state.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from binpack import Conflict, DemandKind, GroupResult, GroupStatus, Placement, Snapshot, place_group, set_foreign
from scheduler import events as ev
from scheduler.groups.members import GroupKey, Look, Member, Members
from scheduler.groups.metrics import GroupMetrics
from scheduler.state.cluster import ClusterState
from scheduler.state.locks import PLANNING, ordered

log = logging.getLogger("gpupack.groups")


@dataclass(frozen=True)
class GroupSettings:
    """Planning limits. kube-scheduler's httpTimeout (default 5 s) bounds one filter call, planning included."""

    plan_s: float = 1.0  # CP-SAT time limit for one group (greedy first, so a plan usually exists at once)
    round_s: float = 2.0  # all ready groups planned in one filter call; the rest wait for the next call
    # a group that did not fit is planned again as soon as the cluster changed, unless that plan was costly
    # (over `costly_s`, e.g. CP-SAT ran to its time limit): then not before `retry_s` has passed
    retry_s: float = 1.0
    costly_s: float = 0.05
    ttl_s: float | None = None  # reservation lifetime; None: the state's assume TTL (GPUPACK_ASSUME_TTL_S)
    workers: int = 1  # CP-SAT workers: 1 keeps the other verbs' core free and the plans repeatable

    def __post_init__(self) -> None:
        if not (0 <= self.plan_s <= self.round_s and self.retry_s >= 0 and self.workers >= 1):
            raise ValueError("GroupSettings: 0 <= plan_s <= round_s, retry_s >= 0, workers >= 1")
        if self.ttl_s is not None and self.ttl_s <= 0:
            raise ValueError("GroupSettings: ttl_s must be > 0")


@dataclass(frozen=True, slots=True)
class Failure:
    """A plan that found nothing, kept so that N members' filters do not each plan the same cluster again."""

    reason: str
    generation: int
    at: float
    members: frozenset[str]
    costly: bool  # the plan took long: do not plan again on every change of the cluster


class Reservations:
    """Plans and the reservations made of them. Its tables are guarded by the state's lock; planning runs
    under a lock of its own, outside the state lock."""

    def __init__(self, state: ClusterState, settings: GroupSettings, members: Members, metrics: GroupMetrics) -> None:
        self.state = state
        self.settings = settings
        self.members = members
        self.metrics = metrics
        self.ttl_s = settings.ttl_s if settings.ttl_s is not None else state.assume_ttl_s
        self.failures: dict[GroupKey, Failure] = {}
        self.refused: dict[GroupKey, dict[str, float]] = {}  # nodes kube-scheduler refused for a plan -> when
        self._planning = ordered(PLANNING, threading.Lock())
        self.events: ev.EventRecorder | None = None  # Events on members: waits, plans, releases (app.py sets it)

    def _prune(self) -> None:
        """Forget what is kept of groups whose last member left (the state released their reservations)."""
        alive = set(self.members.groups())
        for table in (self.failures, self.refused):
            for key in [k for k in table if k not in alive]:
                del table[key]

    # -- reservations -----------------------------------------------------------------------------------
    def check(self, key: GroupKey) -> dict[str, Placement]:
        """The group's live reservations (members not bound yet). A lost one (expired, its pod deleted, its
        bind undone) releases all the others: a group is reserved whole or not at all."""
        gb = self.state.group_bookings(key)
        if not gb.planned:
            return {}
        members = self.members.of(key)

        def bound(uid: str) -> bool:
            m = members.get(uid)
            return m is not None and bool(m.node)

        live = {u: p for u, p in gb.live.items() if not bound(u)}
        lost = [u for u in gb.lost if not bound(u)]
        if lost:
            self.release(key, live, f"reservation of {len(lost)} member(s) lost")
            return {}
        if not live:  # every planned member is bound: the plan is done
            self.state.close_group(key)
            self.metrics.events.labels("bound").inc()
        return live

    def release(self, key: GroupKey, live: dict[str, Placement], why: str) -> None:
        planned = self.state.release_group(key, live)
        members = self.members.of(key)
        for uid, p in planned.items():
            if (m := members.get(uid)) is not None and not m.node:
                self.event(m, ev.WARNING, ev.RESERVATION_RELEASED,
                           f"pod group {key[1]}: {why}; every reservation of the group released, planned again",
                           p.node)
        self.metrics.events.labels("expired").inc()
        log.info("pod group %s/%s: %s; %d reservation(s) released, planned again", key[0], key[1], why, len(live))

    def reserved(self) -> dict[GroupKey, dict[str, Placement]]:
        """Live reservations of every group (tests and the preempt hook read them)."""
        with self.state.atomic():
            return {k: live for k in self.state.open_groups() if (live := self.check(k))}

    def fresh(self, key: GroupKey, look: Look, generation: int) -> bool:
        """Whether the group's last failed plan still holds (nothing changed, or it was costly and recent)."""
        f = self.failures.get(key)
        if f is None or f.members != frozenset(m.uid for m in look.pending):
            return False
        return f.generation == generation or (f.costly and self.state.clock() - f.at < self.settings.retry_s)

    # -- planning ---------------------------------------------------------------------------------------
    def round(self) -> None:
        """Plan every ready group, in order, within the round's time."""
        with self._planning:
            end = time.perf_counter() + self.settings.round_s
            with self.state.atomic():
                self._prune()
                gen = self.state.view().snapshot.generation
                ready = [k for k in self.members.groups()
                         if (lk := self.members.look(k)).ready and not self.fresh(k, lk, gen)]
                ready.sort(key=self.members.order)
            for key in ready:
                left = end - time.perf_counter()
                if left <= 0:
                    break
                self.plan(key, min(self.settings.plan_s, left))

    def plan(self, key: GroupKey, limit_s: float) -> GroupResult | None:
        """Plan the group's pending members on the newest snapshot and reserve the plan whole; the result
        (None when there was nothing to plan). A plan that no longer fits when reserved is made again once."""
        res = None
        for _ in range(2):
            with self.state.atomic():
                look = self.members.look(key)
                if not look.ready:
                    return res
                view = self.state.view()
                snap = self._avoiding(key, view.snapshot)
            t0 = time.perf_counter()
            res = place_group(snap, [m.request.demand for m in look.pending], view.mix,
                              time_limit_s=limit_s, workers=self.settings.workers, seed=0)
            took = time.perf_counter() - t0
            self.metrics.planning.observe(took)
            with self.state.atomic():
                if self.members.look(key).pending != look.pending:
                    return res  # members came or went while planning: the next filter plans again
                if not res.placed:
                    self.failures[key] = Failure(_why(key[1], look.pending, res, limit_s),
                                                 view.snapshot.generation, self.state.clock(),
                                                 frozenset(m.uid for m in look.pending),
                                                 took > self.settings.costly_s)
                    self.metrics.events.labels("unplaceable").inc()
                    return res
                if self._reserve(key, look.pending, res.placements):
                    return res
        return res

    def _avoiding(self, key: GroupKey, snap: Snapshot) -> Snapshot:
        """The snapshot to plan on: nodes kube-scheduler refused for the group (within a TTL) look full of
        foreign whole GPUs, so the plan goes elsewhere (for members asking whole GPUs or fresh GPUs)."""
        refused = self.refused.get(key, {})
        now = self.state.clock()
        for node, at in list(refused.items()):
            if now - at > self.ttl_s:
                del refused[node]
            elif node in snap.static.index:
                snap = set_foreign(snap, node, len(snap.node(node).gpus))
        return snap

    def _reserve(self, key: GroupKey, members: tuple[Member, ...], placements: tuple[Placement, ...]) -> bool:
        """Assume every member's placement or none (under the state lock)."""
        try:
            self.state.reserve_all(key, [(m.uid, p, m.request) for m, p in zip(members, placements, strict=True)],
                                   self.ttl_s)
        except Conflict as e:
            log.info("pod group %s/%s: the cluster changed while planning (%s)", key[0], key[1], e)
            return False
        self.failures.pop(key, None)
        self.metrics.events.labels("planned").inc()
        nodes = sorted({p.node for p in placements})
        log.info("pod group %s/%s: %d member(s) reserved on %d node(s)", key[0], key[1], len(members), len(nodes))
        for m, p in zip(members, placements, strict=True):
            self.event(m, ev.NORMAL, ev.GROUP_PLANNED,
                       f"pod group {key[1]}: {len(members)} member(s) reserved on {', '.join(nodes)}; this member's "
                       f"devices on {p.node}", p.node)
        return True

    def event(self, m: Member, type_: str, reason: str, message: str, node: str = "") -> None:
        if self.events is not None:
            self.events.record(ev.PodRef(m.request.namespace, m.request.name, m.uid), type_, reason, message, node)

    # -- for the metrics --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.state.atomic():
            self._prune()
            out = {"waiting": 0, "reserved": 0}
            for key in self.members.groups():
                if self.check(key):  # a plan whose members are all bound (or lost) is closed here too
                    out["reserved"] += 1
                elif (lk := self.members.look(key)).exist < lk.need or lk.held < lk.need:
                    out["waiting"] += 1
            return out


def _why(name: str, pending: tuple[Member, ...], res: GroupResult, limit_s: float) -> str:
    gpus = sum(m.request.demand.count for m in pending if m.request.demand.kind is DemandKind.WHOLE)
    what = f"its {len(pending)} pending members" + (f" ({gpus} GPUs)" if gpus else "")
    if res.status is GroupStatus.TIMED_OUT:
        return f"pod group {name}: no placement for {what} found within {limit_s:.1f} s; nothing is reserved"
    return f"pod group {name}: {what} do not fit in the cluster together; nothing is reserved"
