"""Pod groups: all-or-nothing placement of multi-pod jobs (`gpupack.io/pod-group`, `gpupack.io/pod-group-min`).

Owns a group's life in the extender: its members (learned from the watch, and from filter calls for pods
the watch has not shown yet), the plan (binpack.place_group on the newest snapshot, computed outside the
state lock), the reservations (one assumed booking per member with a deadline, taken all or nothing under
the state lock) and their expiry. The extender asks it through hooks (`install`):
  filter   a member is held ("waiting for pod group NAME: k of N members exist", or why the group does
           not fit), or pinned to the node its reservation is on
  bind     a member binds exactly the devices reserved for it, and never binds without them while its
           group is short of N placed members
  preempt  groups_preempt.py: evictions only where they make room for the whole group
Members are the pods with the annotation in one namespace that are not terminal, whatever their
schedulerName (the annotation is gpupack's own). Pods gpupack does not place (no GPU ask) count as held.
When several groups are ready, they are planned in order (priority desc, creation time, namespace/name),
each reserved whole or not at all, so two groups racing for the same GPUs never hold half of them each.
A reservation lost before its member is bound (expired, pod deleted, bind undone) releases the rest of its
group's reservations; the group is planned again on its members' next filter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from binpack import Conflict, DemandKind, GroupResult, GroupStatus, Placement, Snapshot, place_group, set_foreign
from scheduler import events as ev
from scheduler.extender.verdicts import Engine, Pin
from scheduler.groups_metrics import GroupMetrics
from scheduler.podspec import PodRequest
from scheduler.state.binder import Binder
from scheduler.state.cluster import TERMINAL, ClusterState, PodEntry, StateView
from scheduler.state.kubeapi import Obj

log = logging.getLogger("gpupack.groups")
GroupKey = tuple[str, str]  # (namespace, group name): groups are namespaced, like the pods in them


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
class Member:
    uid: str
    request: PodRequest
    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text); "" when not known
    node: str = ""  # spec.nodeName once bound


@dataclass(frozen=True, slots=True)
class Failure:
    """A plan that found nothing, kept so that N members' filters do not each plan the same cluster again."""

    reason: str
    generation: int
    at: float
    members: frozenset[str]
    costly: bool  # the plan took long: do not plan again on every change of the cluster


@dataclass(frozen=True, slots=True)
class Look:
    """A group as it stands: how many must be placed, exist, are held (bound, reserved, or not ours to place)."""

    need: int
    exist: int
    held: int
    pending: tuple[Member, ...]  # members to plan: neither bound nor reserved, oldest first

    @property
    def ready(self) -> bool:
        return self.exist >= self.need and self.held < self.need and bool(self.pending)


def _created(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("creationTimestamp") or "")


