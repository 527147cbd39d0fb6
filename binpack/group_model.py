"""The pod-group assignment as a CP-SAT model: how many members of each kind go to each candidate node.

Members that ask for the same Demand are one "kind", so identical members are interchangeable and
the model has one integer per (kind, candidate node) instead of one boolean per member: 32 eight-GPU
members are one variable per node. Capacities are aggregates that every real packing obeys (a
relaxation): per-kind upper bounds (free whole GPUs, disjoint NVLink sets, share slots per GPU, free
MIG instances, CPU, memory) and per-node sums shared by all kinds. Whether the members a solution
puts on a node really fit there together is checked exactly by group_node.pack_node; a set that
does not is cut off with `forbid` and the model is solved again.

Objective (lexicographic, as one integer): fewest nodes, then the members' scores, i.e.
    node_weight * nodes used + sum over members of (MAX_SCORE - score 0..10 of its node)
where the score is `score` on the group's starting snapshot (fragmentation growth plus, for
multi-GPU members, the NVLink quality of the best free set) and node_weight exceeds any score sum.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from binpack.catalog import FULL_MILLI, lookup
from binpack.fit import mig_counts
from binpack.score import MAX_SCORE
from binpack.snapshot import View
from binpack.topology import disjoint_sets
from binpack.types import Demand, DemandKind, MigMode, Topology

BIG = 1 << 30


@dataclass(frozen=True, eq=False)
class GroupProblem:
    """The data of one pod group on one snapshot, restricted to candidate nodes (C of them)."""

    kinds: tuple[Demand, ...]  # T distinct demands
    need: tuple[int, ...]  # members of each kind
    nodes: np.ndarray  # (C,) snapshot row of each candidate node
    ub: np.ndarray  # (T, C) most members of a kind the node could take if it took nothing else
    cost: np.ndarray  # (T, C) per member: MAX_SCORE - its score on the node
    rows: tuple[tuple[str, np.ndarray, np.ndarray], ...]  # shared capacities: name, coef (T, C), rhs (C,)
    slack: np.ndarray  # (C,) whole-free GPUs that foreign pods leave: for whole members and opened shares
    partial: np.ndarray  # (T, C) shares of the kind that fit on GPUs already shared (0: not a share)
    full: np.ndarray  # (T, C) shares of the kind one whole-free GPU of the node could hold

    @property
    def node_weight(self) -> int:
        return MAX_SCORE * sum(self.need) + 1

    def objective(self, assign: np.ndarray) -> int:
        """The objective of an assignment (T, C) of member counts."""
        used = int((assign.sum(axis=0) > 0).sum())
        return self.node_weight * used + int((self.cost * assign).sum())


def build_problem(v: View, kinds: Sequence[Demand], need: Sequence[int], nodes: np.ndarray,
                  integer_scores: Sequence[np.ndarray]) -> GroupProblem:
    """Bounds and shared capacities of the candidate nodes, read from one snapshot view."""
    s = v.s
    t_n, c_n = len(kinds), len(nodes)
    plain = (s.valid & s.healthy & (s.mig_mode == MigMode.NONE))[nodes]
    whole_all = v.whole_free()[nodes]
    slack = np.maximum(whole_all.sum(axis=1) - v.foreign[nodes], 0).astype(np.int64)
    cpu, hmem = v.cpu_free[nodes].astype(np.int64), v.hmem_free[nodes].astype(np.int64)
    ub = np.zeros((t_n, c_n), np.int64)
    partial, full = np.zeros((t_n, c_n), np.int64), np.zeros((t_n, c_n), np.int64)
    for t, d in enumerate(kinds):
        if d.kind is DemandKind.SHARE:
            partial[t], full[t] = _share_slots(v, d, nodes)
        ub[t] = _kind_bound(v, d, need[t], nodes, slack, cpu, hmem, partial[t], full[t])
    cost = np.stack([MAX_SCORE - np.asarray(sc)[nodes] for sc in integer_scores]).astype(np.int64)
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []

    def row(name: str, coef: np.ndarray, rhs: np.ndarray) -> None:
        coef = np.broadcast_to(np.asarray(coef, np.int64).reshape(t_n, -1), (t_n, c_n))
        if ((coef * ub).sum(axis=0) > rhs).any():  # a row that the bounds already imply adds nothing
            rows.append((name, coef, rhs.astype(np.int64)))

    whole = [d.count if d.kind is DemandKind.WHOLE else 0 for d in kinds]
    row("cpu", np.asarray([d.cpu_milli for d in kinds]), cpu)
    row("memory", np.asarray([d.host_memory_mib for d in kinds]), hmem)
    for models in {d.models for d in kinds if d.kind is DemandKind.WHOLE and d.models}:
        coef = np.asarray([d.count if d.kind is DemandKind.WHOLE and d.models == models else 0 for d in kinds])
        row(f"whole GPUs of {sorted(models)}", coef, v.whole_free(models)[nodes].sum(axis=1))
    for k in {d.count for d in kinds if _nvlink(d)}:
        coef = np.asarray([1 if _nvlink(d) and d.count == k else 0 for d in kinds])
        sets = np.asarray([_disjoint(v, int(n), whole_all[c], k) for c, n in enumerate(nodes)])
        row(f"NVLink sets of {k}", coef, sets)
    comp = np.asarray([FULL_MILLI * d.count if d.kind is DemandKind.WHOLE else
                       d.compute_milli if d.kind is DemandKind.SHARE else 0 for d in kinds])
    row("GPU compute", comp, np.where(plain, v.compute_free[nodes], 0).sum(axis=1))
    smallest = np.where(plain.any(axis=1), np.where(plain, s.mem_total[nodes], BIG).min(axis=1), 0)
    mem = np.stack([np.asarray(whole)[t] * smallest + (kinds[t].memory_mib if kinds[t].kind is DemandKind.SHARE else 0)
                    for t in range(t_n)])
    row("GPU memory", mem, np.where(plain, v.mem_free[nodes], 0).sum(axis=1))
    mig = [d for d in kinds if d.kind is DemandKind.MIG]
    if mig:
        row("MIG slices", np.asarray([d.count * _min_slices(d.mig_profile) if d.kind is DemandKind.MIG else 0
                                      for d in kinds]), _free_slices(v, nodes))
        for prof in {d.mig_profile for d in mig}:
            coef = np.asarray([d.count if d.kind is DemandKind.MIG and d.mig_profile == prof else 0 for d in kinds])
            _, now = mig_counts(v, Demand.mig(prof))
            row(f"MIG {prof}", coef, now[nodes])
    return GroupProblem(tuple(kinds), tuple(need), nodes, ub, cost, tuple(rows), slack, partial, full)


def _nvlink(d: Demand) -> bool:
    return d.kind is DemandKind.WHOLE and d.topology is Topology.NVLINK and d.count > 1


def _disjoint(v: View, n: int, free_row: np.ndarray, k: int) -> int:
    s = v.s
    mask = int((free_row * (1 << np.arange(s.k))).sum())
    memo = s.memo.disjoint
    key = (int(s.topo_id[n]), mask, k)
    if key not in memo:
        memo[key] = disjoint_sets(s.nvlink[n], np.flatnonzero(free_row).tolist(), k)
    return int(memo[key])


def _share_slots(v: View, d: Demand, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C,) shares of this kind alone that the node's partly shared GPUs could hold, and (C,) the most
    one of its whole-free GPUs (of an allowed model) could hold."""
    s = v.s
    ok = (s.model_ok(d.models) & (s.mig_mode == MigMode.NONE))[nodes]
    mem, comp = v.mem_free[nodes].astype(np.int64), v.compute_free[nodes].astype(np.int64)
    per = np.minimum(mem // d.memory_mib if d.memory_mib else BIG,
                     comp // d.compute_milli if d.compute_milli else BIG)
    per = np.where(ok, per, 0)
    wf = v.whole_free()[nodes]
    return np.where(wf, 0, per).sum(axis=1), np.where(wf, per, 0).max(axis=1)


def _kind_bound(v: View, d: Demand, need: int, nodes: np.ndarray, slack: np.ndarray, cpu: np.ndarray,
                hmem: np.ndarray, partial: np.ndarray, full: np.ndarray) -> np.ndarray:
    """(C,) most members of this kind each node could take alone (0 where one does not fit)."""
    out = np.full(len(nodes), need, np.int64)
    if d.cpu_milli:
        out = np.minimum(out, cpu // d.cpu_milli)
    if d.host_memory_mib:
        out = np.minimum(out, hmem // d.host_memory_mib)
    if d.kind is DemandKind.WHOLE:
        free = v.whole_free(d.models)[nodes]
        out = np.minimum(out, np.minimum(free.sum(axis=1), slack) // d.count)
        if _nvlink(d):
            out = np.minimum(out, [_disjoint(v, int(n), free[c], d.count) for c, n in enumerate(nodes)])
    elif d.kind is DemandKind.SHARE:
        out = np.minimum(out, partial + full * slack)  # shares may open at most `slack` whole-free GPUs
    elif d.kind is DemandKind.MIG:
        _, now = mig_counts(v, d)
        out = np.minimum(out, now[nodes] // d.count)
    return np.maximum(out, 0)


def _min_slices(profile: str) -> int:
    from binpack.catalog import CATALOG

    return min(m.mig.profiles[profile].memory_slices for m in CATALOG.values()
               if m.mig is not None and profile in m.mig.profiles)


def _free_slices(v: View, nodes: np.ndarray) -> np.ndarray:
    s = v.s
    total = np.zeros(s.mig_mode.shape, np.int64)
    for m, name in enumerate(s.models):
        gm = lookup(name)
        if gm is not None and gm.mig is not None:
            total[s.model == m] = gm.mig.memory_slices
    used = np.unpackbits(v.mig_used[..., None], axis=-1).sum(axis=-1)
    free = np.where(s.valid & s.healthy & (s.mig_mode != MigMode.NONE), total - used, 0)
    return free[nodes].sum(axis=1)


class GroupModel:
    """CP-SAT over y[kind, node] (members of the kind on the node) and u[node] (node used)."""

    def __init__(self, p: GroupProblem) -> None:
        self.p = p
        self.m = cp_model.CpModel()
        t_n, c_n = p.ub.shape
        self.y = [[self.m.new_int_var(0, int(p.ub[t, c]), f"y{t}_{c}") for c in range(c_n)] for t in range(t_n)]
        self.u = [self.m.new_bool_var(f"u{c}") for c in range(c_n)]
        self._assignment()
        self._capacities()
        self._whole_and_shares()
        self._objective()

    def _assignment(self) -> None:
        """Every member placed (all or nothing), and only on nodes marked used."""
        for t, ys in enumerate(self.y):
            self.m.add(sum(ys) == self.p.need[t])
            for c, y in enumerate(ys):
                self.m.add(y <= int(self.p.ub[t, c]) * self.u[c])

    def _capacities(self) -> None:
        """Each shared capacity, per node: sum over kinds of coef * members <= what the node has free,
        and nothing on an unused node (the `* u` also gives the LP relaxation a bound on nodes used)."""
        for _, coef, rhs in self.p.rows:
            for c in range(len(self.u)):
                terms = [int(coef[t, c]) * self.y[t][c] for t in range(len(self.y)) if coef[t, c]]
                if terms:
                    self.m.add(sum(terms) <= int(rhs[c]) * self.u[c])

    def _whole_and_shares(self) -> None:
        """Whole members and shares compete for a node's whole-free GPUs: z[c] of them are opened for
        shares, and each share kind fits on the GPUs already shared plus `full` per opened GPU."""
        p = self.p
        whole = [t for t, d in enumerate(p.kinds) if d.kind is DemandKind.WHOLE]
        shares = [t for t, d in enumerate(p.kinds) if d.kind is DemandKind.SHARE]
        for c, u in enumerate(self.u):
            z = self.m.new_int_var(0, int(p.slack[c]), f"z{c}") if shares else 0
            used = [p.kinds[t].count * self.y[t][c] for t in whole if p.ub[t, c]]
            if used or shares:
                self.m.add(sum(used) + z <= int(p.slack[c]) * u)
            for t in shares:
                if p.ub[t, c]:
                    self.m.add(self.y[t][c] <= int(p.partial[t, c]) + int(p.full[t, c]) * z)

    def _objective(self) -> None:
        self.obj = self.p.node_weight * sum(self.u) + sum(
            int(self.p.cost[t, c]) * self.y[t][c] for t in range(len(self.y)) for c in range(len(self.u)))
        self.m.minimize(self.obj)

    def forbid(self, c: int, counts: np.ndarray) -> None:
        """No solution may put at least `counts` members of each kind on node c (they do not fit together)."""
        lits = []
        for t in np.flatnonzero(counts):
            b = self.m.new_bool_var("")
            self.m.add(self.y[t][c] <= int(counts[t]) - 1).only_enforce_if(~b)
            lits.append(b)
        self.m.add(sum(lits) <= len(lits) - 1)

    def at_most(self, objective: int) -> None:
        """A known plan has this objective: accept nothing worse."""
        self.m.add(self.obj <= objective)

    def same_nodes(self, groups: list[list[int]]) -> None:
        """Candidate nodes in one group are interchangeable (same board, same state): use them in order."""
        for group in groups:
            for a, b in itertools.pairwise(group):
                self.m.add(self.u[a] >= self.u[b])

    def hint(self, assign: np.ndarray) -> None:
        self.m.clear_hints()
        for t, ys in enumerate(self.y):
            for c, y in enumerate(ys):
                self.m.add_hint(y, int(assign[t, c]))
        for c, u in enumerate(self.u):
            self.m.add_hint(u, int(assign[:, c].any()))  # protobuf >= 7 refuses a bool here

    def solve(self, time_limit_s: float, workers: int, seed: int,
              on_solution: Callable[[np.ndarray], bool]) -> cp_model.CpSolverStatus:
        """Solve; every solution found goes to on_solution, which returns False to stop the search."""
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(time_limit_s, 0.001)
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = seed
        return solver.solve(self.m, _Each(self.y, on_solution))


class _Each(cp_model.CpSolverSolutionCallback):
    def __init__(self, y: list[list[cp_model.IntVar]], on_solution: Callable[[np.ndarray], bool]) -> None:
        super().__init__()
        self.y = y
        self.on_solution = on_solution

    def on_solution_callback(self) -> None:
        assign = np.asarray([[self.value(v) for v in ys] for ys in self.y], np.int64)
        if not self.on_solution(assign):
            self.stop_search()
