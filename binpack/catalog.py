"""GPU model catalog: memory and MIG geometry (profiles, slices, legal placements) per model.

Facts come from tests/data/shared/reference/mig.md. The catalog is the one place that knows which MIG
profiles a model has and where each may start; everything else asks it. Unknown models are plain
GPUs whose memory the caller supplies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

FULL_MILLI = 1000  # compute of one whole GPU, in milli-GPU


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One GPU-instance profile: compute and memory slices, its cap per GPU and legal start slots."""

    name: str
    compute_slices: int
    memory_slices: int
    max_count: int
    starts: tuple[int, ...]
    memory_mib: int
    media_extension: bool = False

    def masks(self) -> tuple[int, ...]:
        """Bit masks of the memory slices each legal placement covers (bit i = slice i)."""
        run = (1 << self.memory_slices) - 1
        return tuple(run << s for s in self.starts)


@dataclass(frozen=True, slots=True)
class MigGeometry:
    """The MIG layout of a model: its slice counts and profiles by name."""

    memory_slices: int
    compute_slices: int
    profiles: Mapping[str, MigProfile]

    def profile(self, name: str) -> MigProfile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ValueError(f"mig profile {name!r} does not exist; known: {sorted(self.profiles)}") from None

    def placement_bits(self) -> dict[tuple[str, int], int]:
        """A stable bit number for every (profile, start) placement; static layouts are bit sets of these."""
        bits: dict[tuple[str, int], int] = {}
        for pname in sorted(self.profiles):
            for s in self.profiles[pname].starts:
                bits[(pname, s)] = len(bits)
        return bits


@dataclass(frozen=True, slots=True)
class GpuModel:
    """A GPU model: canonical name, memory per GPU, MIG geometry when MIG-capable."""

    name: str
    memory_mib: int
    mig: MigGeometry | None = None
    family: str = ""


def _eight_slot(gb: tuple[int, int, int, int, int], mem_mib: int) -> MigGeometry:
    """The common 8-memory-slice layout (A100, H100, H200...); `gb` are the names' GB figures
    for the 1-slice, 2-slice (1g double and 2g), 4-slice (3g, 4g) and 8-slice profiles."""
    g1, g2, g4, g8, _ = gb
    per_slice = mem_mib // 8
    specs = [
        (f"1g.{g1}gb", 1, 1, 7, (0, 1, 2, 3, 4, 5, 6), False),
        (f"1g.{g1}gb+me", 1, 1, 1, (0, 1, 2, 3, 4, 5, 6), True),
        (f"1g.{g2}gb", 1, 2, 4, (0, 2, 4, 6), False),
        (f"2g.{g2}gb", 2, 2, 3, (0, 2, 4), False),
        (f"3g.{g4}gb", 3, 4, 2, (0, 4), False),
        (f"4g.{g4}gb", 4, 4, 1, (0,), False),
        (f"7g.{g8}gb", 7, 8, 1, (0,), False),
    ]
    profiles = {
        n: MigProfile(n, c, m, mx, st, per_slice * m, me) for n, c, m, mx, st, me in specs
    }
    return MigGeometry(8, 7, MappingProxyType(profiles))


def _a30() -> MigGeometry:
    specs = [
        ("1g.6gb", 1, 1, 4, (0, 1, 2, 3), False, 5836),
        ("1g.6gb+me", 1, 1, 1, (0, 1, 2, 3), True, 5836),
        ("2g.12gb", 2, 2, 2, (0, 2), False, 11672),
        ("2g.12gb+me", 2, 2, 1, (0, 2), True, 11672),
        ("4g.24gb", 4, 4, 1, (0,), False, 23344),
    ]
    profiles = {n: MigProfile(n, c, m, mx, st, mem, me) for n, c, m, mx, st, me, mem in specs}
    return MigGeometry(4, 4, MappingProxyType(profiles))


