"""MIG through NVML: read a GPU's instances, and create or destroy one at an exact placement.

NVML speaks in profile IDs (19 for a 1-slice GI on an 8-slot part), gpupack in catalog names
(`1g.10gb`). The bridge is the GPU's own profile table (nvmlDeviceGetGpuInstanceProfileInfo per
profile enum) matched against binpack's catalog by geometry: compute slices, memory slices (the
placement size) and the media-extension flag; the NVML name is the tie-breaker and the fallback.
A GPU instance split into several compute instances (`1c.3g.40gb`) is reported but not offered:
gpupack books whole GPU instances only (tests/data/shared/reference/mig.md, R8).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from binpack import MigInstance, MigProfile, lookup
from scheduler.agent import nvml as nv
from scheduler.agent.nvml import Handle, Nvml

# GI profile enums (nvml.h): the REV1 variants are the `+me` profiles, REV2 the double-memory 1g.
_ME_ENUMS = frozenset({7, 8})  # 1_SLICE_REV1, 2_SLICE_REV1
_DOUBLE_MEMORY_ENUMS = frozenset({9})  # 1_SLICE_REV2
_CATALOG_ENUMS = frozenset({0, 1, 2, 3, 4, 7, 8, 9})  # GFX / NO_ME / ALL_ME variants are not catalogued
# CI profile enum for a compute instance covering all of a GI's compute slices.
_CI_ENUM_FOR_SLICES = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


@dataclass(frozen=True, slots=True)
class GiProfile:
    """One row of a GPU's GPU-instance profile table."""

    enum: int
    id: int
    compute_slices: int
    name: str  # NVML's name without the "MIG " prefix, e.g. "1g.10gb"

    @property
    def media_extension(self) -> bool:
        return self.enum in _ME_ENUMS


@dataclass(frozen=True, slots=True)
class GiState:
    """A GPU instance that exists on a GPU, with its compute instances."""

    handle: Handle
    gi_id: int
    profile: str
    start: int
    size: int
    compute: tuple[Handle, ...]


def gi_profiles(nvml: Nvml, device: Handle) -> dict[int, GiProfile]:
    """The GPU's GI profiles by NVML profile ID (profiles the GPU lacks answer NOT_SUPPORTED)."""
    out: dict[int, GiProfile] = {}
    for enum in range(int(nvml.NVML_GPU_INSTANCE_PROFILE_COUNT)):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(device, enum)
        except nvml.NVMLError as e:
            if nv.code(e) != nv.FUNCTION_NOT_FOUND:
                continue
            try:  # a driver without the v2 call: the v1 struct has no name
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(device, enum, version=1)
            except nvml.NVMLError:
                continue
        name = nv.text(getattr(info, "name", b"")).removeprefix("MIG ").strip()
        out[int(info.id)] = GiProfile(enum, int(info.id), int(info.sliceCount), name)
    return out


def catalog_profile(model: str, gp: GiProfile, memory_slices: int) -> MigProfile | None:
    """The catalog profile of this model with the GI profile's geometry, or None."""
    known = lookup(model)
    if known is None or known.mig is None or gp.enum not in _CATALOG_ENUMS:
        return None
    matches = [p for p in known.mig.profiles.values()
               if p.compute_slices == gp.compute_slices and p.memory_slices == memory_slices
               and p.media_extension == gp.media_extension]
    named = [p for p in matches if p.name == gp.name]
    return next(iter(named or matches), None)


