"""`gpupack agent`: the node agent's command (registered on the gpupack CLI by `register`).

    gpupack agent                         # on a GPU node: NODE_NAME from the downward API
    gpupack agent --once --print          # print the inventory JSON, touch nothing in Kubernetes
    gpupack agent --once --print --fake dgx1-v100   # the same on a fake board, no GPU needed
    gpupack agent --dynamic-mig           # also create/destroy MIG instances for pods bound here
    gpupack agent --handoff envvar        # the device plugin's legacy hand-off (see docs/handoff.md)

Besides publishing the inventory, the agent is the node's device plugin (scheduler/agent/plugin.py):
it advertises nvidia.com/gpu, nvidia.com/mig-<profile> and gpupack.io/gpu-share to kubelet and
answers Allocate with the devices gpupack booked, as CDI devices.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.agent import nvml as nv
from scheduler.agent.cdi import DEFAULT_DIRS, read_specs
from scheduler.agent.discover import Inventory, discover, to_json
from scheduler.agent.handoff import Mode
from scheduler.agent.kubeletapi import DEVICE_PLUGIN_PATH, POD_RESOURCES_SOCKET
from scheduler.agent.publish import run
from scheduler.agent.service import HandoffOptions, advertised_table, start_handoff
from scheduler.logfmt import HELP as FORMAT_HELP
from scheduler.logfmt import log_format as log_format_of
from scheduler.logfmt import setup as setup_logging
from scheduler.loglevel import HELP as LOG_HELP
from scheduler.loglevel import log_level as log_level_of
from scheduler.metricsport import AGENT_PORT, serve_metrics
from scheduler.metricsport import HELP as METRICS_HELP
from scheduler.metricsport import HOST_HELP as METRICS_HOST_HELP

log = logging.getLogger("gpupack.agent")


def _kube_api() -> Any:
    """A CoreV1Api from the pod's service account, or from ~/.kube/config outside a cluster."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CoreV1Api()


def _nvml(fake: str) -> nv.Nvml:
    if fake:
        from scheduler.agent.fake_nvml import board

        try:
            return board(fake)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--fake") from None
    return nv.load()


