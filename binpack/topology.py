"""GPU interconnect: pair scores, set scores, the best NVLink set, and reference board topologies.

Scores follow NVIDIA's go-gpuallocator (tests/data/shared/reference/topology.md): 100 points per NVLink
between a pair plus PCIe points by NVML topology level; a set scores the sum over its pairs.
`Node.pcie` holds NVML levels (10 PIX .. 50 SYS); 0 means unknown and scores nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache

import numpy as np

Matrix = tuple[tuple[int, ...], ...]

PCIE_POINTS = {0: 0, 10: 50, 20: 40, 30: 30, 40: 20, 50: 10}
PIX, PXB, PHB, NODE, SYS = 10, 20, 30, 40, 50


def pair_scores(nvlink: Matrix, pcie: Matrix) -> np.ndarray:
    """K x K pair scores: 100 x NVLink count + PCIe points; zero on the diagonal."""
    nv = np.asarray(nvlink, np.int32).reshape(len(nvlink), len(nvlink))
    pc = np.asarray(pcie, np.int32).reshape(nv.shape)
    points = np.vectorize(lambda lv: PCIE_POINTS.get(int(lv), 0), otypes=[np.int32])(pc) if pc.size else pc
    out = 100 * nv + points
    np.fill_diagonal(out, 0)
    return out


def set_score(pair: np.ndarray, gpus: Sequence[int]) -> int:
    """Sum of pair scores over every pair in the set."""
    idx = np.asarray(gpus, np.intp)
    return int(pair[np.ix_(idx, idx)].sum() // 2)


def all_linked(nvlink: np.ndarray, gpus: Sequence[int]) -> bool:
    return all(nvlink[a, b] > 0 for a, b in itertools.combinations(gpus, 2))


def best_set(
    pair: np.ndarray, nvlink: np.ndarray, free: Sequence[int], k: int, require_nvlink: bool
) -> tuple[int, ...] | None:
    """The k free GPUs with the highest set score; among equals the one whose leftover free GPUs
    keep the highest score among themselves, then the lowest indices. None if no set qualifies.

    Exhaustive like go-gpuallocator's best-effort policy (C(16, 8) sets at most), in plain ints:
    a set's score is the sum of its members' scores towards the rest of the set, so the leftover
    score is total - score(set) - cut(set, rest), all from one per-GPU row sum."""
    free = sorted(free)
    if not 0 < k <= len(free):
        return None
    p = [[int(x) for x in row] for row in pair]
    linked = [[int(x) > 0 for x in row] for row in nvlink]
    towards_free = {g: sum(p[g][h] for h in free) for g in free}
    total = sum(towards_free.values()) // 2
    best: tuple[int, int] | None = None
    chosen: tuple[int, ...] | None = None
    for combo in itertools.combinations(free, k):
        if require_nvlink and not all(linked[a][b] for a, b in itertools.combinations(combo, 2)):
            continue
        inner = sum(p[a][b] for a, b in itertools.combinations(combo, 2))
        # towards_free summed over the set counts inner twice plus every edge to the leftover once
        cut = sum(towards_free[g] for g in combo) - 2 * inner
        key = (inner, total - inner - cut)
        if best is None or key > best:
            best, chosen = key, combo
    return chosen


def largest_clique(nvlink: np.ndarray, free: Sequence[int]) -> int:
    """Size of the largest subset of `free` whose every pair has an NVLink (branch and bound on bit sets).
    fit reads the same answer from tables.cliques (one lookup per node); this is the reference."""
    free = sorted(free)
    if len(free) <= 1:
        return len(free)
    adj = {g: sum(1 << h for h in free if h != g and nvlink[g, h] > 0) for g in free}
    best = 1

    def grow(size: int, cand: int) -> None:
        nonlocal best
        while cand:
            if size + cand.bit_count() <= best:
                return  # even taking every candidate cannot beat the best so far
            g = cand.bit_length() - 1
            cand &= ~(1 << g)
            grow(size + 1, cand & adj[g])
        best = max(best, size)

    grow(0, sum(1 << g for g in free))
    return best


def disjoint_sets(nvlink: np.ndarray, free: Sequence[int], k: int) -> int:
    """How many disjoint all-NVLinked k-subsets of `free` fit at once (an upper bound for pod groups)."""
    free = sorted(free)
    if k <= 1:
        return len(free)
    adj = {g: frozenset(h for h in free if h != g and nvlink[g, h] > 0) for g in free}

    @cache
    def most(left: frozenset[int]) -> int:
        if len(left) < k:
            return 0
        g = min(left)
        best = most(left - {g})  # g stays unused
        for rest in itertools.combinations(sorted(adj[g] & left), k - 1):
            if all(nvlink[a, b] > 0 for a, b in itertools.combinations(rest, 2)):
                best = max(best, 1 + most(left - {g, *rest}))
                if best == len(left) // k:
                    break  # every GPU is in a set already: cannot do better
        return best

    return most(frozenset(free))


# Reference boards (tests/data/shared/reference/topology.md), as (nvlink, pcie) matrices.

@cache
def dgx1_v100() -> tuple[Matrix, Matrix]:
    """DGX-1 V100 hybrid cube-mesh: 6 NVLinks per GPU, sockets {0-3} and {4-7}, PLX pairs."""
    nv = (
        (0, 1, 1, 2, 2, 0, 0, 0),
        (1, 0, 2, 1, 0, 2, 0, 0),
        (1, 2, 0, 2, 0, 0, 1, 0),
        (2, 1, 2, 0, 0, 0, 0, 1),
        (2, 0, 0, 0, 0, 1, 1, 2),
        (0, 2, 0, 0, 1, 0, 2, 1),
        (0, 0, 1, 0, 1, 2, 0, 2),
        (0, 0, 0, 1, 2, 1, 2, 0),
    )
    return nv, pcie_two_socket(8)


@cache
def nvswitch(n: int = 8, links: int = 18) -> tuple[Matrix, Matrix]:
    """NVSwitch all-to-all (HGX A100: 12 links, H100/H200: 18), two NUMA halves on PCIe."""
    nv = tuple(tuple(0 if i == j else links for j in range(n)) for i in range(n))
    return nv, pcie_two_socket(n)


@cache
def pcie_two_socket(n: int = 8) -> Matrix:
    """PCIe-only 2-socket board: pairs on one switch (PIX), same socket (NODE), across (SYS)."""
    half = max(n // 2, 1)

    def level(i: int, j: int) -> int:
        if i == j:
            return 0
        if i // half != j // half:
            return SYS
        return PIX if i // 2 == j // 2 else NODE

    return tuple(tuple(level(i, j) for j in range(n)) for i in range(n))


@cache
def pcie_only(n: int = 8) -> tuple[Matrix, Matrix]:
    """A PCIe-only node (T4, L4, A10...): no NVLink."""
    return tuple(tuple(0 for _ in range(n)) for _ in range(n)), pcie_two_socket(n)


@cache
def bridged_pairs(pairs: tuple[tuple[int, int], ...], n: int, links: int = 12) -> tuple[Matrix, Matrix]:
    """PCIe cards joined in pairs by NVLink bridges (A100 PCIe, H100 NVL); pairs need not be adjacent."""
    nv = [[0] * n for _ in range(n)]
    for a, b in pairs:
        nv[a][b] = nv[b][a] = links
    return tuple(tuple(r) for r in nv), pcie_two_socket(n)