def read_instances(nvml: Nvml, device: Handle, model: str, index: int) -> tuple[tuple[MigInstance, ...], list[str]]:
    """The MIG instances gpupack can offer on a MIG-enabled GPU, and notes on what it skipped.

    MIG devices (compute instances) are enumerated through their handles, which needs no ctypes
    arrays; each is folded into its GPU instance for the profile and the placement."""
    notes: list[str] = []
    profiles = gi_profiles(nvml, device)
    by_gi: dict[int, list[tuple[str, int | None]]] = {}
    for k in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(device))):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(device, k)
        except nvml.NVMLError as e:
            if nv.code(e) in (nv.NOT_FOUND, nv.INVALID_ARGUMENT):
                continue  # indices are sparse once instances come and go
            raise
        gi_id = int(nvml.nvmlDeviceGetGpuInstanceId(mig))
        uuid = nv.text(nvml.nvmlDeviceGetUUID(mig))
        try:
            ci_slices: int | None = int(nvml.nvmlDeviceGetAttributes(mig).computeInstanceSliceCount)
        except nvml.NVMLError:
            ci_slices = None
        by_gi.setdefault(gi_id, []).append((uuid, ci_slices))
    if not by_gi:  # an empty layout looks the same as MIG devices the container may not see
        notes.append(f"GPU {index}: MIG is on but no MIG device is visible (none created yet, or the agent "
                     "lacks NVIDIA's mig-monitor capability: see docs/agent.md)")
    out: list[MigInstance] = []
    for gi_id, cis in sorted(by_gi.items()):
        info = nvml.nvmlGpuInstanceGetInfo(nvml.nvmlDeviceGetGpuInstanceById(device, gi_id))
        start, size = int(info.placement.start), int(info.placement.size)
        gp = profiles.get(int(info.profileId))
        prof = catalog_profile(model, gp, size) if gp else None
        label = f"GPU {index}: GPU instance {gi_id} ({gp.name if gp else info.profileId}@{start})"
        if prof is None:
            notes.append(f"{label} has a profile gpupack's catalog lacks for {model}; not offered")
        elif len(cis) != 1 or cis[0][1] not in (None, prof.compute_slices):
            notes.append(f"{label} is split into {len(cis)} compute instances; not offered (whole GIs only)")
        elif start not in prof.starts:
            notes.append(f"{label} starts where the catalog says {prof.name} cannot; not offered")
        else:
            out.append(MigInstance(prof.name, start, cis[0][0]))
    return tuple(out), notes


def _gi_profile_for(profiles: dict[int, GiProfile], prof: MigProfile) -> GiProfile:
    cands = [gp for gp in profiles.values() if gp.enum in _CATALOG_ENUMS
             and gp.compute_slices == prof.compute_slices and gp.media_extension == prof.media_extension
             and (gp.enum in _DOUBLE_MEMORY_ENUMS) == (prof.memory_slices == 2 * prof.compute_slices == 2)]
    named = [gp for gp in cands if gp.name == prof.name]
    if not (named or cands):
        raise LookupError(f"the GPU offers no GPU-instance profile for {prof.name}")
    return (named or cands)[0]


def list_instances(nvml: Nvml, device: Handle, model: str) -> list[GiState]:
    """Every GPU instance on the GPU, with its compute instances (those without any included)."""
    out: list[GiState] = []
    for gp in gi_profiles(nvml, device).values():
        for gi in nv.gpu_instances(nvml, device, gp.id):
            info = nvml.nvmlGpuInstanceGetInfo(gi)
            size = int(info.placement.size)
            prof = catalog_profile(model, gp, size)
            cis: list[Handle] = []
            for ci_enum in sorted(set(_CI_ENUM_FOR_SLICES.values())):
                try:
                    ci_info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                        gi, ci_enum, nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
                except nvml.NVMLError:
                    continue
                cis.extend(nv.compute_instances(nvml, gi, int(ci_info.id)))
            out.append(GiState(gi, int(info.id), prof.name if prof else gp.name, int(info.placement.start),
                               size, tuple(cis)))
    return out


def create_instance(nvml: Nvml, device: Handle, model: str, profile: str, start: int) -> Handle:
    """Create the GPU instance `profile` at memory slice `start` and one compute instance filling it."""
    known = lookup(model)
    if known is None or known.mig is None:
        raise LookupError(f"{model} is not a MIG-capable model in gpupack's catalog")
    prof = known.mig.profile(profile)
    if start not in prof.starts:
        raise LookupError(f"{profile} may start at {list(prof.starts)}, not {start}")
    gp = _gi_profile_for(gi_profiles(nvml, device), prof)
    placement = nvml.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = start, prof.memory_slices
    gi = nvml.nvmlDeviceCreateGpuInstanceWithPlacement(device, gp.id, ctypes.byref(placement))
    add_compute(nvml, gi, prof.compute_slices)
    return gi


def add_compute(nvml: Nvml, gi: Handle, compute_slices: int) -> Handle:
    """The one compute instance that covers a GPU instance (what the device plugin calls a MIG device)."""
    ci_info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
        gi, _CI_ENUM_FOR_SLICES[compute_slices], nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
    return nvml.nvmlGpuInstanceCreateComputeInstance(gi, int(ci_info.id))


def destroy_instance(nvml: Nvml, state: GiState) -> None:
    """Destroy a GPU instance: its compute instances first (NVML refuses otherwise)."""
    for ci in state.compute:
        nvml.nvmlComputeInstanceDestroy(ci)
    nvml.nvmlGpuInstanceDestroy(state.handle)
