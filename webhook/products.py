"""gpupack model names -> the `nvidia.com/gpu.product` label values GPU Feature Discovery writes.

GFD writes the NVML product name with spaces turned into '-' (`NVIDIA-A100-SXM4-80GB`,
`Tesla-T4`), and may add `-SHARED` when the device plugin shares (renames) the GPUs. Label
matching is exact, so the webhook's node affinity lists every spelling a node of that model
can carry; for a model the catalog does not know no spelling can be expected, and the webhook
writes no affinity (the extender still matches the model by name). The table is checked against
binpack.catalog's aliases by the tests: each value must fold back to the model it is listed under.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from binpack.catalog import CATALOG, canonical_model

PRODUCT_LABEL = "nvidia.com/gpu.product"
_SHARED = "-SHARED"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# NVML names seen on real nodes (spaces -> '-'), per catalog model; older drivers omit "NVIDIA-".
GFD_PRODUCTS: dict[str, tuple[str, ...]] = {
    "A100-SXM4-40GB": ("NVIDIA-A100-SXM4-40GB", "A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB", "NVIDIA-A800-SXM4-40GB"),
    "A100-SXM4-80GB": ("NVIDIA-A100-SXM4-80GB", "A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe", "NVIDIA-A800-SXM4-80GB"),
    "H100-SXM5-80GB": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB", "NVIDIA-H100-PCIe", "NVIDIA-H800"),
    "H100-NVL": ("NVIDIA-H100-NVL",),
    "H200-141GB": ("NVIDIA-H200", "NVIDIA-H200-NVL"),
    "B200-180GB": ("NVIDIA-B200",),
    "A30-24GB": ("NVIDIA-A30",),
    "V100-SXM2-16GB": ("Tesla-V100-SXM2-16GB",),
    "V100-SXM2-32GB": ("Tesla-V100-SXM2-32GB",),
    "P100-16GB": ("Tesla-P100-PCIE-16GB",),
    "T4": ("Tesla-T4",),
    "A10": ("NVIDIA-A10", "NVIDIA-A10G"),
    "L4": ("NVIDIA-L4",),
    "L40S": ("NVIDIA-L40S",),
}


def is_label_value(v: str) -> bool:
    return len(v) <= 63 and bool(_LABEL_VALUE.match(v))


def unknown_models(models: Iterable[str]) -> tuple[str, ...]:
    """The models (as written) that gpupack's catalog does not know: no label spelling can be expected."""
    out = []
    for raw in models:
        try:
            if raw.strip() and canonical_model(raw) not in CATALOG:
                out.append(raw.strip())
        except ValueError:
            out.append(raw)
    return tuple(out)


def product_values(models: Iterable[str]) -> tuple[str, ...]:
    """Sorted label values that match any of the (catalogued) models, raw or canonical spelling.

    Each model gets its GFD spellings, their -SHARED forms and "NVIDIA-" + its catalog name. Models
    gpupack does not know contribute nothing (see unknown_models); values that are not legal label
    values are dropped (the apiserver would refuse the pod).
    """
    out: set[str] = set()
    for raw in models:
        if not raw.strip():
            continue
        canon = canonical_model(raw)
        if canon not in CATALOG:
            continue
        known = GFD_PRODUCTS.get(canon, ())
        out.update(known)
        out.update(v + _SHARED for v in known)
        out.add("NVIDIA-" + canon)
    return tuple(sorted(v for v in out if is_label_value(v)))
