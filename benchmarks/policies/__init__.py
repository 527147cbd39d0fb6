"""The packing policies `gpupack bench packing` compares, by name, each a small module with one interface."""

from __future__ import annotations

from benchmarks.policies.base import Context, Factory, Policy
from benchmarks.policies.best_fit import BestFit
from benchmarks.policies.dot_product import DotProduct
from benchmarks.policies.fgd import Fgd
from benchmarks.policies.gpu_clustering import GpuClustering
from benchmarks.policies.gpu_packing import GpuPacking
from benchmarks.policies.gpupack import (
    Gpupack,
    GpupackCpuOnlyUnscored,
    GpupackCutMulti,
    GpupackExact,
    GpupackFgdBuckets,
    GpupackNoBalance,
    GpupackNoContention,
    GpupackNoPairing,
    GpupackNoShapes,
    GpupackPreferUsed,
)
from benchmarks.policies.random_fit import RandomFit

POLICIES: dict[str, Factory] = {
    "random": RandomFit,
    "best-fit": BestFit,
    "dot-product": DotProduct,
    "gpu-packing": GpuPacking,
    "gpu-clustering": GpuClustering,
    "fgd": Fgd,
    "gpupack": Gpupack,
}
# ablations of gpupack's policy: not in the default run, asked for by name (--policies)
ABLATIONS: dict[str, Factory] = {
    "gpupack-no-balance": GpupackNoBalance,
    "gpupack-no-contention": GpupackNoContention,
    "gpupack-no-pairing": GpupackNoPairing,
    "gpupack-no-shapes": GpupackNoShapes,
    "gpupack-cut-multi": GpupackCutMulti,
    "gpupack-cpu-only-unscored": GpupackCpuOnlyUnscored,
    "gpupack-exact": GpupackExact,
    "gpupack-fgd-buckets": GpupackFgdBuckets,
    "gpupack-prefer-used": GpupackPreferUsed,
}


def parse_policies(text: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), refusing unknown names with the list of known ones."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    known = {**POLICIES, **ABLATIONS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown policy {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return names


__all__ = ["ABLATIONS", "POLICIES", "Context", "Factory", "Policy", "parse_policies"]
