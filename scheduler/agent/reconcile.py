"""The agent's reconciler: kubelet's PodResources against gpupack's records, on a timer.

kubelet's accounting is the truth for what a container got. A container whose PodResources devices
differ from its record (an agent restart between Allocate and the correction, an ambiguous
admission, a pod kubelet admitted with devices gpupack never booked) is reported: logged, counted in
`gpupack_agent_podresources_mismatches`, and, where the container has a booking, its record is
corrected to kubelet's devices with an Event. Each pass also teaches the plugin what is admitted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from scheduler.agent import handoff as ho
from scheduler.agent.metrics import MISMATCHES
from scheduler.agent.plugin import DevicePlugins
from scheduler.agent.podresources import Allocated
from scheduler.logfmt import about

log = logging.getLogger("gpupack.agent.reconcile")


def reconcile_once(plugins: DevicePlugins, list_allocated: Callable[[], Allocated]) -> list[ho.Mismatch]:
    """One pass: compare, correct what has a booking, report everything; the mismatches found."""
    allocated = list_allocated()
    plugins.learn(allocated)
    books = ho.bookings(plugins.source.pods(), plugins.cfg.node, plugins.gpus())
    found = ho.mismatches(books, allocated)
    MISMATCHES.set(len(found))
    by_key = {(b.key, b.resource): b for b in books.items}
    for m in found:
        b = by_key.get(((m.namespace, m.name, m.container), m.resource))
        if b is None:
            log.warning("pod %s/%s container %r holds %s %s that no gpupack record books", m.namespace, m.name,
                        m.container, m.resource, ", ".join(m.kubelet), extra=about(f"{m.namespace}/{m.name}"))
            continue
        msg = (f"kubelet's PodResources gives container {m.container!r} {', '.join(m.kubelet)} where gpupack's "
               f"record says {', '.join(m.record)}; the record is corrected to kubelet's devices")
        log.warning("pod %s/%s: %s", m.namespace, m.name, msg, extra=about(f"{m.namespace}/{m.name}"))
        try:
            plugins.source.correct(b, m.kubelet, msg)
        except Exception as e:
            log.warning("pod %s/%s: record not corrected: %s", m.namespace, m.name, e,
                        extra=about(f"{m.namespace}/{m.name}"))
    return found


def run(plugins: DevicePlugins, list_allocated: Callable[[], Allocated], interval_s: float,
        stop: threading.Event) -> None:
    """Reconcile every `interval_s` until `stop`; a failed pass is a log line."""
    while not stop.wait(interval_s):
        try:
            reconcile_once(plugins, list_allocated)
        except Exception as e:
            log.warning("reconcile with PodResources failed: %s", e)


__all__ = ["reconcile_once", "run"]
