"""`place_group`: all-or-nothing placement of a pod group, greedy first, then improved with CP-SAT.

1. Greedy: members hardest first (group_node.hardness), each by fit / score / place / allocate on a
   derived snapshot, preferring nodes the group already uses. The input snapshot never changes, so
   a member that fits nowhere just drops the derived snapshots: nothing is left half-booked.
2. CP-SAT (group_model.py) on candidate nodes (for each kind of member, the best-scored nodes where
   it fits, at most `max_candidates`, plus the greedy plan's nodes), started from the greedy plan
   and never accepting worse. Each solution's members per node are packed exactly
   (group_node.pack_node); a node set that does not pack is cut off and the model solved again,
   all within `time_limit_s`.
3. Every plan returned passes `validate` against the input snapshot.

The status says what the placements are worth; infeasible or timed out is a result, not an error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from ortools.sat.python import cp_model

from binpack.alloc import allocate
from binpack.fit import FitResult, _fit
from binpack.group_model import GroupModel, GroupProblem, build_problem
from binpack.group_node import NodePack, hardness, pack_node
from binpack.mix import EMPTY_MIX, Mix
from binpack.place import _place
from binpack.score import Scores, score
from binpack.snapshot import Snapshot, View
from binpack.types import Demand, Placement
from binpack.validate import validate


class GroupStatus(Enum):
    OPTIMAL = "optimal"  # every member placed; proven best among the candidate nodes
    FEASIBLE = "feasible"  # every member placed; the time limit came before a proof
    INFEASIBLE = "infeasible"  # no plan places every member (proven when `exhaustive`)
    TIMED_OUT_GREEDY = "timed-out-greedy"  # CP-SAT found nothing in time: the greedy plan
    TIMED_OUT = "timed-out"  # no plan found in time, and none proven impossible


@dataclass(frozen=True)
class GroupResult:
    """Placements in the order of the demands (empty unless every member is placed)."""

    status: GroupStatus
    placements: tuple[Placement, ...]
    objective: int | None  # see group_model: node_weight * nodes used + score shortfall
    exhaustive: bool  # every node where a member fits was a candidate, and every node check finished
    wall_s: float

    @property
    def placed(self) -> bool:
        return self.status in (GroupStatus.OPTIMAL, GroupStatus.FEASIBLE, GroupStatus.TIMED_OUT_GREEDY)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted({p.node for p in self.placements}))


def place_group(snapshot: Snapshot, demands: Sequence[Demand], mix: Mix = EMPTY_MIX, *, time_limit_s: float = 1.0,
                workers: int = 1, seed: int = 0, max_candidates: int = 64, search_budget: int = 20_000) -> GroupResult:
    """Place every demand or none. `time_limit_s` 0 returns the greedy plan alone."""
    if time_limit_s < 0 or workers < 1 or max_candidates < 1 or search_budget < 1:
        raise ValueError("place_group: time_limit_s >= 0, workers >= 1, max_candidates >= 1, search_budget >= 1")
    t0 = time.perf_counter()
    deadline = t0 + time_limit_s
    kinds = list(dict.fromkeys(demands))
    kind_of = [kinds.index(d) for d in demands]
    need = [kind_of.count(t) for t in range(len(kinds))]
    with snapshot.read() as v:
        verdicts = [_fit(snapshot, v, d) for d in kinds]
        scores = [score(f, mix, v) for f in verdicts]

    def result(status: GroupStatus, plan: Sequence[Placement] = (), objective: int | None = None,
               exhaustive: bool = True) -> GroupResult:
        return GroupResult(status, tuple(plan), objective, exhaustive, time.perf_counter() - t0)

    if not demands:
        return result(GroupStatus.OPTIMAL, (), 0)
    if any(not f.fits.any() for f in verdicts):
        return result(GroupStatus.INFEASIBLE)  # some member fits on no node even alone
    greedy = _greedy(snapshot, demands, mix)
    nodes, exhaustive = _candidates(verdicts, scores, greedy, snapshot, max_candidates)
    with snapshot.read() as v:
        problem = build_problem(v, kinds, need, nodes, [sc.integer for sc in scores])
    column = {int(n): c for c, n in enumerate(nodes)}
    greedy_assign = None if greedy is None else _assignment(snapshot, greedy, kind_of, problem, column)
    if time_limit_s == 0:
        if greedy is None:
            return result(GroupStatus.TIMED_OUT, exhaustive=False)
        return result(GroupStatus.TIMED_OUT_GREEDY, greedy, problem.objective(greedy_assign), exhaustive)  # type: ignore[arg-type]
    model = GroupModel(problem)
    with snapshot.read() as v:
        model.same_nodes(_interchangeable(v, nodes))
    packed: dict[tuple[int, tuple[int, ...]], NodePack] = {}
    best: tuple[int, Sequence[Placement], np.ndarray | None] | None = None
    if greedy is not None and greedy_assign is not None:
        best = (problem.objective(greedy_assign), greedy, greedy_assign)
        model.at_most(best[0])
        model.hint(greedy_assign)
        for c in np.flatnonzero(greedy_assign.sum(axis=0)):  # greedy's nodes are known to pack
            name = snapshot.names[int(nodes[c])]
            members = sorted((m for m, p in enumerate(greedy) if p.node == name), key=lambda m: kind_of[m])
            packed[(int(c), tuple(greedy_assign[:, c]))] = NodePack(tuple(greedy[m] for m in members))
    cuts: list[tuple[int, np.ndarray]] = []
    trusted = True  # False if a plan ever failed validate: then no optimality claim

    def check(assign: np.ndarray) -> bool:
        """Each CP-SAT solution: pack it node by node; keep it if it is the best so far, or stop the
        search to cut off the node sets that do not pack."""
        nonlocal best, trusted
        plan, failed = _realise(snapshot, problem, assign, kind_of, packed, search_budget)
        if failed:
            cuts.extend(failed)
            return False
        if validate(snapshot, list(zip(demands, plan, strict=True))):
            trusted = False  # cannot happen while pack_node and validate agree; never return such a plan
            return True
        obj = problem.objective(assign)
        if best is None or obj < best[0] or (obj == best[0] and best[2] is not None):
            best = (obj, plan, None)  # None: this plan came from CP-SAT
        return True

    status = cp_model.UNKNOWN
    while (left := deadline - time.perf_counter()) > 0:
        cuts.clear()
        status = model.solve(left, workers, seed, check)
        if not cuts:
            break
        for col, counts in cuts:
            model.forbid(col, counts)
    if any(p.exhausted for p in packed.values()):
        exhaustive = False
    if best is None:
        if status == cp_model.INFEASIBLE:
            return result(GroupStatus.INFEASIBLE, exhaustive=exhaustive)
        return result(GroupStatus.TIMED_OUT, exhaustive=False)
    obj, plan, from_greedy = best
    if status == cp_model.OPTIMAL and trusted and not cuts:
        return result(GroupStatus.OPTIMAL, plan, obj, exhaustive)
    if from_greedy is None and greedy_assign is not None and obj < problem.objective(greedy_assign):
        return result(GroupStatus.FEASIBLE, plan, obj, exhaustive)
    if greedy is None or greedy_assign is None:
        return result(GroupStatus.FEASIBLE, plan, obj, exhaustive)
    return result(GroupStatus.TIMED_OUT_GREEDY, greedy, problem.objective(greedy_assign), exhaustive)


def _greedy(snapshot: Snapshot, demands: Sequence[Demand], mix: Mix) -> list[Placement] | None:
    """Members hardest first, each to its best-scored node, nodes the group already uses first."""
    snap = snapshot
    plan: list[Placement | None] = [None] * len(demands)
    used = np.zeros(len(snapshot.names), bool)
    for m in sorted(range(len(demands)), key=lambda m: (hardness(demands[m]), m)):
        d = demands[m]
        with snap.read() as v:
            verdict = _fit(snap, v, d)
            if not verdict.fits.any():
                return None
            value = score(verdict, mix, v).value
            i = int(np.argmax(np.where(verdict.fits, value + used * 1e6, -np.inf)))
            p = _place(v, d, i, mix)
        snap = allocate(snap, p)
        plan[m] = p
        used[i] = True
    out = [p for p in plan if p is not None]
    if validate(snapshot, list(zip(demands, out, strict=True))):
        return None  # never hand out an invalid plan; CP-SAT may still find one
    return out


def _candidates(verdicts: Sequence[FitResult], scores: Sequence[Scores], greedy: Sequence[Placement] | None,
                snapshot: Snapshot, cap: int) -> tuple[np.ndarray, bool]:
    """Union over kinds of the `cap` best-scored nodes where the kind fits, plus greedy's nodes."""
    chosen: set[int] = set()
    exhaustive = True
    for f, sc in zip(verdicts, scores, strict=True):
        rows = np.flatnonzero(f.fits)
        if len(rows) > cap:
            exhaustive = False
            rows = rows[np.argsort(-sc.value[rows], kind="stable")[:cap]]
        chosen.update(int(r) for r in rows)
    chosen.update(snapshot.node_index(p.node) for p in greedy or ())
    return np.asarray(sorted(chosen), np.int64), exhaustive


