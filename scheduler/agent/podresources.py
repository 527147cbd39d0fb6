"""kubelet's PodResources API v1 (`List`): which devices kubelet allocated to which container.

The socket is `/var/lib/kubelet/pod-resources/kubelet.sock`; the answer is flattened to
(namespace, pod, container) -> resource -> device ids, the shape scheduler/agent/handoff.py compares.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from scheduler.agent.kubeletapi import POD_RESOURCES_SOCKET
from scheduler.agent.kubeletapi import podresources_pb2 as pb
from scheduler.agent.kubeletapi import podresources_pb2_grpc as pb_grpc

Allocated = dict[tuple[str, str, str], dict[str, list[str]]]


def list_allocated(socket: str | Path = POD_RESOURCES_SOCKET, timeout_s: float = 10.0) -> Allocated:
    """Every container's device allocations as kubelet reports them (raises grpc.RpcError)."""
    with grpc.insecure_channel(f"unix://{socket}") as ch:
        resp = pb_grpc.PodResourcesListerStub(ch).List(pb.ListPodResourcesRequest(), timeout=timeout_s)
    return flatten(resp)


def flatten(resp: pb.ListPodResourcesResponse) -> Allocated:
    out: Allocated = {}
    for pod in resp.pod_resources:
        for c in pod.containers:
            per: dict[str, list[str]] = {}
            for d in c.devices:
                per.setdefault(d.resource_name, []).extend(d.device_ids)
            if per:
                out[(pod.namespace, pod.name, c.name)] = per
    return out


__all__ = ["Allocated", "flatten", "list_allocated"]
