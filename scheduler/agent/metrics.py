"""The node agent's Prometheus metrics (served by `gpupack agent --metrics-port`, default 9402).

The device plugin's (allocations, corrections, PodResources mismatches, advertised devices by health,
CDI), and discovery's: NVML errors by call, passes, GPUs by model and health, and the inventory's age.
"""

from __future__ import annotations

import time
from collections import Counter as Counter_
from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from binpack import Gpu

ALLOCATIONS = Counter(
    "gpupack_agent_allocations_total",
    "Allocate answers by resource and outcome: booked (the record's devices), corrected (kubelet allocated "
    "other devices; the record was rewritten), refused (admission failed with gpupack's message)",
    ["resource", "outcome"])
CORRECTIONS = Counter(
    "gpupack_agent_record_corrections_total",
    "Records rewritten because kubelet allocated other devices than gpupack booked")
MISMATCHES = Gauge(
    "gpupack_agent_podresources_mismatches",
    "Containers whose devices in kubelet's PodResources differ from gpupack's record, at the last reconcile")
DEVICES = Gauge(
    "gpupack_agent_devices", "Devices the device plugin advertises, by resource and health", ["resource", "health"])
CDI_MISSING = Gauge(
    "gpupack_agent_cdi_missing_devices", "Advertised devices that no CDI spec on the node names")
NVML_ERRORS = Counter(
    "gpupack_agent_nvml_errors_total",
    "NVML calls that failed during discovery, by call: init, device_count, device (a GPU unreadable: unhealthy), mig",
    ["call"])
PASSES = Counter(
    "gpupack_agent_passes_total",
    "Discovery passes by result: ok (the inventory was published, or printed), failed (an API or NVML surprise)",
    ["result"])
GPUS = Gauge(
    "gpupack_agent_gpus", "GPUs NVML shows at the last pass, by model and health (healthy, unhealthy)",
    ["model", "health"])
INVENTORY_OK = Gauge(
    "gpupack_agent_inventory_ok", "1 when the last pass read NVML (inventory status ok), 0 when NVML was unavailable")
_last_published = [float("nan")]
INVENTORY_AGE = Gauge(
    "gpupack_agent_inventory_age_seconds",
    "Seconds since the node's gpupack.io/gpu-inventory was last confirmed equal to what NVML shows "
    "(NaN before the first pass; grows when passes fail or hang)")
INVENTORY_AGE.set_function(lambda: time.time() - _last_published[0])


def published() -> None:
    """A pass left the node's annotation equal to the inventory just read."""
    _last_published[0] = time.time()


def observe_inventory(gpus: Sequence[Gpu], ok: bool) -> None:
    """Per-pass gauges: GPUs by model and health, whether NVML answered."""
    INVENTORY_OK.set(1 if ok else 0)
    counts = Counter_((g.model, "healthy" if g.healthy else "unhealthy") for g in gpus)
    GPUS.clear()
    for (model, health), n in counts.items():
        GPUS.labels(model=model, health=health).set(n)
XID_ERRORS = Counter(
    "gpupack_agent_xid_errors_total",
    "Fatal XID errors reported by NVML per GPU index; such a GPU is Unhealthy until the agent restarts",
    ["gpu", "xid"])
