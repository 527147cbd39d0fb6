"""`gpupack agent`: the node agent's command (registered on the gpupack CLI by `register`).

    gpupack agent                         # on a GPU node: NODE_NAME from the downward API
    gpupack agent --once --print          # print the inventory JSON, touch nothing in Kubernetes
    gpupack agent --once --print --fake dgx1-v100   # the same on a fake board, no GPU needed
    gpupack agent --dynamic-mig           # also create/destroy MIG instances for pods bound here
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
from scheduler.agent.discover import discover, to_json
from scheduler.agent.publish import run

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
    fake: Annotated[str, typer.Option(hidden=True, help="read a fake board (scheduler/agent/fake_nvml.py)")] = "",
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug (any case)")] = "info",
) -> None:
    """Discover this node's GPUs (NVML) and publish them as its gpupack.io/gpu-inventory annotation."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not show and not node_name:
        raise typer.BadParameter("set NODE_NAME (downward API spec.nodeName) or pass --node-name, or use --print",
                                 param_hint="--node-name")
    nvml = _nvml(fake)
    stop = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main_thread else None
    try:
        _agent(nvml, node_name, interval, once, show, dynamic_mig, resync, heartbeat, stop)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _agent(nvml: nv.Nvml, node_name: str, interval: float, once: bool, show: bool, dynamic_mig: bool, resync: int,
           heartbeat: Path | None, stop: threading.Event) -> None:
    if show:
        if dynamic_mig:
            log.info("--print: MIG-enabled GPUs are reported as dynamic; no instance is created (no pods to read)")
        _print_loop(nvml, dynamic_mig, interval, stop, heartbeat, once)
        return
    api = _kube_api()
    if dynamic_mig:
        from scheduler.agent.dynamic import MigController

        ctl = MigController(api, nvml, node_name, resync_s=resync)
        if once:
            ctl.sync_once()
        else:
            threading.Thread(target=ctl.run, args=(stop,), name="dynamic-mig", daemon=True).start()
    run(lambda: discover(nvml, dynamic_mig), interval, stop, api=api, node=node_name, heartbeat=heartbeat, once=once)


def _print_loop(nvml: nv.Nvml, dynamic_mig: bool, interval: float, stop: threading.Event,
                heartbeat: Path | None, once: bool) -> None:
    """--print: each new inventory as indented JSON on stdout."""
    current: list[Any] = [None]

    def found() -> Any:
        current[0] = discover(nvml, dynamic_mig)
        return current[0]

    def emit(_text: str) -> None:
        print(to_json(current[0]), flush=True)

    run(found, interval, stop, emit=emit, heartbeat=heartbeat, once=once)


def register(app: typer.Typer) -> None:
    """Add `gpupack agent` to the CLI."""
    app.command(name="agent")(agent)
