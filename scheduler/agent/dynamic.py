"""Dynamic MIG (`gpupack agent --dynamic-mig`): make the node's MIG instances match its pods.

The extender records each MIG pod's placement at bind in `gpupack.io/devices` (GPU, profile,
start slot; scheduler/translate/devices.py). Here the wanted set is every such slot of a pod on this node
that still holds its devices (not Succeeded/Failed, not gone); the reconcile creates what is
missing (GPU instance at that exact placement plus one compute instance filling it) and destroys
what no pod wants, on MIG-enabled GPUs only. It derives everything from the pods and NVML each
time, so it is idempotent across restarts; an instance still in use (NVML IN_USE) is retried at
the next pass. Nothing is destroyed before the first complete pod list.

Kubernetes calls (this module only, so the dynamic-MIG RBAC stays separate): list and watch the
pods of this node (field selector spec.nodeName).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from binpack import DemandKind, lookup
from scheduler.agent import migdev
from scheduler.agent import nvml as nv
from scheduler.agent.nvml import Nvml
from scheduler.agent.records import node_pods
from scheduler.translate.devices import InvalidDevices, placement_from

log = logging.getLogger("gpupack.agent.mig")

Slot = tuple[int, str, int]  # local GPU index, MIG profile, first memory slice
_DONE = ("Succeeded", "Failed")
_MIG_ENABLE = 1


def wanted(pods: Iterable[Mapping[str, Any]], node: str) -> tuple[dict[Slot, str], list[str]]:
    """MIG slots the pods bound to `node` hold (slot -> "namespace/name"), and problems found."""
    out: dict[Slot, str] = {}
    problems: list[str] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        who = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        if (pod.get("status") or {}).get("phase") in _DONE:
            continue  # finished pods have released their devices
        try:
            p = placement_from(meta.get("annotations") or {})
        except InvalidDevices as e:
            problems.append(f"pod {who}: {e}")
            continue
        if p is None or p.kind is not DemandKind.MIG or p.node != node:
            continue
        for m in p.mig:
            slot = (m.gpu, m.profile, m.start)
            if slot in out:
                problems.append(f"pods {out[slot]} and {who} both hold {m.profile}@{m.start} on GPU {m.gpu}")
                continue
            out[slot] = who
    return out, problems


@dataclass(frozen=True, slots=True)
class Report:
    """What one reconcile pass did."""

    created: tuple[Slot, ...] = ()
    destroyed: tuple[Slot, ...] = ()
    failed: tuple[str, ...] = ()

    def summary(self) -> str:
        def fmt(slots: tuple[Slot, ...]) -> str:
            return ", ".join(f"gpu{g}:{p}@{s}" for g, p, s in slots) or "none"

        return f"MIG reconcile: created {fmt(self.created)}; destroyed {fmt(self.destroyed)}; " + (
            f"failed: {'; '.join(self.failed)}" if self.failed else "no failures")


def reconcile(nvml: Nvml, want: Mapping[Slot, str]) -> Report:
    """One pass: destroy unwanted instances first (they may overlap wanted ones), then create."""
    created: list[Slot] = []
    destroyed: list[Slot] = []
    failed: list[str] = []
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        return Report(failed=(f"NVML did not start: {nv.describe(e)}",))
    try:
        gpus = {g for g, _, _ in want}
        for i in range(int(nvml.nvmlDeviceGetCount())):
            gpus.discard(i)
            try:
                _one_gpu(nvml, i, {s: w for s, w in want.items() if s[0] == i}, created, destroyed, failed)
            except nvml.NVMLError as e:
                failed.append(f"GPU {i}: {nv.describe(e)}")
        failed.extend(f"GPU {g}: no such GPU on this node" for g in sorted(gpus))
    except nvml.NVMLError as e:
        failed.append(f"NVML: {nv.describe(e)}")
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    return Report(tuple(created), tuple(destroyed), tuple(failed))


def _one_gpu(nvml: Nvml, i: int, want: Mapping[Slot, str], created: list[Slot], destroyed: list[Slot],
             failed: list[str]) -> None:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    try:
        enabled = int(nvml.nvmlDeviceGetMigMode(h)[0]) == _MIG_ENABLE
    except nvml.NVMLError as e:
        if nv.code(e) != nv.NOT_SUPPORTED:
            raise
        enabled = False
    if not enabled:
        failed.extend(f"{who}: GPU {i} has MIG off, cannot create {p}@{s}" for (_, p, s), who in want.items())
        return
    model = nv.text(nvml.nvmlDeviceGetName(h))
    have = {(i, st.profile, st.start): st for st in migdev.list_instances(nvml, h, model)}
    for slot, st in have.items():
        if slot in want:
            continue
        try:
            migdev.destroy_instance(nvml, st)
            destroyed.append(slot)
        except nvml.NVMLError as e:  # IN_USE: a process still runs there; retried next pass
            failed.append(f"destroy GPU {i} {st.profile}@{st.start}: {nv.describe(e)}")
    for slot, who in want.items():
        _, profile, start = slot
        try:
            if slot in have and not have[slot].compute:  # a crash between GI and CI creation
                migdev.add_compute(nvml, have[slot].handle, _compute_slices(model, profile))
                created.append(slot)
            elif slot not in have:
                migdev.create_instance(nvml, h, model, profile, start)
                created.append(slot)
        except (nvml.NVMLError, LookupError, ValueError) as e:
            reason = nv.describe(e) if isinstance(e, nvml.NVMLError) else str(e)
            failed.append(f"{who}: create GPU {i} {profile}@{start}: {reason}")


def _compute_slices(model: str, profile: str) -> int:
    known = lookup(model)
    if known is None or known.mig is None:
        raise LookupError(f"{model} is not MIG-capable in gpupack's catalog")
    return known.mig.profile(profile).compute_slices


def _list_pods(api: Any, node: str) -> tuple[dict[str, dict[str, Any]], str]:
    items, rv = node_pods(api, node, (5, 60))
    return {p["metadata"]["uid"]: p for p in items}, rv


class MigController:
    """Keeps the node's MIG instances in line with its pods: a list, then a watch; every watch
    ends after `resync_s` and a fresh list and full reconcile follow."""

    def __init__(self, api: Any, nvml: Nvml, node: str, resync_s: int = 300, backoff_s: float = 5.0) -> None:
        self.api, self.nvml, self.node = api, nvml, node
        self.resync_s, self.backoff_s = resync_s, backoff_s
        self.pods: dict[str, dict[str, Any]] = {}
        self.last: Report | None = None

    def apply(self) -> Report:
        want, problems = wanted(self.pods.values(), self.node)
        for p in problems:
            log.warning("dynamic MIG: %s", p)
        report = reconcile(self.nvml, want)
        if report.created or report.destroyed or report.failed:
            log.info("%s", report.summary())
        self.last = report
        return report

    def sync_once(self) -> str:
        """List this node's pods and reconcile; the resource version to watch from."""
        self.pods, rv = _list_pods(self.api, self.node)
        self.apply()
        return rv

    def run(self, stop: threading.Event) -> None:
        from kubernetes import watch

        while not stop.is_set():
            try:
                rv = self.sync_once()
                w = watch.Watch()
                for ev in w.stream(self.api.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={self.node}",
                                   resource_version=rv, timeout_seconds=self.resync_s,
                                   _request_timeout=(5, self.resync_s + 30)):
                    if stop.is_set():
                        w.stop()
                        break
                    if ev.get("type") == "ERROR":  # e.g. 410 Gone: list again
                        break
                    obj = ev.get("raw_object") or {}
                    uid = (obj.get("metadata") or {}).get("uid")
                    if not uid:
                        continue
                    if ev.get("type") == "DELETED":
                        self.pods.pop(uid, None)
                    else:
                        self.pods[uid] = obj
                    self.apply()
            except Exception as e:  # the API or the network failed; never a crash loop
                log.warning("dynamic MIG: pod watch failed (%s: %s); retrying in %.0fs", type(e).__name__, e,
                            self.backoff_s)
                stop.wait(self.backoff_s)
