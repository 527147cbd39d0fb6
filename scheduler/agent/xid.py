"""Device health from NVML's XID events: a GPU that reports a fatal XID goes Unhealthy in the device
plugin (and stays so until the agent restarts, as NVIDIA's device plugin does), so kubelet stops
handing it to new containers. Application errors (a kernel's own fault) leave the GPU healthy.

Polling discovery still catches a GPU that fell off the bus (GPU_IS_LOST); the events catch the
XIDs a GPU reports while it still answers (double-bit ECC, 79 "fallen off the bus", 48, 94, 95...).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from scheduler.agent import nvml as nv
from scheduler.agent.nvml import Nvml

log = logging.getLogger("gpupack.agent.xid")
# NVIDIA k8s-device-plugin's default list of XIDs caused by the application, not the GPU (applicationErrorXids)
APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
XID_CRITICAL = 0x8  # nvmlEventTypeXidCriticalError
TIMEOUT = 10  # NVML_ERROR_TIMEOUT


class XidWatcher:
    """Waits on an NVML event set for XID errors of every GPU and calls `on_fatal(index, xid)`."""

    def __init__(self, nvml: Nvml, on_fatal: Callable[[int, int], None], wait_ms: int = 1000) -> None:
        self.nvml = nvml
        self.on_fatal = on_fatal
        self.wait_ms = wait_ms
        self.watched: dict[str, int] = {}  # GPU UUID -> index, the GPUs whose events are registered
        self.ready = threading.Event()

    def _register(self, es: object) -> None:
        for i in range(self.nvml.nvmlDeviceGetCount()):
            try:
                h = self.nvml.nvmlDeviceGetHandleByIndex(i)
                self.nvml.nvmlDeviceRegisterEvents(h, XID_CRITICAL, es)
                self.watched[nv.text(self.nvml.nvmlDeviceGetUUID(h))] = i
            except self.nvml.NVMLError as e:  # not supported on this GPU, or it is lost already
                log.info("GPU %d: XID events not watched: %s", i, nv.describe(e))

    def run(self, stop: threading.Event) -> None:
        """Until `stop` (each wait is bounded by wait_ms); NVML unavailable: a log line and return."""
        try:
            self.nvml.nvmlInit()
        except Exception as e:
            log.warning("XID events not watched: NVML unavailable (%s)", e)
            return
        es = None
        try:
            es = self.nvml.nvmlEventSetCreate()
            self._register(es)
            self.ready.set()
            while not stop.is_set():
                try:
                    data = self.nvml.nvmlEventSetWait_v2(es, self.wait_ms)
                except self.nvml.NVMLError as e:
                    if nv.code(e) != TIMEOUT:
                        log.warning("waiting for XID events failed: %s", nv.describe(e))
                        stop.wait(1.0)
                    continue
                self._event(data)
        except Exception as e:  # never take the agent down: health polling still runs
            log.warning("XID watcher stopped: %s", e)
        finally:
            if es is not None:
                try:
                    self.nvml.nvmlEventSetFree(es)
                except Exception as e:
                    log.debug("event set not freed: %s", e)
            try:
                self.nvml.nvmlShutdown()
            except Exception as e:
                log.debug("NVML shutdown: %s", e)

    def _event(self, data: object) -> None:
        xid = int(getattr(data, "eventData", 0))
        try:
            index = self.watched.get(nv.text(self.nvml.nvmlDeviceGetUUID(data.device)))  # type: ignore[attr-defined]
        except self.nvml.NVMLError:
            index = None
        if index is None:
            log.warning("XID %d on a GPU the agent does not know", xid)
            return
        if xid in APPLICATION_XIDS:
            log.info("GPU %d: XID %d (an application error; the GPU stays healthy)", index, xid)
            return
        log.error("GPU %d: fatal XID %d: marked Unhealthy for kubelet until the agent restarts", index, xid)
        self.on_fatal(index, xid)


__all__ = ["APPLICATION_XIDS", "XidWatcher"]
