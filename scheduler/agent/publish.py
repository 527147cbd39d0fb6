"""Publishing: the agent's loop that discovers, logs what changed, and keeps the node's
`gpupack.io/gpu-inventory` annotation equal to what it found.

Kubernetes calls (the agent's base RBAC): get and patch its own Node. Each pass reads the node
and patches only when the annotation differs, so an unchanged inventory costs one GET per period
and an annotation someone removed comes back within a period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from scheduler.agent import metrics
from scheduler.agent.discover import Inventory
from scheduler.translate.inventory import INVENTORY

log = logging.getLogger("gpupack.agent")
_MERGE_PATCH = "application/merge-patch+json"
_TIMEOUT = (5, 30)  # connect, read: a hung API server never stalls the loop for long


def publish(api: Any, node: str, text: str) -> bool:
    """Make the node's inventory annotation `text`; True when a PATCH was needed."""
    resp = api.read_node(node, _preload_content=False, _request_timeout=_TIMEOUT)
    current = ((orjson.loads(resp.data).get("metadata") or {}).get("annotations") or {}).get(INVENTORY)
    if current == text:
        return False
    api.patch_node(node, {"metadata": {"annotations": {INVENTORY: text}}}, _content_type=_MERGE_PATCH,
                   _request_timeout=_TIMEOUT)
    return True


def beat(path: Path | None) -> None:
    """Touch the heartbeat file the liveness probe reads (scheduler/agent/probe.py)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{time.time():.0f}\n")
    except OSError as e:
        log.warning("heartbeat %s not written: %s", path, e)


def run(discover: Callable[[], Inventory], interval_s: float, stop: threading.Event, *,
        api: Any = None, node: str = "", emit: Callable[[str], None] | None = None,
        heartbeat: Path | None = None, once: bool = False) -> int:
    """The agent's loop. With `emit` (--print) the inventory goes there and Kubernetes is not
    touched; otherwise it goes to `node`'s annotation through `api`. Returns the passes made."""
    last = ""
    passes = 0
    while True:
        passes += 1
        try:
            inv = discover()
            text = inv.annotation()
            if text != last:  # one line per change, not per period
                log.info("node %s: %s", node or "-", inv.summary())
            if emit is not None:
                if text != last:
                    emit(text)
            elif publish(api, node, text):
                log.info("node %s: published %s (%d bytes)", node, INVENTORY, len(text))
            last = text
            metrics.published()
            metrics.observe_inventory(inv.gpus, inv.status == "ok")
            metrics.PASSES.labels("ok").inc()
        except Exception as e:  # an API or NVML surprise: log it, keep the loop (never a crash loop)
            metrics.PASSES.labels("failed").inc()
            log.warning("agent pass failed: %s: %s", type(e).__name__, e)
        beat(heartbeat)
        if once or stop.wait(interval_s):
            return passes
