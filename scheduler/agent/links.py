"""A node's interconnect from NVML: the NVLink link-count matrix and the PCIe level matrix.

NVLink: every active link of every GPU is followed to its far end. A link whose far end is a
GPU counts towards that pair (seen from both ends; the smaller count wins, so a link that only
one side reports, e.g. to a lost GPU, is not trusted). On NVSwitch boards the far end is a
switch, so remote PCI ids never name a peer (the go-gpuallocator gap of
tests/data/shared/reference/topology.md): a pair of switch-attached GPUs that NVML says can talk over
NVLink (P2P status) gets min(links of each), as HAMi's fix does.
PCIe: nvmlDeviceGetTopologyCommonAncestor per pair, kept as the NVML level (10 PIX .. 50 SYS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.agent import nvml as nv
from scheduler.agent.nvml import Handle, Nvml

Matrix = tuple[tuple[int, ...], ...]

_DEVICE_TYPE_GPU = 0
_DEVICE_TYPE_SWITCH = 2
_PCIE_LEVELS = frozenset({10, 20, 30, 40, 50})  # INTERNAL (0, same board) has no slot in the schema: unknown


@dataclass(frozen=True, slots=True)
class Links:
    """The NVLink matrix and how it was found (for the agent's one-line log)."""

    nvlink: Matrix
    switch_links: tuple[int, ...]  # per GPU: active links whose far end is an NVSwitch
    notes: tuple[str, ...] = ()


def _square(n: int) -> list[list[int]]:
    return [[0] * n for _ in range(n)]


def nvlink_matrix(nvml: Nvml, handles: Sequence[Handle | None], buses: Sequence[str | None]) -> Links:
    """Link counts between GPU indices; None handles (lost GPUs) have no links."""
    n = len(handles)
    direct = _square(n)
    switch = [0] * n
    notes: list[str] = []
    by_bus = {b: i for i, b in enumerate(buses) if b}
    for i, h in enumerate(handles):
        if h is None:
            continue
        for link in range(int(nvml.NVML_NVLINK_MAX_LINKS)):
            try:
                active = nvml.nvmlDeviceGetNvLinkState(h, link)
            except nvml.NVMLError as e:
                if nv.code(e) == nv.INVALID_ARGUMENT:
                    continue  # this link index does not exist on this GPU
                if nv.code(e) != nv.NOT_SUPPORTED:  # NOT_SUPPORTED: a PCIe card, no NVLink at all
                    notes.append(f"GPU {i}: NVLink link {link}: {nv.describe(e)}")
                break
            if not active:
                continue
            try:
                kind: int | None = int(nvml.nvmlDeviceGetNvLinkRemoteDeviceType(h, link))
            except nvml.NVMLError:
                kind = None  # older drivers: decide from the far end's PCI id below
            if kind == _DEVICE_TYPE_SWITCH:
                switch[i] += 1
                continue
            try:
                remote = nv.bus_key(nv.text(nvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId))
            except nvml.NVMLError as e:
                notes.append(f"GPU {i}: NVLink link {link}: far end unknown ({nv.describe(e)})")
                continue
            j = by_bus.get(remote)
            if j is not None and j != i:
                direct[i][j] += 1
            elif kind is None:
                switch[i] += 1  # not a GPU of this node and the driver cannot say: an NVSwitch port
    out = _square(n)
    for i in range(n):
        for j in range(i + 1, n):
            count = min(direct[i][j], direct[j][i])
            if switch[i] and switch[j] and _p2p_nvlink(nvml, handles[i], handles[j], notes):
                count += min(switch[i], switch[j])
            out[i][j] = out[j][i] = count
    return Links(tuple(tuple(r) for r in out), tuple(switch), tuple(notes))


def _p2p_nvlink(nvml: Nvml, a: Handle, b: Handle, notes: list[str]) -> bool:
    """Whether two switch-attached GPUs reach each other over NVLink (a fabric partition may say no)."""
    try:
        return int(nvml.nvmlDeviceGetP2PStatus(a, b, nvml.NVML_P2P_CAPS_INDEX_NVLINK)) == int(
            nvml.NVML_P2P_STATUS_OK)
    except nvml.NVMLError as e:
        msg = f"NVLink P2P status unreadable ({nv.describe(e)}): switch-attached GPUs taken as all-to-all"
        if msg not in notes:
            notes.append(msg)
        return True  # every shipped NVSwitch board is all-to-all unless partitioned


def pcie_matrix(nvml: Nvml, handles: Sequence[Handle | None]) -> Matrix:
    """NVML topology levels between GPUs; 0 where unknown (a lost GPU, an error, same board)."""
    n = len(handles)
    out = _square(n)
    for i in range(n):
        for j in range(i + 1, n):
            hi, hj = handles[i], handles[j]
            if hi is None or hj is None:
                continue
            try:
                level = int(nvml.nvmlDeviceGetTopologyCommonAncestor(hi, hj))
            except nvml.NVMLError:
                continue
            out[i][j] = out[j][i] = level if level in _PCIE_LEVELS else 0
    return tuple(tuple(r) for r in out)
