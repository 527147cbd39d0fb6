"""The immutable vocabulary of the solver: GPUs, nodes, demands and placements.

Every type validates itself at construction and raises ValueError naming the bad field, so a
snapshot, a fit or a placement never sees malformed input. Infeasible requests are not errors:
they are verdicts (see fit.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from binpack.catalog import FULL_MILLI, canonical_model, largest_memory_mib, lookup, mig_profile_names

MAX_GPUS_PER_NODE = 16
# The largest CPU (milli), memory (MiB) or MiB of GPU memory any type holds: 2**40 is a billion cores or
# an exbibyte, far past any machine, and sums and products of such amounts still fit NumPy's int64.
MAX_AMOUNT = 2**40


def _bounded(what: str, *values: int) -> None:
    """ValueError unless every value is an integer in 0..MAX_AMOUNT (a pod's absurd request never reaches
    the arrays, where it would overflow int64)."""
    for v in values:
        if not 0 <= v <= MAX_AMOUNT:
            raise ValueError(f"{what}: must be 0..{MAX_AMOUNT}, got {v}")


class MigMode(IntEnum):
    """How a GPU serves MIG: not at all, from a fixed layout of instances, or by creating them on demand."""

    NONE = 0
    STATIC = 1
    DYNAMIC = 2


class DemandKind(Enum):
    NONE = "none"
    WHOLE = "whole"
    SHARE = "share"
    MIG = "mig"


class Topology(Enum):
    BEST_EFFORT = "best-effort"
    NVLINK = "nvlink"


@dataclass(frozen=True, slots=True)
class MigInstance:
    """A MIG GPU instance that exists on a GPU (static layout): profile, first memory slice, UUID."""

    profile: str
    start: int
    uuid: str = ""


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU of a node. `memory_mib` 0 means "the catalog's figure for this model"."""

    index: int
    model: str
    memory_mib: int = 0
    uuid: str = ""
    mig_mode: MigMode = MigMode.NONE
    mig_instances: tuple[MigInstance, ...] = ()
    healthy: bool = True

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"gpu.index: must be >= 0, got {self.index}")
        object.__setattr__(self, "model", canonical_model(self.model))
        known = lookup(self.model)
        _bounded("gpu.memory_mib", self.memory_mib)
        if self.memory_mib == 0:
            if known is None:
                raise ValueError(f"gpu.memory_mib: unknown model {self.model!r} needs its memory in MiB")
            object.__setattr__(self, "memory_mib", known.memory_mib)
        object.__setattr__(self, "mig_mode", MigMode(self.mig_mode))
        if self.mig_mode is MigMode.NONE:
            if self.mig_instances:
                raise ValueError("gpu.mig_instances: given for a GPU whose MIG mode is off")
            return
        if known is None or known.mig is None:
            raise ValueError(f"gpu.mig_mode: model {self.model!r} is not MIG-capable")
        if self.mig_mode is MigMode.DYNAMIC and self.mig_instances:
            raise ValueError("gpu.mig_instances: a dynamic-MIG GPU has no fixed layout")
        used = 0
        me = 0
        for inst in self.mig_instances:
            if inst.profile not in known.mig.profiles:
                raise ValueError(f"gpu.mig_instances: {self.model} has no MIG profile {inst.profile!r}; "
                                 f"known: {sorted(known.mig.profiles)}")
            prof = known.mig.profiles[inst.profile]
            if inst.start not in prof.starts:
                raise ValueError(
                    f"gpu.mig_instances: {inst.profile} may start at {list(prof.starts)}, not {inst.start}"
                )
            mask = ((1 << prof.memory_slices) - 1) << inst.start
            if used & mask:
                raise ValueError(f"gpu.mig_instances: {inst.profile}@{inst.start} overlaps another instance")
            used |= mask
            me += prof.media_extension
        if me > 1:
            raise ValueError("gpu.mig_instances: at most one +me instance per GPU")


def _square(name: str, m: tuple[tuple[int, ...], ...], n: int) -> None:
    if len(m) != n or any(len(row) != n for row in m):
        raise ValueError(f"node.{name}: must be {n}x{n} (one row and column per GPU)")
    for i in range(n):
        for j in range(n):
            if m[i][j] != m[j][i]:
                raise ValueError(f"node.{name}: not symmetric at [{i}][{j}]")
            if m[i][j] < 0:
                raise ValueError(f"node.{name}: negative entry at [{i}][{j}]")


@dataclass(frozen=True, slots=True)
class Node:
    """A node: its GPUs (local index = position), NVLink link counts and PCIe levels between them,
    and the CPU (milli) and memory (MiB) allocatable that GPU pods also consume."""

    name: str
    gpus: tuple[Gpu, ...]
    cpu_milli: int
    memory_mib: int
    nvlink: tuple[tuple[int, ...], ...] = ()
    pcie: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("node.name: empty")
        n = len(self.gpus)
        if n > MAX_GPUS_PER_NODE:
            raise ValueError(f"node.gpus: {n} GPUs, at most {MAX_GPUS_PER_NODE} per node")
        for i, g in enumerate(self.gpus):
            if g.index != i:
                raise ValueError(f"node.gpus: GPU at position {i} has index {g.index}")
        _bounded("node.cpu_milli/memory_mib", self.cpu_milli, self.memory_mib)
        zero = tuple(tuple(0 for _ in range(n)) for _ in range(n))
        nv = tuple(tuple(int(x) for x in row) for row in self.nvlink) if self.nvlink else zero
        pc = tuple(tuple(int(x) for x in row) for row in self.pcie) if self.pcie else zero
        _square("nvlink", nv, n)
        _square("pcie", pc, n)
        object.__setattr__(self, "nvlink", nv)
        object.__setattr__(self, "pcie", pc)