class PodGroups:
    """Members, plans and reservations of every pod group. Its tables are guarded by the state's lock;
    planning itself runs under a lock of its own, outside the state lock (lock order: planning, then state)."""

    def __init__(self, state: ClusterState, registry: CollectorRegistry | None = None,
                 settings: GroupSettings | None = None) -> None:
        self.state = state
        self.settings = settings or GroupSettings()
        self.ttl_s = self.settings.ttl_s if self.settings.ttl_s is not None else state.assume_ttl_s
        self._members: dict[GroupKey, dict[str, Member]] = {}
        self._key_of: dict[str, GroupKey] = {}
        self._plans: dict[GroupKey, dict[str, Placement]] = {}  # reserved (or since bound) placement per member
        self._failures: dict[GroupKey, Failure] = {}
        self._refused: dict[GroupKey, dict[str, float]] = {}  # nodes kube-scheduler refused for a plan -> when
        self._planning = threading.Lock()
        self.metrics = GroupMetrics(registry or CollectorRegistry(), self.counts)
        self.events: ev.EventRecorder | None = None  # Events on members: waits, plans, releases (app.py sets it)
        state.pod_listeners.append(self._observe)

    def install(self, engine: Engine, binder: Binder) -> None:
        """Plug into the extender's filter, preempt and bind."""
        from scheduler.groups_preempt import GroupPreempt  # it plans with this module's tables

        engine.hooks.append(self.filter)
        engine.preempt_hooks.append(GroupPreempt(self).preempt)
        binder.reservation = self.bind

    # -- members ----------------------------------------------------------------------------------------
    def _observe(self, uid: str, entry: PodEntry | None, obj: Obj | None) -> None:
        """A pod change from the watch (under the state lock)."""
        req = entry.request if entry is not None else None
        if entry is None or req is None or not req.group or entry.phase in TERMINAL:
            self._forget(uid)
        else:
            self._put(Member(uid, req, _created(obj), entry.node))

    def _learn(self, req: PodRequest) -> None:
        """A member kube-scheduler asks about before the watch showed it (or in demo mode, never)."""
        if req.uid and req.uid not in self._key_of:
            self._put(Member(req.uid, req, self.state.created(req.uid)))

    def _put(self, m: Member) -> None:
        key = (m.request.namespace, m.request.group)
        if self._key_of.get(m.uid, key) != key:
            self._forget(m.uid)  # its annotation changed: it left the old group
        self._members.setdefault(key, {})[m.uid] = m
        self._key_of[m.uid] = key

    def _forget(self, uid: str) -> None:
        key = self._key_of.pop(uid, None)
        if key is None:
            return
        group = self._members.get(key, {})
        group.pop(uid, None)
        if not group:  # the whole group is gone: nothing of it is worth keeping
            self._members.pop(key, None)
            self._failures.pop(key, None)
            self._refused.pop(key, None)
            for u in self._plans.pop(key, {}):
                self.state.unassume(u)

    def look(self, key: GroupKey) -> Look:
        members = self._members.get(key, {})
        plan = self._plans.get(key, {})
        need = max((m.request.group_min for m in members.values()), default=0)
        held, pending = 0, []
        for uid, m in members.items():
            b = self.state.booking(uid)
            if m.node or uid in plan or not m.request.managed or (b is not None and b.confirmed):
                held += 1
            else:
                pending.append(m)
        pending.sort(key=lambda m: (m.created, m.uid))
        return Look(need, len(members), held, tuple(pending))

    def order(self, key: GroupKey) -> tuple[int, str, str, str]:
        """Which ready group is planned first: priority desc, then the oldest, then by name."""
        ms = self._members.get(key, {}).values()
        prio = max((m.request.priority for m in ms), default=0)
        created = min((m.created for m in ms if m.created), default="\uffff")
        return -prio, created, key[0], key[1]

    # -- reservations -----------------------------------------------------------------------------------
    def check(self, key: GroupKey) -> dict[str, Placement]:
        """The group's live reservations (members not bound yet). A lost one (expired, its pod deleted, its
        bind undone) releases all the others: a group is reserved whole or not at all."""
        plan = self._plans.get(key)
        if not plan:
            return {}
        members = self._members.get(key, {})
        live: dict[str, Placement] = {}
        lost = []
        for uid, p in plan.items():
            b = self.state.booking(uid)
            m = members.get(uid)
            if b is not None and b.placement == p and b.assumed and not b.confirmed and not (m and m.node):
                live[uid] = p
            elif not (m is not None and m.node) and not (b is not None and b.placement == p):
                lost.append(uid)
        if lost:
            self._release(key, live, f"reservation of {len(lost)} member(s) lost")
            return {}
        if not live:  # every planned member is bound: the plan is done
            del self._plans[key]
            self.metrics.events.labels("bound").inc()
        return live

    def _release(self, key: GroupKey, live: dict[str, Placement], why: str) -> None:
        for uid in live:
            self.state.unassume(uid)
        planned = self._plans.pop(key)
        members = self._members.get(key, {})
        for uid, p in planned.items():
            if (m := members.get(uid)) is not None and not m.node:
                self._event(m, ev.WARNING, ev.RESERVATION_RELEASED,
                            f"pod group {key[1]}: {why}; every reservation of the group released, planned again",
                            p.node)
        self.metrics.events.labels("expired").inc()
        log.info("pod group %s/%s: %s; %d reservation(s) released, planned again", key[0], key[1], why, len(live))

    def reserved(self) -> dict[GroupKey, dict[str, Placement]]:
        """Live reservations of every group (tests and the preempt hook read them)."""
        with self.state.lock:
            return {k: live for k in list(self._plans) if (live := self.check(k))}

    # -- the filter hook --------------------------------------------------------------------------------
    def filter(self, req: PodRequest, view: StateView, names: Sequence[str]) -> str | Pin | None:
        key = (req.namespace, req.group)
        with self.state.lock:
            self._learn(req)
            mine = self.check(key).get(req.uid)
            if mine is not None and mine.node not in names:
                # kube-scheduler's own filters (CPU, affinity, taints) refused the planned node: plan the group
                # again now, away from that node, instead of holding its devices until the reservation expires
                self._refused.setdefault(key, {})[mine.node] = self.state.clock()
                self._release(key, self.check(key), f"node {mine.node} refused by kube-scheduler's filters")
            answer, plan = self._verdict(key, req.uid, view.snapshot.generation)
        if plan:
            self._round()
            with self.state.lock:
                answer, plan = self._verdict(key, req.uid, self.state.view().snapshot.generation)
            if plan:
                answer = f"pod group {req.group}: waiting for pod groups ahead of it to be planned"
        if isinstance(answer, str):
            waiting = answer.startswith(("waiting", f"pod group {req.group}: waiting"))
            self._event(Member(req.uid, req, ""), ev.NORMAL if waiting else ev.WARNING,
                        ev.GROUP_WAITING if waiting else ev.GROUP_UNPLACEABLE, answer)
        return answer

    def _verdict(self, key: GroupKey, uid: str, generation: int) -> tuple[str | Pin | None, bool]:
        """The member's answer, or (None, True) when its group must be planned first."""
        name = key[1]
        live = self.check(key)
        if uid in live:
            node = live[uid].node
            return Pin(node, f"pod group {name}: this member's devices are reserved on {node}"), False
        look = self.look(key)
        if look.exist < look.need:
            return f"waiting for pod group {name}: {look.exist} of {look.need} members exist", False
        if look.held >= look.need or uid not in {m.uid for m in look.pending}:
            return None, False  # the group is whole: a member beyond N is scheduled like any pod
        if self._fresh(key, look, generation):
            return self._failures[key].reason, False
        return None, True

    def _fresh(self, key: GroupKey, look: Look, generation: int) -> bool:
        f = self._failures.get(key)
        if f is None or f.members != frozenset(m.uid for m in look.pending):
            return False
        return f.generation == generation or (f.costly and self.state.clock() - f.at < self.settings.retry_s)

    # -- planning ---------------------------------------------------------------------------------------
    def _round(self) -> None:
        """Plan every ready group, in order, within the round's time."""
        with self._planning:
            end = time.perf_counter() + self.settings.round_s
            with self.state.lock:
                gen = self.state.view().snapshot.generation
                ready = [k for k in self._members if (lk := self.look(k)).ready and not self._fresh(k, lk, gen)]
                ready.sort(key=self.order)
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
            with self.state.lock:
                look = self.look(key)
                if not look.ready:
                    return res
                view = self.state.view()
                snap = self._avoiding(key, view.snapshot)
            t0 = time.perf_counter()
            res = place_group(snap, [m.request.demand for m in look.pending], view.mix,
                              time_limit_s=limit_s, workers=self.settings.workers, seed=0)
            took = time.perf_counter() - t0
            self.metrics.planning.observe(took)
            with self.state.lock:
                if self.look(key).pending != look.pending:
                    return res  # members came or went while planning: the next filter plans again
                if not res.placed:
                    self._failures[key] = Failure(_why(key[1], look.pending, res, limit_s),
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
        refused = self._refused.get(key, {})
        now = self.state.clock()
        for node, at in list(refused.items()):
            if now - at > self.ttl_s:
                del refused[node]
            elif node in snap.static.index:
                snap = set_foreign(snap, node, len(snap.node(node).gpus))
        return snap

    def _reserve(self, key: GroupKey, members: tuple[Member, ...], placements: tuple[Placement, ...]) -> bool:
        """Assume every member's placement or none (under the state lock)."""
        done: list[str] = []
        try:
            for m, p in zip(members, placements, strict=True):
                self.state.assume(m.uid, p, m.request, self.ttl_s)
                done.append(m.uid)
        except Conflict as e:
            for uid in done:
                self.state.unassume(uid)
            log.info("pod group %s/%s: the cluster changed while planning (%s)", key[0], key[1], e)
            return False
        self._plans.setdefault(key, {}).update({m.uid: p for m, p in zip(members, placements, strict=True)})
        self._failures.pop(key, None)
        self.metrics.events.labels("planned").inc()
        nodes = sorted({p.node for p in placements})
        log.info("pod group %s/%s: %d member(s) reserved on %d node(s)", key[0], key[1], len(members), len(nodes))
        for m, p in zip(members, placements, strict=True):
            self._event(m, ev.NORMAL, ev.GROUP_PLANNED,
                        f"pod group {key[1]}: {len(members)} member(s) reserved on {', '.join(nodes)}; this member's "
                        f"devices on {p.node}", p.node)
        return True

    def _event(self, m: Member, type_: str, reason: str, message: str, node: str = "") -> None:
        if self.events is not None:
            self.events.record(ev.PodRef(m.request.namespace, m.request.name, m.uid), type_, reason, message, node)

    # -- the bind hook ----------------------------------------------------------------------------------
    def bind(self, uid: str, req: PodRequest, node: str) -> Placement | str | None:
        """Under the binder's node lock and the state lock: the member's reserved devices, or a refusal."""
        if not req.group:
            return None
        key = (req.namespace, req.group)
        self._learn(req)
        p = self.check(key).get(uid)
        if p is not None:
            if p.node != node:
                return f"gpupack: pod group {req.group}: this member's devices are reserved on {p.node}, not {node}"
            # the bind's own time from here on, as for any bind (the binder keeps it if the bind fails)
            self.state.ledger.update(uid, deadline=self.state.clock() + self.state.assume_ttl_s)
            return p
        look = self.look(key)
        if look.held >= look.need and look.exist >= look.need:
            return None  # the group is whole: a member beyond N binds like any pod
        return (f"gpupack: pod group {req.group} has no reservation for this member ({look.held} of {look.need} "
                "members placed): it is not bound alone")

    # -- for the metrics --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.state.lock:
            out = {"waiting": 0, "reserved": 0}
            for key in list(self._members):
                if self.check(key):  # a plan whose members are all bound (or lost) is closed here too
                    out["reserved"] += 1
                elif (lk := self.look(key)).exist < lk.need or lk.held < lk.need:
                    out["waiting"] += 1
            return out


def _why(name: str, pending: tuple[Member, ...], res: GroupResult, limit_s: float) -> str:
    gpus = sum(m.request.demand.count for m in pending if m.request.demand.kind is DemandKind.WHOLE)
    what = f"its {len(pending)} pending members" + (f" ({gpus} GPUs)" if gpus else "")
    if res.status is GroupStatus.TIMED_OUT:
        return f"pod group {name}: no placement for {what} found within {limit_s:.1f} s; nothing is reserved"
    return f"pod group {name}: {what} do not fit in the cluster together; nothing is reserved"
