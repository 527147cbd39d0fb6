"""preempt: for each node kube-scheduler proposes, the smallest subset of its victims whose eviction
frees a placement for the pod in gpupack's view (whole GPUs, shares, MIG slots, NVLink sets).

Each node is checked on its own one-node snapshot (its inventory plus the bookings and foreign GPUs
the ledger has there), so a check costs one node's fit, not the cluster's. Victims gpupack knows to
hold devices are the ones it chooses among; victims holding nothing gpupack tracks were proposed
for reasons only kube-scheduler sees (CPU, memory, pod count) and are kept. A node where evicting
every proposed victim still leaves no placement is dropped. When the pod already fits in gpupack's
view, gpupack has no say and the node's victims are answered unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb

from binpack import Conflict, Demand, Placement, Snapshot, allocate, fit, release, set_foreign
from scheduler.extender.wire import Victim
from scheduler.state.cluster import ClusterState, StateView

EXHAUSTIVE_BUDGET = 64  # subset checks per node before falling back to greedy pruning


@dataclass(frozen=True, slots=True)
class _Hold:
    uid: str
    placement: Placement | None
    foreign: int
    priority: int
    claimed: tuple[Placement, ...] = ()  # devices held through DRA claims reserved for this pod alone


def preempt(state: ClusterState, view: StateView, demand: Demand,
            victims: dict[str, tuple[list[Victim], int]]) -> dict[str, tuple[list[str], int]]:
    """node -> (victim UIDs to evict, NumPDBViolations) for the nodes where eviction helps."""
    out: dict[str, tuple[list[str], int]] = {}
    for node, (vs, pdb) in victims.items():
        uids = [v.uid for v in vs]
        if node not in view.snapshot.static.index:
            continue  # gpupack cannot place on a node it does not know, with or without evictions
        chosen = _node(state, view.snapshot, node, demand, vs)
        if chosen is None:
            continue
        keep = [u for u in uids if u in chosen]
        out[node] = (keep, min(pdb, len(keep)))
    return out


def _holds(state: ClusterState, node: str, vs: Sequence[Victim]) -> tuple[list[_Hold], set[str]]:
    """Victims that hold devices gpupack counts on this node, and the UIDs of all the others."""
    holds: list[_Hold] = []
    others: set[str] = set()
    for v in vs:
        b = state.booking(v.uid)
        entry = state.pod(v.uid)
        prio = entry.request.priority if entry and entry.request else _priority(v)
        if b is not None and b.node == node and v.uid in state.ledger.applied:
            holds.append(_Hold(v.uid, b.placement, 0, prio))
        elif entry is not None and entry.active and entry.node == node and entry.foreign:
            holds.append(_Hold(v.uid, None, entry.foreign, prio))
        elif claimed := [p for p in (state.claimed_by(v.uid) if state.claimed_by else ()) if p.node == node]:
            holds.append(_Hold(v.uid, None, 0, prio, tuple(claimed)))  # evicted, its claims are deallocated
        else:
            others.add(v.uid)
    return holds, others


def _priority(v: Victim) -> int:
    p = ((v.pod or {}).get("spec") or {}).get("priority")
    return p if isinstance(p, int) else 0


def _node(state: ClusterState, snap: Snapshot, node: str, demand: Demand, vs: Sequence[Victim]) -> set[str] | None:
    with state.lock:
        holds, others = _holds(state, node, vs)
        base = Snapshot.build([snap.node(node)])
        for b in state.ledger.on_node(node):
            try:
                base = allocate(base, b.placement)
            except Conflict:  # cannot happen for applied bookings; never let it abort preemption
                continue
        foreign = state.ledger.foreign.get(node, 0)
    if foreign:
        base = set_foreign(base, node, foreign)

    def fits(subset: Sequence[_Hold]) -> bool:
        s = base
        freed = sum(h.foreign for h in subset)
        for h in subset:
            for p in (h.placement, *h.claimed):
                if p is not None:
                    s = release(s, p)
        if freed:
            s = set_foreign(s, node, max(foreign - freed, 0))
        return bool(fit(s, demand).fits[0])

    if fits([]):
        return {v.uid for v in vs}  # gpupack needs nothing evicted here: no objection to the proposal
    if not fits(holds):
        return None
    return {h.uid for h in _smallest(holds, fits)} | others


def _smallest(holds: list[_Hold], fits: object) -> list[_Hold]:
    """The fewest victims that make the pod fit (exhaustive while cheap, else greedy), lowest priority first."""
    assert callable(fits)
    order = sorted(holds, key=lambda h: h.priority)
    n = len(order)
    checks = 0
    for k in range(1, n + 1):
        if checks + comb(n, k) > EXHAUSTIVE_BUDGET:
            break
        for subset in combinations(order, k):
            checks += 1
            if fits(subset):
                return list(subset)
    # greedy: from all victims, spare the highest-priority ones one by one while the pod still fits
    chosen = list(order)
    for h in reversed(order):
        trial = [x for x in chosen if x is not h]
        if fits(trial):
            chosen = trial
    return chosen