@dataclass(frozen=True, slots=True)
class Demand:
    """What one pod asks for. Build with the class methods; `kind` decides which fields count.

    Shares are per GPU: `memory_mib` of memory and `compute_milli` (1000 = all SMs) on exactly one GPU.
    """

    kind: DemandKind
    count: int = 0
    memory_mib: int = 0
    compute_milli: int = 0
    mig_profile: str = ""
    models: frozenset[str] = field(default_factory=frozenset)
    topology: Topology = Topology.BEST_EFFORT
    cpu_milli: int = 0
    host_memory_mib: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", frozenset(canonical_model(m) for m in self.models))
        _bounded("demand.cpu_milli", self.cpu_milli)
        _bounded("demand.host_memory_mib", self.host_memory_mib)
        _bounded("demand.memory_mib", self.memory_mib)
        _bounded("demand.compute_milli", self.compute_milli)
        if self.kind is DemandKind.WHOLE:
            if not 1 <= self.count <= MAX_GPUS_PER_NODE:
                raise ValueError(f"demand.count: whole GPUs must be 1..{MAX_GPUS_PER_NODE}, got {self.count}")
        elif self.kind is DemandKind.SHARE:
            if self.count == 0:  # a share is always on one GPU; Demand(SHARE, ...) may leave count out
                object.__setattr__(self, "count", 1)
            if self.count != 1:
                raise ValueError(f"demand.count: a share is on exactly one GPU, got {self.count}")
            if not 0 <= self.compute_milli <= FULL_MILLI:
                raise ValueError(f"demand.compute_milli: a share is 1..{FULL_MILLI} milli, got {self.compute_milli}")
            if self.memory_mib == 0 and self.compute_milli == 0:
                raise ValueError("demand.memory_mib/compute_milli: a share needs memory or compute")
            if self.memory_mib > largest_memory_mib():
                raise ValueError(
                    f"demand.memory_mib: {self.memory_mib} MiB is more than any GPU model has "
                    f"({largest_memory_mib()} MiB)"
                )
        elif self.kind is DemandKind.MIG:
            if self.mig_profile not in mig_profile_names():
                raise ValueError(f"demand.mig_profile: unknown MIG profile {self.mig_profile!r}")
            if not 1 <= self.count <= 7 * MAX_GPUS_PER_NODE:
                raise ValueError(f"demand.count: MIG instances must be 1..{7 * MAX_GPUS_PER_NODE}, got {self.count}")
            _check_profile_models(self.mig_profile, self.models)
        elif self.kind is DemandKind.NONE and self.count:
            raise ValueError(f"demand.count: a demand without GPUs has count 0, got {self.count}")
        if self.topology is Topology.NVLINK and self.kind is not DemandKind.WHOLE:
            raise ValueError("demand.topology: nvlink applies to whole-GPU demands only")

    @classmethod
    def whole(cls, count: int, **kw: object) -> Demand:
        return cls(DemandKind.WHOLE, count=count, **kw)  # type: ignore[arg-type]

    @classmethod
    def share(cls, memory_mib: int = 0, compute_milli: int = 0, **kw: object) -> Demand:
        return cls(DemandKind.SHARE, count=1, memory_mib=memory_mib, compute_milli=compute_milli, **kw)  # type: ignore[arg-type]

    @classmethod
    def mig(cls, profile: str, count: int = 1, **kw: object) -> Demand:
        return cls(DemandKind.MIG, count=count, mig_profile=profile, **kw)  # type: ignore[arg-type]

    @classmethod
    def none(cls, **kw: object) -> Demand:
        return cls(DemandKind.NONE, **kw)  # type: ignore[arg-type]

    @property
    def gpu_milli(self) -> int:
        """GPU capacity this demand takes, in milli-GPU (whole GPU = 1000), for accounting."""
        if self.kind is DemandKind.WHOLE:
            return self.count * FULL_MILLI
        if self.kind is DemandKind.SHARE:
            return self.compute_milli
        return 0


def _check_profile_models(profile: str, models: frozenset[str]) -> None:
    """A MIG demand restricted to models must name a profile one of them offers (e.g. no 1g.5gb on H100)."""
    if not models:
        return
    offers = [m for m in models if (gm := lookup(m)) is not None and gm.mig is not None and profile in gm.mig.profiles]
    if not offers:
        raise ValueError(f"demand.mig_profile: {profile!r} is not a MIG profile of {'|'.join(sorted(models))}")


@dataclass(frozen=True, slots=True)
class MigSlot:
    """One MIG instance of a placement: local GPU index, profile and first memory slice."""

    gpu: int
    profile: str
    start: int


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a demand goes: node name, local GPU indices, MIG slots, and the share taken per GPU."""

    node: str
    gpus: tuple[int, ...] = ()
    mig: tuple[MigSlot, ...] = ()
    memory_mib: int = 0
    compute_milli: int = 0
    cpu_milli: int = 0
    host_memory_mib: int = 0
    kind: DemandKind = DemandKind.WHOLE

    def __post_init__(self) -> None:
        _bounded("placement: amounts", self.memory_mib, self.compute_milli, self.cpu_milli, self.host_memory_mib)
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"placement.gpus: repeated GPU in {self.gpus}")