def agent(
    node_name: Annotated[str, typer.Option(envvar="NODE_NAME", help="this node (downward API: spec.nodeName)")] = "",
    interval: Annotated[float, typer.Option(min=1.0, help="seconds between discoveries")] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="one pass, then exit")] = False,
    show: Annotated[bool, typer.Option("--print", help="print the inventory JSON; do not touch Kubernetes")] = False,
    dynamic_mig: Annotated[bool, typer.Option(
        "--dynamic-mig", help="create and destroy MIG instances for the pods bound here (off: read-only)")] = False,
    resync: Annotated[int, typer.Option(min=10, help="seconds between full pod re-lists (dynamic MIG)")] = 300,
    heartbeat: Annotated[Path | None, typer.Option(help="file touched after each pass (liveness probe)")] = None,
    fake: Annotated[str, typer.Option(
        help="read a fake board instead of NVML (a100-nvswitch, dgx1-v100, t4-pcie, ...; for trying without a GPU)",
    )] = "",
    log_level: Annotated[str, typer.Option(help=LOG_HELP)] = "info",
    device_plugin: Annotated[bool, typer.Option(
        "--device-plugin/--no-device-plugin",
        help="serve kubelet's device plugin API (replaces NVIDIA's plugin)")] = True,
    handoff: Annotated[Mode, typer.Option(
        help="how Allocate hands devices over: cdi-cri (containerd >= 1.7, CRI-O), cdi-annotations (older "
             "runtimes), envvar (legacy)")] = Mode.CDI_CRI,
    share_slots: Annotated[int, typer.Option(min=0, max=64, help="gpupack.io/gpu-share slots per GPU")] = 16,
    plugin_dir: Annotated[Path, typer.Option(help="kubelet's device plugin socket folder")] = Path(DEVICE_PLUGIN_PATH),
    pod_resources: Annotated[Path, typer.Option(help="kubelet's PodResources socket")] = Path(POD_RESOURCES_SOCKET),
    cdi_dir: Annotated[list[Path] | None, typer.Option(help="CDI spec folders to check (repeat)")] = None,
    health_interval: Annotated[float, typer.Option(min=1.0, help="seconds between device health reads")] = 10.0,
    reconcile_interval: Annotated[float, typer.Option(min=1.0, help="seconds between PodResources checks")] = 30.0,
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help=METRICS_HELP + "; not with --once")] = AGENT_PORT,
    metrics_host: Annotated[str, typer.Option(help=METRICS_HOST_HELP)] = "127.0.0.1",
    log_format: Annotated[str, typer.Option(help=FORMAT_HELP)] = "text",
) -> None:
    """Discover this node's GPUs (NVML) and publish them as its gpupack.io/gpu-inventory annotation."""
    try:
        level = log_level_of(log_level)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--log-level") from None
    try:
        fmt = log_format_of(log_format)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--log-format") from None
    setup_logging(level, fmt, node=node_name, stream=sys.stderr)  # every line names this node
    if not show and not node_name:
        raise typer.BadParameter("set NODE_NAME (downward API spec.nodeName) or pass --node-name, or use --print",
                                 param_hint="--node-name")
    nvml = _nvml(fake)
    stop = threading.Event()
    opts = HandoffOptions(
        enabled=device_plugin, mode=handoff, share_slots=share_slots, plugin_dir=plugin_dir,
        pod_resources=pod_resources, cdi_dirs=tuple(cdi_dir) if cdi_dir else tuple(Path(d) for d in DEFAULT_DIRS),
        health_s=health_interval, reconcile_s=reconcile_interval)
    if not once:  # the agent's registry: discovery, NVML errors, inventory age, the device plugin's
        try:
            serve_metrics(metrics_host, metrics_port)
        except OSError as e:
            raise typer.BadParameter(f"cannot listen on {metrics_host}:{metrics_port}: {e}",
                                     param_hint="--metrics-port") from None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main_thread else None
    try:
        _agent(nvml, node_name, interval, once, show, dynamic_mig, resync, heartbeat, stop, opts)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _agent(nvml: nv.Nvml, node_name: str, interval: float, once: bool, show: bool, dynamic_mig: bool, resync: int,
           heartbeat: Path | None, stop: threading.Event, opts: HandoffOptions) -> None:
    if show:
        if dynamic_mig:
            log.info("--print: MIG-enabled GPUs are reported as dynamic; no instance is created (no pods to read)")
        _print_loop(nvml, dynamic_mig, interval, stop, heartbeat, once, opts)
        return
    api = _kube_api()
    if opts.enabled and not once:
        # the plugin reads MIG instances as they are now (a static read), dynamic ones included
        start_handoff(opts, api, node_name, lambda: discover(nvml, False), stop, nvml=nvml)
    if dynamic_mig:
        from scheduler.agent.dynamic import MigController

        ctl = MigController(api, nvml, node_name, resync_s=resync)
        if once:
            ctl.sync_once()
        else:
            threading.Thread(target=ctl.run, args=(stop,), name="dynamic-mig", daemon=True).start()
    run(lambda: discover(nvml, dynamic_mig), interval, stop, api=api, node=node_name, heartbeat=heartbeat, once=once)


def _print_loop(nvml: nv.Nvml, dynamic_mig: bool, interval: float, stop: threading.Event,
                heartbeat: Path | None, once: bool, opts: HandoffOptions) -> None:
    """--print: each new inventory as indented JSON on stdout; what the device plugin would advertise,
    and whether the node's CDI specs name it, as a table on stderr."""
    current: list[Inventory | None] = [None]

    def found() -> Inventory:
        inv = current[0] = discover(nvml, dynamic_mig)
        return inv

    def emit(_text: str) -> None:
        inv = current[0]
        assert inv is not None
        print(to_json(inv), flush=True)
        if opts.enabled:
            advertised_table(inv.gpus, opts.share_slots, read_specs(opts.cdi_dirs), opts.mode)

    run(found, interval, stop, emit=emit, heartbeat=heartbeat, once=once)


def register(app: typer.Typer) -> None:
    """Add `gpupack agent` to the CLI."""
    app.command(name="agent")(agent)
