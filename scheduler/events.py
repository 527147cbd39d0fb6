"""Kubernetes Events on pods for what gpupack decides outside kube-scheduler's own FailedScheduling event:
pod-group waits and plans, reservations released, binds that failed and why.

Recording never blocks a verb: `record` dedupes (the same pod, reason and message within `dedupe_s`,
since kube-scheduler retries a pod many times) and queues; one daemon thread writes the core/v1 Events
with the API's timeout. A full queue drops the event (counted), a failed write is a log line (counted).
Every event is also a log line naming its pod and node, in the component's log format.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from scheduler.logfmt import about
from scheduler.state.kubeapi import Obj

log = logging.getLogger("gpupack.events")

GROUP_WAITING = "GpupackPodGroupWaiting"
GROUP_UNPLACEABLE = "GpupackPodGroupUnplaceable"
GROUP_PLANNED = "GpupackPodGroupPlanned"
RESERVATION_RELEASED = "GpupackReservationReleased"
BIND_FAILED = "GpupackBindFailed"
NORMAL, WARNING = "Normal", "Warning"


@runtime_checkable
class EventApi(Protocol):
    def create_event(self, namespace: str, body: Obj) -> None: ...


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class _Event:
    pod: PodRef
    type: str
    reason: str
    message: str
    node: str


def event_body(pod: PodRef, type_: str, reason: str, message: str, component: str, node: str = "") -> Obj:
    """A core/v1 Event on a pod, as every gpupack component writes it (the message cut to 1 KiB)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{pod.name}.{uuid.uuid4().hex[:12]}", "namespace": pod.namespace},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": pod.namespace, "name": pod.name,
                           "uid": pod.uid},
        "reason": reason, "message": message[:1024], "type": type_, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": component, **({"host": node} if node else {})},
        "reportingComponent": component,
    }


class EventRecorder:
    """Writes Events through `api` (a KubeApi with create_event; without it events are only logged)."""

    def __init__(self, api: object, component: str = "gpupack-scheduler",
                 on_result: Callable[[str, str], None] | None = None, dedupe_s: float = 60.0,
                 max_queue: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api if isinstance(api, EventApi) else None
        self.component = component
        self.on_result = on_result
        self.dedupe_s = dedupe_s
        self.clock = clock
        self._queue: queue.Queue[_Event | None] = queue.Queue(max_queue)
        self._seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(self, pod: PodRef, type_: str, reason: str, message: str, node: str = "") -> None:
        """Queue one Event on `pod` (never blocks; a repeat within dedupe_s is skipped)."""
        now = self.clock()
        key = (pod.uid or f"{pod.namespace}/{pod.name}", reason, message)
        with self._lock:
            if self._closed or now - self._seen.get(key, -1e18) < self.dedupe_s:
                return
            self._seen[key] = now
            if len(self._seen) > 10_000:  # forget the oldest half: a repeat then costs one more Event
                for k in sorted(self._seen, key=self._seen.__getitem__)[:5_000]:
                    del self._seen[k]
            self._start()
        log.log(logging.WARNING if type_ == WARNING else logging.INFO, "%s: %s", reason, message,
                extra=about(f"{pod.namespace}/{pod.name}", node))
        if self.api is None:
            return
        try:
            self._queue.put_nowait(_Event(pod, type_, reason, message, node))
        except queue.Full:
            self._count(reason, "dropped")

    def bind_failed(self, namespace: str, name: str, uid: str, node: str, error: str) -> None:
        """The binder's hook: a bind gpupack answered with an error."""
        self.record(PodRef(namespace, name, uid), WARNING, BIND_FAILED, error, node)

    def _start(self) -> None:
        if self._thread is None and self.api is not None:
            self._thread = threading.Thread(target=self._run, name="gpupack-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (ev := self._queue.get()) is not None:
            try:
                self._write(ev)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(self, ev: _Event) -> None:
        assert self.api is not None
        body = event_body(ev.pod, ev.type, ev.reason, ev.message, self.component, ev.node)
        try:
            self.api.create_event(ev.pod.namespace, body)
        except Exception as e:  # best effort: an Event lost is a log line, never a failed verb
            log.warning("event %s not written: %s", ev.reason, e, extra=about(f"{ev.pod.namespace}/{ev.pod.name}"))
            self._count(ev.reason, "failed")
            return
        self._count(ev.reason, "written")

    def _count(self, reason: str, result: str) -> None:
        if self.on_result is not None:
            self.on_result(reason, result)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait (bounded) until every queued Event was written or failed; True if the queue emptied."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self) -> None:
        """Stop the writer after what is queued (bounded wait)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            try:
                self._queue.put(None, timeout=1)
            except queue.Full:
                return
            thread.join(timeout=5)
