"""List + watch of Nodes and Pods (and, where served, DRA's ResourceSlices and ResourceClaims) into
ClusterState, in background threads.

Per kind: list (the state becomes exactly that list), then watch from its resourceVersion,
following BOOKMARKs; a watch that ends normally is resumed from the last version seen; an ERROR
410 Gone (or a 410 answer) means the version is too old, so list again. Any other failure backs off
exponentially (capped) before listing again. `ready` is true once both kinds were listed. A third
thread expires stale assumptions even when no request comes. stop() closes the open streams, so
shutdown never waits for a watch timeout. An optional kind (DRA) whose list answers 404 is not
served by this cluster: it counts as listed and empty, is said once, and is asked again now and then.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scheduler.state.cluster import ClusterState
from scheduler.state.kubeapi import ApiError, KubeApi, WatchStream

log = logging.getLogger("gpupack.watch")


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class Absent(Exception):
    """An optional kind's API is not served (404 on list)."""


# kind -> (list method, watch method) of the KubeApi; the optional ones only where the API has them
SOURCES = {"nodes": ("list_nodes", "watch_nodes"), "pods": ("list_pods", "watch_pods")}
DRA_SOURCES = {"resourceslices": ("list_resource_slices", "watch_resource_slices"),
               "resourceclaims": ("list_resource_claims", "watch_resource_claims")}


@dataclass(frozen=True)
class WatchSettings:
    watch_timeout_s: int = 300
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    expire_every_s: float = 1.0
    absent_retry_s: float = 300.0  # how often an optional API that answered 404 is asked again


class Watcher:
    """Keeps a ClusterState in step with the API server until stopped."""

    def __init__(self, api: KubeApi, state: ClusterState, settings: WatchSettings | None = None,
                 on_error: Callable[[str, Exception], None] | None = None,
                 optional: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.api = api
        self.state = state
        self.settings = settings or WatchSettings()
        self.on_error = on_error
        self.sources = {**SOURCES, **(optional or {})}
        self.optional = frozenset(optional or ())
        self.relists = dict.fromkeys(self.sources, 0)
        self._absent_said: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[str, WatchStream] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, args=(k,), name=f"gpupack-watch-{k}", daemon=True)
                         for k in self.sources]
        self._threads.append(threading.Thread(target=self._janitor, name="gpupack-expire", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            for s in self._streams.values():
                s.close()
        for t in self._threads:
            t.join(timeout_s)

    def _run(self, kind: str) -> None:
        delay = self.settings.backoff_initial_s
        while not self._stop.is_set():
            try:
                rv = self._list(kind)
                delay = self.settings.backoff_initial_s
                while not self._stop.is_set():
                    t0 = time.monotonic()
                    new = self._watch(kind, rv)
                    if new == rv and time.monotonic() - t0 < 1.0:
                        # a watch that ends at once with nothing (a proxy cutting it): do not spin
                        self._stop.wait(self.settings.backoff_initial_s)
                    rv = new
            except Gone:
                log.info("%s watch: resourceVersion expired (410); listing again", kind)
                continue
            except Absent:
                if kind not in self._absent_said:
                    self._absent_said.add(kind)
                    log.info("%s: not served by this cluster (404): no DRA; asking again every %.0fs",
                             kind, self.settings.absent_retry_s)
                self.state.replace(kind, [])  # nothing of that kind exists: listed, and empty
                self._stop.wait(self.settings.absent_retry_s)
                continue
            except Exception as e:  # anything the API or a bad object throws: back off, list again
                if self._stop.is_set():
                    return
                log.warning("%s list/watch failed: %s; retrying in %.1fs", kind, e, delay)
                if self.on_error is not None:
                    self.on_error(kind, e)
                self._stop.wait(delay)
                delay = min(delay * 2, self.settings.backoff_max_s)

    def _list(self, kind: str) -> str:
        try:
            items, rv = getattr(self.api, self.sources[kind][0])()
        except ApiError as e:
            if e.status == 410:
                raise Gone() from None
            if e.status == 404 and kind in self.optional:
                raise Absent() from None
            raise
        self.state.replace(kind, items)
        self.relists[kind] += 1
        # what a list loads lives long: keep it out of the cyclic GC's full collections, which would
        # otherwise walk every pod and node now and then inside a request (pauses of 100s of ms)
        gc.freeze()
        return rv

    def _watch(self, kind: str, rv: str) -> str:
        """One watch request; the version to resume from when it ends normally."""
        timeout = self.settings.watch_timeout_s
        try:
            stream = getattr(self.api, self.sources[kind][1])(rv, timeout)
        except ApiError as e:
            if e.status == 410:
                raise Gone() from None
            raise
        with self._lock:
            self._streams[kind] = stream
        if self._stop.is_set():
            stream.close()
        try:
            for ev in stream:
                if self._stop.is_set():
                    break
                if ev.type == "ERROR":
                    code = int(ev.obj.get("code") or 0)
                    if code == 410:
                        raise Gone()
                    raise ApiError(code, str(ev.obj.get("message") or ""), str(ev.obj.get("reason") or ""))
                if ev.type != "BOOKMARK":
                    self.state.push(kind, ev)
                rv = ev.resource_version or rv
        except ApiError as e:
            if e.status == 410:
                raise Gone() from None
            raise
        finally:
            with self._lock:
                self._streams.pop(kind, None)
        return rv

    def _janitor(self) -> None:
        while not self._stop.wait(self.settings.expire_every_s):
            self.state.expire()
