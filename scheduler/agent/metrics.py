"""The node agent's Prometheus metrics (served by `gpupack agent --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
