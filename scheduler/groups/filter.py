"""filter for a pod group member: held ("waiting for pod group NAME: k of N members exist", or why the group
does not fit), pinned to the node its reservation is on, or None (the group is whole: scheduled like any pod).

A member whose group is ready but not planned yet plans every ready group first (Reservations.round), within
the filter call. A member whose reserved node kube-scheduler's own filters refused (CPU, affinity, taints) has
its group released and planned again at once, away from that node.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler import events as ev
from scheduler.groups.members import GroupKey, Member
from scheduler.groups.reserve import Reservations
from scheduler.state.cluster import StateView
from scheduler.state.plugin import Pin
from scheduler.translate.pod import PodRequest


def filter_member(r: Reservations, req: PodRequest, view: StateView, names: Sequence[str]) -> str | Pin | None:
    key = (req.namespace, req.group)
    state = r.state
    with state.atomic():
        r.members.learn(req)
        mine = r.check(key).get(req.uid)
        if mine is not None and mine.node not in names:
            # kube-scheduler's own filters (CPU, affinity, taints) refused the planned node: plan the group
            # again now, away from that node, instead of holding its devices until the reservation expires
            r.refused.setdefault(key, {})[mine.node] = state.clock()
            r.release(key, r.check(key), f"node {mine.node} refused by kube-scheduler's filters")
        answer, plan = _verdict(r, key, req.uid, view.snapshot.generation)
    if plan:
        r.round()
        with state.atomic():
            answer, plan = _verdict(r, key, req.uid, state.view().snapshot.generation)
        if plan:
            answer = f"pod group {req.group}: waiting for pod groups ahead of it to be planned"
    if isinstance(answer, str):
        waiting = answer.startswith(("waiting", f"pod group {req.group}: waiting"))
        r.event(Member(req.uid, req, ""), ev.NORMAL if waiting else ev.WARNING,
                ev.GROUP_WAITING if waiting else ev.GROUP_UNPLACEABLE, answer)
    return answer


def _verdict(r: Reservations, key: GroupKey, uid: str, generation: int) -> tuple[str | Pin | None, bool]:
    """The member's answer, or (None, True) when its group must be planned first."""
    name = key[1]
    live = r.check(key)
    if uid in live:
        node = live[uid].node
        return Pin(node, f"pod group {name}: this member's devices are reserved on {node}"), False
    look = r.members.look(key)
    if look.exist < look.need:
        return f"waiting for pod group {name}: {look.exist} of {look.need} members exist", False
    if look.held >= look.need or uid not in {m.uid for m in look.pending}:
        return None, False  # the group is whole: a member beyond N is scheduled like any pod
    if r.fresh(key, look, generation):
        return r.failures[key].reason, False
    return None, True