def _assignment(snapshot: Snapshot, plan: Sequence[Placement], kind_of: Sequence[int], problem: GroupProblem,
                column: dict[int, int]) -> np.ndarray:
    assign = np.zeros(problem.ub.shape, np.int64)
    for m, p in enumerate(plan):
        assign[kind_of[m], column[snapshot.node_index(p.node)]] += 1
    return assign


def _interchangeable(v: View, nodes: np.ndarray) -> list[list[int]]:
    """Candidate columns whose nodes have the same board and the same state in every column."""
    s = v.s
    groups: dict[bytes, list[int]] = {}
    for c, i in enumerate(nodes.tolist()):
        key = b"".join(a[i].tobytes() for a in (
            s.topo_id, s.model, s.mig_mode, s.layout, s.valid, s.healthy, s.mem_total, v.mem_free, v.compute_free,
            v.mig_used, v.me_used, v.cpu_free, v.hmem_free, v.foreign))
        groups.setdefault(key, []).append(c)
    return [g for g in groups.values() if len(g) > 1]


def _realise(snapshot: Snapshot, problem: GroupProblem, assign: np.ndarray, kind_of: Sequence[int],
             packed: dict[tuple[int, tuple[int, ...]], NodePack],
             budget: int) -> tuple[list[Placement], list[tuple[int, np.ndarray]]]:
    """Devices for a solution, node by node, and the (node, member counts) that do not pack."""
    plan: list[Placement | None] = [None] * len(kind_of)
    waiting = {t: [m for m, k in enumerate(kind_of) if k == t] for t in range(len(problem.kinds))}
    failed = []
    for c in np.flatnonzero(assign.sum(axis=0)):
        counts = assign[:, c]
        key = (int(c), tuple(int(x) for x in counts))
        if key not in packed:
            members = [problem.kinds[t] for t in range(len(counts)) for _ in range(int(counts[t]))]
            packed[key] = pack_node(snapshot, snapshot.names[int(problem.nodes[c])], members, budget)
        got = packed[key].placements
        if got is None:
            failed.append((int(c), counts.copy()))
            continue
        at = 0
        for t in range(len(counts)):
            for _ in range(int(counts[t])):
                plan[waiting[t].pop(0)] = got[at]
                at += 1
    return [p for p in plan if p is not None], failed
