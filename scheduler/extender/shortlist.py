"""Filter's shortlist: pass kube-scheduler only the nodes gpupack would choose among.

kube-scheduler runs its own score plugins over every node the extenders pass, then asks prioritize
about all of them, encoding every name twice (schedule_one.go's findNodesThatPassExtenders keeps
exactly the extender's NodeNames; a node left out of both NodeNames and FailedNodes simply drops
out, with no status). At 5,000 nodes that work is most of what an extender costs the scheduling
loop. With a shortlist of k, filter passes the k nodes with gpupack's best packing values (and every
node tied with the k-th, so no tie is cut arbitrarily): kube-scheduler then scores k nodes instead
of thousands, and with k = 1 it skips scoring and prioritize altogether.

What it changes: kube-scheduler's own soft preferences choose only among gpupack's best nodes. So a
pod that states soft preferences of its own (preferred node or pod (anti-)affinity, a
`ScheduleAnyway` topology spread) is never shortlisted: every fitting node passes, as without the
option. Hard constraints are untouched (kube-scheduler's filters ran before the extender), and a pod
no node fits gets every node's reason as before, so FailedScheduling and preemption see the same.
"""

from __future__ import annotations

import numpy as np


def shortlist(values: np.ndarray, keep: int) -> np.ndarray:
    """Positions (into `values`) of the `keep` best values and every value tied with the last of them,
    in their original order; all positions when there are no more than `keep`.

    `values` are gpupack's float packing values of the nodes that passed (higher is better)."""
    n = len(values)
    if keep <= 0 or n <= keep:
        return np.arange(n)
    cut = np.partition(values, n - keep)[n - keep]  # the keep-th best value
    return np.flatnonzero(values >= cut)
