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

`pick` finds the same nodes without reading the request's list name by name: it walks gpupack's
best nodes of the whole cluster, best first, and looks each up in the list's bytes (kube-scheduler
may have filtered some out) until k are found. Resolving 5,000 names and parsing them cost more than
the rest of filter together under a real kube-scheduler (docs/benchmarks.md).
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


PROBE = 64  # best nodes of the cluster looked up in a request's list before giving up (then: the full path)


def pick(raw: bytes, opens: np.ndarray, values: np.ndarray, quoted: list[bytes], keep: int) -> list[int] | None:
    """The snapshot rows `shortlist` would keep of a request's list, in the list's order, found by
    walking the cluster's best nodes (`values`: every snapshot node's, -inf where the pod does not fit).

    `raw` is the list as sent and `opens` where its strings open (wire.plain_strings); `quoted[r]` is
    row r's name in quotes, so a match at a string's opening quote is exactly that name. None when the
    answer is not settled within PROBE candidates (or no node fits: every node's reason is then due)."""
    fits = int(np.isfinite(values).sum())
    if fits == 0:
        return None
    m = min(PROBE, fits)
    top = np.argpartition(-values, m - 1)[:m]
    top = top[np.argsort(-values[top], kind="stable")]
    found: list[tuple[int, int]] = []
    cut = None
    for r in top.tolist():
        v = values[r]
        if cut is not None and v < cut:
            return [row for _, row in sorted(found)]
        at = raw.find(quoted[r])
        while at >= 0:  # the first match that opens a string of the list
            i = int(np.searchsorted(opens, at))
            if i < len(opens) and opens[i] == at:
                break
            at = raw.find(quoted[r], at + 1)
        if at >= 0:
            found.append((at, r))
            if len(found) == keep:
                cut = v
    if m == fits:  # every fitting node was looked at: fewer than keep (or all ties) are in the list
        return [row for _, row in sorted(found)] if found else None
    return None  # the keep-th may tie with nodes past the probe, or fewer than keep were found
