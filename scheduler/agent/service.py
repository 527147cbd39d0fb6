"""The device hand-off as the agent runs it: the plugin servers, the health loop, the PodResources
reconciler and the CDI check, started together by `gpupack agent` (and the `--print` table).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from binpack import Gpu
from scheduler.agent import handoff as ho
from scheduler.agent import reconcile
from scheduler.agent.cdi import DEFAULT_DIRS, CdiSpecs, read_specs
from scheduler.agent.discover import Inventory
from scheduler.agent.kubeletapi import DEVICE_PLUGIN_PATH, POD_RESOURCES_SOCKET
from scheduler.agent.metrics import CDI_MISSING, DEVICES
from scheduler.agent.plugin import DevicePlugins, PluginConfig
from scheduler.agent.podresources import list_allocated
from scheduler.agent.records import KubePodSource
from scheduler.agent.xid import XidWatcher

log = logging.getLogger("gpupack.agent.service")


@dataclass(frozen=True, slots=True)
class HandoffOptions:
    enabled: bool = True
    mode: ho.Mode = ho.Mode.CDI_CRI
    share_slots: int = 16
    plugin_dir: Path = Path(DEVICE_PLUGIN_PATH)
    pod_resources: Path = Path(POD_RESOURCES_SOCKET)
    cdi_dirs: tuple[Path, ...] = tuple(Path(d) for d in DEFAULT_DIRS)
    health_s: float = 10.0
    reconcile_s: float = 30.0


def cdi_check(offers: dict[str, tuple[ho.Device, ...]], specs: CdiSpecs, mode: ho.Mode) -> list[str]:
    """The CDI names the plugin would hand over that no spec on the node defines (none in envvar mode)."""
    if mode is ho.Mode.ENVVAR:
        return []
    wanted = ho.cdi_names(d for devs in offers.values() for d in devs)
    return specs.missing(wanted)


def _report_cdi(offers: dict[str, tuple[ho.Device, ...]], opts: HandoffOptions) -> None:
    specs = read_specs(opts.cdi_dirs)
    for note in specs.notes:
        log.warning("CDI: %s", note)
    missing = cdi_check(offers, specs, opts.mode)
    CDI_MISSING.set(len(missing))
    if missing:
        log.error("CDI: no spec in %s names %s: containers given these devices would fail to start "
                  "(unresolvable CDI devices). Generate the spec (GPU Operator with CDI on, or "
                  "`nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml`)",
                  ", ".join(map(str, opts.cdi_dirs)), ", ".join(missing))
    elif opts.mode is not ho.Mode.ENVVAR:
        log.info("CDI: every advertised device is named by %s", ", ".join(specs.files) or "no file")


def _count(offers: dict[str, tuple[ho.Device, ...]]) -> None:
    for resource, devs in offers.items():
        DEVICES.labels(resource=resource, health="Healthy").set(sum(d.healthy for d in devs))
        DEVICES.labels(resource=resource, health="Unhealthy").set(sum(not d.healthy for d in devs))


def start_handoff(opts: HandoffOptions, api: Any, node: str, find: Callable[[], Inventory],
                  stop: threading.Event, nvml: Any = None) -> DevicePlugins:
    """Serve the device plugin until `stop`: register with kubelet (retried until kubelet is there),
    re-read device health every `health_s`, reconcile with PodResources every `reconcile_s`."""
    inv = find()
    current: list[Sequence[Gpu]] = [inv.gpus]
    source = KubePodSource(api, node, lambda: current[0])
    plugins = DevicePlugins(PluginConfig(node=node, plugin_dir=opts.plugin_dir, mode=opts.mode,
                                         share_slots=opts.share_slots, cdi_dirs=opts.cdi_dirs), source, inv.gpus)
    _report_cdi(plugins.offers(), opts)
    _count(plugins.offers())
    threading.Thread(target=_health, args=(plugins, find, current, opts, stop), name="dp-health", daemon=True).start()
    threading.Thread(target=plugins.watch, args=(stop,), name="dp-watch", daemon=True).start()
    threading.Thread(target=reconcile.run, args=(plugins, lambda: list_allocated(opts.pod_resources),
                                                 opts.reconcile_s, stop), name="dp-reconcile", daemon=True).start()
    threading.Thread(target=_stop_when, args=(stop, plugins), name="dp-stop", daemon=True).start()
    if nvml is not None:  # fatal XIDs make a GPU Unhealthy at once, between health reads
        watcher = XidWatcher(nvml, plugins.mark_unhealthy)
        threading.Thread(target=watcher.run, args=(stop,), name="dp-xid", daemon=True).start()
    return plugins


def _stop_when(stop: threading.Event, plugins: DevicePlugins) -> None:
    stop.wait()
    plugins.stop()


def _health(plugins: DevicePlugins, find: Callable[[], Inventory], current: list[Sequence[Gpu]],
            opts: HandoffOptions, stop: threading.Event) -> None:
    while not stop.wait(opts.health_s):
        try:
            inv = find()
        except Exception as e:  # discover only raises on a bug; keep the last devices
            log.warning("device health not read: %s", e)
            continue
        if inv.status != "ok":
            continue  # NVML unavailable for a moment: keep advertising what was there
        changed = tuple(inv.gpus) != tuple(current[0])
        current[0] = inv.gpus
        plugins.update(inv.gpus)
        if changed:
            _report_cdi(plugins.offers(), opts)
            _count(plugins.offers())


def advertised_table(gpus: Sequence[Gpu], share_slots: int, specs: CdiSpecs, mode: ho.Mode,
                     console: Console | None = None) -> None:
    """`gpupack agent --print`: what the device plugin would advertise, one row per device (a GPU's
    share slots in one row), on stderr."""
    console = console or Console(stderr=True)
    offers = ho.offers(gpus, share_slots)
    missing = set(cdi_check(offers, specs, mode))
    table = Table(title=f"device plugin ({mode.value}): what kubelet is offered")
    for col in ("resource", "device id", "health", "hands over"):
        table.add_column(col, overflow="fold")
    for resource, devs in offers.items():
        rows = [(d.id, d) for d in devs]
        if resource == ho.SHARE_RESOURCE:
            firsts = {d.cdi_name: d for d in reversed(devs)}
            rows = [(f"{u}{ho.SLOT_SEP}0..{share_slots - 1}", d) for u, d in reversed(firsts.items())]
        for ident, d in rows:
            name = ho.cdi_names([d])[0]
            over = (f"NVIDIA_VISIBLE_DEVICES={d.cdi_name}" if mode is ho.Mode.ENVVAR
                    else name + (" [red](no CDI spec names it)[/]" if name in missing else ""))
            table.add_row(resource, ident, "Healthy" if d.healthy else "[red]Unhealthy[/]", over)
    console.print(table)
    if mode is not ho.Mode.ENVVAR:
        where = ", ".join(specs.files) or "none found in " + ", ".join(DEFAULT_DIRS)
        console.print(f"CDI specs read: {where}; device names missing from them: {len(missing)}")


__all__ = ["HandoffOptions", "advertised_table", "cdi_check", "start_handoff"]
