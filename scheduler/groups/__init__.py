"""Pod groups: all-or-nothing placement of multi-pod jobs (`gpupack.io/pod-group`, `gpupack.io/pod-group-min`),
a plugin of the extender (as scheduler-plugins' coscheduling is of kube-scheduler).

One module per part, its test beside it (tests/test_groups_<part>.py):
  members   who is in which group, learned from the watch and from filter calls
  reserve   plans (binpack.place_group outside the state lock) reserved whole as group bookings in the ledger
  filter    a member is held (the group is short of members or of room) or pinned to its reserved node
  bind      a member binds exactly its reserved devices, never alone while its group is short
  preempt   evictions only where they make room for the whole group
  metrics   plans by outcome, planning time, groups waiting or reserved
  plugin    PodGroups: the Plugin (scheduler/state/plugin.py) the extender registers
The extender calls this package; it never imports the extender.
"""

from scheduler.groups.members import GroupKey, Look, Member
from scheduler.groups.plugin import PodGroups
from scheduler.groups.reserve import GroupSettings

__all__ = ["GroupKey", "GroupSettings", "Look", "Member", "PodGroups"]
