"""bind for a pod group member (the Plugin's `reserve` point, called by the binder under its node lock and the
state lock): the member binds exactly the devices reserved for it, and never binds without them while its
group is short of N placed members. A member beyond N (the group is whole) binds like any pod.
"""

from __future__ import annotations

from binpack import Placement
from scheduler.groups.reserve import Reservations
from scheduler.translate.pod import PodRequest


def reserved_for(r: Reservations, uid: str, req: PodRequest, node: str) -> Placement | str | None:
    """The member's reserved devices, a refusal, or None (bind as any pod)."""
    if not req.group:
        return None
    key = (req.namespace, req.group)
    r.members.learn(req)
    p = r.check(key).get(uid)
    if p is not None:
        if p.node != node:
            return f"gpupack: pod group {req.group}: this member's devices are reserved on {p.node}, not {node}"
        r.state.renew(uid)  # the bind's own time from here on, as for any bind (the binder keeps it if it fails)
        return p
    look = r.members.look(key)
    if look.held >= look.need and look.exist >= look.need:
        return None  # the group is whole: a member beyond N binds like any pod
    return (f"gpupack: pod group {req.group} has no reservation for this member ({look.held} of {look.need} "
            "members placed): it is not bound alone")
