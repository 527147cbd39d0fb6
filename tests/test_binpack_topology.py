"""The NVLink set that place chooses, against brute force, on random boards and reference boards.

Objective (go-gpuallocator's, see topology.best_set): maximum set score (100 per NVLink + PCIe points
per pair, summed over pairs); ties by the leftover free GPUs' own set score.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_binpack_gen import FAST, PCIE_LEVELS

from binpack import Demand, Gpu, Node, Snapshot, Topology, allocate, fit, place
from binpack.tables import cliques
from binpack.topology import best_set, bridged_pairs, dgx1_v100, largest_clique, nvswitch, pair_scores, pcie_only

# go-gpuallocator's points per PCIe level, restated here so the test does not trust topology.py's table
POINTS = {0: 0, 10: 50, 20: 40, 30: 30, 40: 20, 50: 10}


def brute(nv: list[list[int]], pc: list[list[int]], free: list[int], k: int, nvlink: bool) -> tuple[int, int] | None:
    """The best (set score, leftover score) over every k-subset of the free GPUs."""
    def score(gs: tuple[int, ...] | list[int]) -> int:
        return sum(100 * nv[a][b] + POINTS[pc[a][b]] for a, b in itertools.combinations(gs, 2))

    keys = [(score(c), score([g for g in free if g not in c])) for c in itertools.combinations(free, k)
            if not nvlink or all(nv[a][b] > 0 for a, b in itertools.combinations(c, 2))]
    return max(keys) if keys else None


def chosen_key(nv: list[list[int]], pc: list[list[int]], free: list[int], chosen: tuple[int, ...]) -> tuple[int, int]:
    def score(gs: tuple[int, ...] | list[int]) -> int:
        return sum(100 * nv[a][b] + POINTS[pc[a][b]] for a, b in itertools.combinations(gs, 2))

    return score(chosen), score([g for g in free if g not in chosen])


@st.composite
def boards(draw: st.DrawFn) -> tuple[list[list[int]], list[list[int]]]:
    n = draw(st.integers(1, 8))
    nv = [[0] * n for _ in range(n)]
    pc = [[0] * n for _ in range(n)]
    for a, b in itertools.combinations(range(n), 2):
        nv[a][b] = nv[b][a] = draw(st.sampled_from((0, 0, 1, 2, 4, 12)))
        pc[a][b] = pc[b][a] = draw(st.sampled_from(PCIE_LEVELS))
    return nv, pc


def _node(nv: list[list[int]], pc: list[list[int]] | tuple, model: str = "H100-SXM5-80GB") -> Node:
    n = len(nv)
    return Node("n", tuple(Gpu(g, model) for g in range(n)), 10**6, 10**7,
                tuple(map(tuple, nv)), tuple(map(tuple, pc)))


def _take(snap: Snapshot, busy: list[int]) -> Snapshot:
    from binpack import Placement

    for g in busy:
        snap = allocate(snap, Placement("n", (g,)))
    return snap


@FAST
@given(board=boards(), data=st.data())
def test_place_picks_the_optimal_set_on_random_boards(board: tuple, data: st.DataObject) -> None:
    nv, pc = board
    n = len(nv)
    busy = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n - 1))
    free = [g for g in range(n) if g not in busy]
    k = data.draw(st.integers(1, len(free)))
    need = data.draw(st.booleans())
    snap = _take(Snapshot.build([_node(nv, pc)]), busy)
    d = Demand.whole(k, topology=Topology.NVLINK if need else Topology.BEST_EFFORT)
    expect = brute(nv, pc, free, k, need and k > 1)
    p = place(snap, d, "n")
    if expect is None:
        assert p is None
        assert fit(snap, d).message(0).startswith(f"needs {k} GPUs linked by NVLink")
    else:
        assert p is not None
        assert chosen_key(nv, pc, free, p.gpus) == expect


@FAST
@given(board=boards(), data=st.data())
def test_largest_clique_matches_brute_force(board: tuple, data: st.DataObject) -> None:
    nv, _ = board
    free = data.draw(st.lists(st.integers(0, len(nv) - 1), unique=True))
    expect = max((len(c) for r in range(len(free) + 1) for c in itertools.combinations(free, r)
                  if all(nv[a][b] > 0 for a, b in itertools.combinations(c, 2))), default=0)
    assert largest_clique(np.asarray(nv), free) == expect
    snap = Snapshot.build([_node(nv, board[1])])  # the lookup table fit uses, on the same board
    assert cliques(snap.static, np.asarray([sum(1 << g for g in free)], np.int64))[0] == expect


def _mat(m: tuple) -> list[list[int]]:
    return [list(r) for r in m]


BOARDS = {
    "dgx1-v100": dgx1_v100(),
    "hgx-a100-nvswitch": nvswitch(8, 12),
    "hgx-h100-nvswitch": nvswitch(8, 18),
    "pcie-only": pcie_only(8),
    "a100-pcie-bridged": bridged_pairs(((0, 2), (1, 3), (4, 5), (6, 7)), 8),
}


@pytest.mark.parametrize("board", sorted(BOARDS))
@pytest.mark.parametrize("busy", [(), (0,), (0, 4), (1, 2, 7), (2, 3, 5)])
def test_reference_boards_match_brute_force(board: str, busy: tuple[int, ...]) -> None:
    nv, pc = (_mat(m) for m in BOARDS[board])
    free = [g for g in range(8) if g not in busy]
    snap = _take(Snapshot.build([_node(nv, pc)]), list(busy))
    for k in range(1, len(free) + 1):
        for need in (False, True):
            expect = brute(nv, pc, free, k, need and k > 1)
            p = place(snap, Demand.whole(k, topology=Topology.NVLINK if need else Topology.BEST_EFFORT), "n")
            assert (p is None) == (expect is None), (board, busy, k, need)
            if p is not None:
                assert chosen_key(nv, pc, free, p.gpus) == expect, (board, busy, k, need)


@pytest.mark.parametrize(("board", "busy", "k", "expect"), [
    ("dgx1-v100", (), 4, (0, 1, 2, 3)),  # the two NVLink quads; equal leftovers, so the low one
    ("dgx1-v100", (0,), 4, (4, 5, 6, 7)),
    ("dgx1-v100", (), 2, (2, 3)),  # NV2 + same PCIe switch beats NV2 across the socket
    ("dgx1-v100", (0, 4), 4, None),  # no NVLink quad left
    ("hgx-h100-nvswitch", (), 4, (0, 1, 2, 3)),  # NVLink equal everywhere: the PCIe/NUMA half decides
    ("a100-pcie-bridged", (), 2, (4, 5)),  # bridged pair that also shares a PCIe switch
    ("pcie-only", (), 2, None),  # no NVLink at all
])
def test_reference_board_choices(board: str, busy: tuple[int, ...], k: int, expect: tuple[int, ...] | None) -> None:
    nv, pc = BOARDS[board]
    snap = _take(Snapshot.build([_node(_mat(nv), _mat(pc))]), list(busy))
    p = place(snap, Demand.whole(k, topology=Topology.NVLINK), "n")
    assert (p.gpus if p else None) == expect


@pytest.mark.parametrize(("busy", "k", "expect"), [
    ((), 2, (0, 1)),  # same PCIe switch
    ((), 4, (0, 1, 2, 3)),  # same socket
    ((1,), 2, (2, 3)),  # a whole switch pair rather than 0 with a neighbour across the switch
    ((0, 2), 2, (4, 5)),  # 1 and 3 share only the socket: take a switch pair and keep them together
])
def test_pcie_only_best_effort(busy: tuple[int, ...], k: int, expect: tuple[int, ...]) -> None:
    nv, pc = BOARDS["pcie-only"]
    snap = _take(Snapshot.build([_node(_mat(nv), _mat(pc), "L4")]), list(busy))
    p = place(snap, Demand.whole(k), "n")
    assert p is not None and p.gpus == expect


def test_dgx1_message_names_the_largest_free_nvlink_set() -> None:
    nv, pc = BOARDS["dgx1-v100"]
    snap = _take(Snapshot.build([_node(_mat(nv), _mat(pc))]), [0, 4])
    verdict = fit(snap, Demand.whole(4, topology=Topology.NVLINK))
    assert not verdict.fits[0] and verdict.resolvable[0]
    assert verdict.message(0) == "needs 4 GPUs linked by NVLink; largest free NVLink set has 3"


def test_pair_scores_follow_go_gpuallocator() -> None:
    nv, pc = dgx1_v100()
    p = pair_scores(nv, pc)
    assert p[0, 3] == 2 * 100 + POINTS[pc[0][3]] and p[0, 5] == POINTS[pc[0][5]] and p[2, 2] == 0
    assert best_set(p, np.asarray(nv), [0, 1], 3, False) is None