_MODELS: tuple[GpuModel, ...] = (
    GpuModel("A100-SXM4-40GB", 40960, _eight_slot((5, 10, 20, 40, 0), 40960), "ampere"),
    GpuModel("A100-SXM4-80GB", 81920, _eight_slot((10, 20, 40, 80, 0), 81920), "ampere"),
    GpuModel("H100-SXM5-80GB", 81559, _eight_slot((10, 20, 40, 80, 0), 81559), "hopper"),
    GpuModel("H100-NVL", 95830, _eight_slot((12, 24, 47, 94, 0), 95830), "hopper"),
    GpuModel("H200-141GB", 143771, _eight_slot((18, 35, 71, 141, 0), 143771), "hopper"),
    GpuModel("B200-180GB", 183359, _eight_slot((23, 45, 90, 180, 0), 183359), "blackwell"),
    GpuModel("A30-24GB", 24576, _a30(), "ampere"),
    GpuModel("V100-SXM2-16GB", 16384, None, "volta"),
    GpuModel("V100-SXM2-32GB", 32768, None, "volta"),
    GpuModel("P100-16GB", 16384, None, "pascal"),
    GpuModel("T4", 15360, None, "turing"),
    GpuModel("A10", 23028, None, "ampere"),
    GpuModel("L4", 23034, None, "ada"),
    GpuModel("L40S", 46068, None, "ada"),
)

# Names seen in GFD labels, NVML and traces, normalised (see normalize_model_name) -> canonical.
_ALIASES: dict[str, str] = {
    "A100-SXM4-40GB": "A100-SXM4-40GB",
    "A100-PCIE-40GB": "A100-SXM4-40GB",
    "A100-40GB": "A100-SXM4-40GB",
    "A800-SXM4-40GB": "A100-SXM4-40GB",
    "A100-SXM4-80GB": "A100-SXM4-80GB",
    "A100-80GB-PCIE": "A100-SXM4-80GB",
    "A100-PCIE-80GB": "A100-SXM4-80GB",
    "A100-80GB": "A100-SXM4-80GB",
    "A800-SXM4-80GB": "A100-SXM4-80GB",
    "H100-SXM5-80GB": "H100-SXM5-80GB",
    "H100-80GB-HBM3": "H100-SXM5-80GB",
    "H100-PCIE": "H100-SXM5-80GB",
    "H100-80GB": "H100-SXM5-80GB",
    "H100": "H100-SXM5-80GB",
    "H800": "H100-SXM5-80GB",
    "H100-NVL": "H100-NVL",
    "H200": "H200-141GB",
    "H200-141GB": "H200-141GB",
    "H200-NVL": "H200-141GB",
    "B200": "B200-180GB",
    "B200-180GB": "B200-180GB",
    "A30": "A30-24GB",
    "A30-24GB": "A30-24GB",
    "V100-SXM2-16GB": "V100-SXM2-16GB",
    "V100M16": "V100-SXM2-16GB",
    "V100-SXM2-32GB": "V100-SXM2-32GB",
    "V100M32": "V100-SXM2-32GB",
    "TESLA-V100-SXM2-16GB": "V100-SXM2-16GB",
    "TESLA-V100-SXM2-32GB": "V100-SXM2-32GB",
    "P100": "P100-16GB",
    "TESLA-P100-PCIE-16GB": "P100-16GB",
    "P100-16GB": "P100-16GB",
    "T4": "T4",
    "TESLA-T4": "T4",
    "A10": "A10",
    "A10G": "A10",
    "L4": "L4",
    "L40S": "L40S",
}

CATALOG: Mapping[str, GpuModel] = MappingProxyType({m.name: m for m in _MODELS})

_NORMALISE = re.compile(r"[\s_]+")


def normalize_model_name(raw: str) -> str:
    """Fold the spellings of GFD labels, NVML names and traces into one key:
    'NVIDIA A100-SXM4-80GB' and 'NVIDIA-A100-SXM4-80GB' both give 'A100-SXM4-80GB'."""
    name = _NORMALISE.sub("-", raw.strip()).upper()
    for prefix in ("NVIDIA-", "TESLA-NVIDIA-"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def canonical_model(raw: str) -> str:
    """The catalog name for a raw model string, or the normalised string itself when unknown."""
    key = normalize_model_name(raw)
    if not key:
        raise ValueError("model: empty GPU model name")
    return _ALIASES.get(key, key)


def lookup(raw: str) -> GpuModel | None:
    """The catalog entry for a raw model name, or None for a model gpupack does not know."""
    return CATALOG.get(canonical_model(raw))


def mig_profile_names() -> frozenset[str]:
    """Every MIG profile name any catalogued model has."""
    return frozenset(p for m in _MODELS if m.mig for p in m.mig.profiles)


def largest_memory_mib() -> int:
    return max(m.memory_mib for m in _MODELS)
