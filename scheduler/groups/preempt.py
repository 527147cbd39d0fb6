"""preempt for pod group members: evictions free room for the whole group, or nothing is evicted.

kube-scheduler preempts for one pod at a time and evicts on the one node it picks. For a member of a
group that does not fit, gpupack releases every victim kube-scheduler proposed (on all nodes, in a copy of
the snapshot) and plans the group's pending members there with binpack.place_group. Only if the whole
group then fits does the member get an answer: the node its planned placement is on, with the fewest of
that node's proposed victims that let the plan's placements there be booked. The other members' preempt
calls evict on their own planned nodes; once the victims are gone the group is planned and reserved as
usual. A member of a group short of members gets no victims at all (evicting cannot help it); a member
whose devices are already reserved only gets its reserved node's proposal (kube-scheduler's own filters
refused that node, e.g. for CPU). Who holds what is the state's answer (ClusterState.holds), the same one
the extender's per-node preempt uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from binpack import Conflict, Placement, Snapshot, allocate, place_group
from scheduler.groups.reserve import Reservations
from scheduler.state.cluster import ClusterState, StateView
from scheduler.state.holdings import Hold, foreign_of, without
from scheduler.state.plugin import Answer, Proposal, VictimRef
from scheduler.translate.pod import PodRequest


def preempt_member(r: Reservations, req: PodRequest, view: StateView, victims: Proposal) -> Answer | None:
    """The answer for a group member; None for a pod gpupack's per-node check should answer."""
    if not req.group:
        return None
    key = (req.namespace, req.group)
    with r.state.atomic():
        r.members.learn(req)
        live = r.check(key)
        if req.uid in live:
            node = live[req.uid].node
            return {node: _echo(*victims[node])} if node in victims else {}
        look = r.members.look(key)
        if look.exist < look.need:
            return {}  # the group does not exist yet: no eviction can help it
        if look.held >= look.need or req.uid not in {m.uid for m in look.pending}:
            return None  # a member beyond N: preempted for like any pod
        freed, holders = _release(r.state, view.snapshot, victims)
    pending = look.pending
    res = place_group(freed, [m.request.demand for m in pending], view.mix,
                      time_limit_s=r.settings.plan_s, workers=r.settings.workers, seed=0)
    if not res.placed:
        return {}  # even evicting every proposed victim leaves the group short: evict none
    mine = res.placements[[m.uid for m in pending].index(req.uid)]
    if mine.node not in victims:
        return {}  # this member's planned place needs no eviction; the others' calls make the room
    here = [p for m, p in zip(pending, res.placements, strict=True) if p.node == mine.node]
    vs, pdb = victims[mine.node]
    keep = _fewest(view.snapshot, mine.node, here, vs, holders)
    return {mine.node: (keep, min(pdb, len(keep)))}


def _release(state: ClusterState, snap: Snapshot, victims: Proposal) -> tuple[Snapshot, dict[str, Hold]]:
    """The snapshot with every proposed victim gpupack counts released, and what each one holds."""
    holders: dict[str, Hold] = {}
    for node, (vs, _) in victims.items():
        if node not in snap.static.index:
            continue
        holds, _ = state.holds(node, [v.uid for v in vs])
        holders.update((h.uid, h) for h in holds)
        snap = without(snap, node, holds, foreign_of(snap, node))
    return snap, holders


def _echo(vs: Sequence[VictimRef], pdb: int) -> tuple[list[str], int]:
    return [v.uid for v in vs], pdb


def _fewest(snap: Snapshot, node: str, plan: Sequence[Placement], vs: Sequence[VictimRef],
            holders: dict[str, Hold]) -> list[str]:
    """Of the node's victims, those the plan's placements there need gone; victims holding nothing gpupack
    counts were proposed for what only kube-scheduler sees (CPU, memory) and are kept."""
    mine = [v for v in vs if v.uid in holders]
    evict = {v.uid for v in mine}
    for v in reversed(mine):  # spare victims one by one while the plan still books (latest proposed first)
        if _books(snap, node, plan, [holders[u] for u in evict - {v.uid}]):
            evict.discard(v.uid)
    return [v.uid for v in vs if v.uid in evict or v.uid not in holders]


def _books(snap: Snapshot, node: str, plan: Sequence[Placement], gone: Sequence[Hold]) -> bool:
    snap = without(snap, node, gone, foreign_of(snap, node))
    try:
        for p in plan:
            snap = allocate(snap, p)
    except Conflict:
        return False
    return True
