"""Why a demand does not fit a node: the reason codes and their sentences, as one table.

As kube-scheduler's `InsufficientResource` (noderesources/fit.go), a failed check is data: the
reason, what the demand asks (`requested`), what the node has of it now (`have`) and, for the
amounts that have one, the node's capacity. A sentence is a template from `TEMPLATES` filled with
those; the exact wording is what kube-scheduler shows users (golden tests pin it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from binpack.catalog import FULL_MILLI
from binpack.types import Demand


class Reason(IntEnum):
    FITS = 0
    NO_GPU = 1
    WRONG_MODEL = 2
    TOO_FEW_GPUS = 3
    NO_NVLINK_SET = 4
    NO_MIG_PROFILE = 5
    TOO_FEW_MIG = 6
    SHARE_TOO_BIG = 7
    CPU_TOO_BIG = 8
    MEMORY_TOO_BIG = 9
    NO_SHARE_GPU = 10
    RESOLVABLE = 20  # codes from here on may fit after evictions
    GPUS_BUSY = 21
    NVLINK_BUSY = 22
    SHARE_BUSY = 23
    MIG_BUSY = 24
    CPU_BUSY = 25
    MEMORY_BUSY = 26


@dataclass(frozen=True, slots=True)
class Insufficient:
    """One node's failed check (kube-scheduler's InsufficientResource): what was asked, what the node
    has of it now, its capacity where the amount has one (None otherwise), and the GPU models of the
    node (the wrong-model sentence names them)."""

    reason: Reason
    demand: Demand
    requested: int
    have: int
    capacity: int | None
    node_models: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """The sentence a user reads (empty when the demand fits)."""
        template = TEMPLATES.get(self.reason)
        if template is None:
            return self.reason.name.lower()
        d = self.demand
        return template.format(
            requested=self.requested, have=self.have, profile=d.mig_profile, models="|".join(sorted(d.models)),
            node_models=", ".join(self.node_models),
            pct=f" and {d.compute_milli * 100 // FULL_MILLI}% compute" if d.compute_milli else "")


# what the demand asks, per reason: the number a sentence's {requested} shows
REQUESTED: dict[Reason, Callable[[Demand], int]] = {
    Reason.SHARE_TOO_BIG: lambda d: d.memory_mib,
    Reason.SHARE_BUSY: lambda d: d.memory_mib,
    Reason.CPU_TOO_BIG: lambda d: d.cpu_milli,
    Reason.CPU_BUSY: lambda d: d.cpu_milli,
    Reason.MEMORY_TOO_BIG: lambda d: d.host_memory_mib,
    Reason.MEMORY_BUSY: lambda d: d.host_memory_mib,
}

# one sentence per reason; {requested} defaults to the demand's count (GPUs or MIG instances)
TEMPLATES: dict[Reason, str] = {
    Reason.FITS: "",
    Reason.NO_GPU: "node has no usable GPU",
    Reason.WRONG_MODEL: "needs GPU model {models}; node has {node_models}",
    Reason.TOO_FEW_GPUS: "needs {requested} GPUs; node has {have} that qualify",
    Reason.NO_NVLINK_SET: "needs {requested} GPUs linked by NVLink; node's largest NVLink set is {have}",
    Reason.NO_MIG_PROFILE: "needs MIG {profile}; no GPU on node offers that profile",
    Reason.TOO_FEW_MIG: "needs {requested} MIG {profile}; node can hold at most {have}",
    Reason.NO_SHARE_GPU: "needs a share of one GPU; every GPU that qualifies is in MIG mode (ask for a MIG profile)",
    Reason.SHARE_TOO_BIG: "needs {requested} MiB on one GPU; node's largest GPU has {have} MiB",
    Reason.CPU_TOO_BIG: "needs {requested}m CPU; node has {have}m allocatable",
    Reason.CPU_BUSY: "needs {requested}m CPU; node has {have}m free",
    Reason.MEMORY_TOO_BIG: "needs {requested} MiB memory; node has {have} MiB allocatable",
    Reason.MEMORY_BUSY: "needs {requested} MiB memory; node has {have} MiB free",
    Reason.GPUS_BUSY: "needs {requested} free GPUs; {have} free",
    Reason.NVLINK_BUSY: "needs {requested} GPUs linked by NVLink; largest free NVLink set has {have}",
    Reason.SHARE_BUSY: "needs {requested} MiB{pct} on one GPU; no GPU has that much free",
    Reason.MIG_BUSY: "needs {requested} free MIG {profile}; {have} free",
}


def requested(reason: Reason, d: Demand) -> int:
    """What the demand asks of the thing `reason` is about."""
    how = REQUESTED.get(reason)
    return d.count if how is None else how(d)
