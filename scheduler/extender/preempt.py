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

from collections.abc import Callable, Sequence
from itertools import combinations
from math import comb

from binpack import Demand, fit
from scheduler.extender.wire import Victim
from scheduler.state.cluster import ClusterState, StateView
from scheduler.state.holdings import Hold, without

EXHAUSTIVE_BUDGET = 64  # subset checks per node before falling back to greedy pruning


def preempt(state: ClusterState, view: StateView, demand: Demand,
            victims: dict[str, tuple[list[Victim], int]]) -> dict[str, tuple[list[str], int]]:
    """node -> (victim UIDs to evict, NumPDBViolations) for the nodes where eviction helps."""
    out: dict[str, tuple[list[str], int]] = {}
    for node, (vs, pdb) in victims.items():
        uids = [v.uid for v in vs]
        if node not in view.snapshot.static.index:
            continue  # gpupack cannot place on a node it does not know, with or without evictions
        chosen = _node(state, node, demand, vs)
        if chosen is None:
            continue
        keep = [u for u in uids if u in chosen]
        out[node] = (keep, min(pdb, len(keep)))
    return out


def _priority(v: Victim) -> int:
    p = ((v.pod or {}).get("spec") or {}).get("priority")
    return p if isinstance(p, int) else 0


def _node(state: ClusterState, node: str, demand: Demand, vs: Sequence[Victim]) -> set[str] | None:
    with state.atomic():  # the node and who holds what on it, read at one time
        holdings = state.holdings(node)
        holds, others = state.holds(node, [v.uid for v in vs])
    if holdings is None:
        return None
    sent = {v.uid: _priority(v) for v in vs}  # the priority kube-scheduler sent, for pods the watch has not shown
    holds = [h if h.priority is not None else Hold(h.uid, h.placement, h.foreign, sent[h.uid], h.claimed)
             for h in holds]

    def fits(subset: Sequence[Hold]) -> bool:
        s = without(holdings.snapshot, node, subset, holdings.foreign)
        return bool(fit(s, demand).fits[0])

    if fits([]):
        return {v.uid for v in vs}  # gpupack needs nothing evicted here: no objection to the proposal
    if not fits(holds):
        return None
    return {h.uid for h in _smallest(holds, fits)} | others


def _smallest(holds: list[Hold], fits: Callable[[Sequence[Hold]], bool]) -> list[Hold]:
    """The fewest victims that make the pod fit (exhaustive while cheap, else greedy), lowest priority first."""
    order = sorted(holds, key=lambda h: h.priority or 0)
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
