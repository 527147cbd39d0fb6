"""gpupack's device plugin: kubelet's device plugin API v1beta1 served over gRPC on unix sockets.

One gRPC server per resource (`nvidia.com/gpu`, `nvidia.com/mig-<profile>`, `gpupack.io/gpu-share`),
each registered with kubelet. `DevicePlugins` owns the servers, the devices they advertise, and what
this agent has allocated; the decisions are scheduler/agent/handoff.py's. When kubelet restarts it
wipes the socket folder and makes a new `kubelet.sock`: the watch loop sees that and serves and
registers again. Every wait is bounded, so `stop()` ends every stream within a second.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from binpack import Gpu
from scheduler.agent import handoff as ho
from scheduler.agent.cdi import read_specs
from scheduler.agent.kubeletapi import HEALTHY, KUBELET_SOCKET, UNHEALTHY, VERSION
from scheduler.agent.kubeletapi import deviceplugin_pb2 as pb
from scheduler.agent.kubeletapi import deviceplugin_pb2_grpc as pb_grpc
from scheduler.agent.metrics import ALLOCATIONS, CORRECTIONS, XID_ERRORS
from scheduler.logfmt import about

log = logging.getLogger("gpupack.agent.plugin")
Key = tuple[str, str, str]  # namespace, pod, container


class PodSource(Protocol):
    """Where the plugin reads the pods bound to its node and writes record corrections."""

    def pods(self) -> list[Mapping[str, Any]]:
        """The pods bound to this node (raises on an API failure)."""
        ...

    def correct(self, booking: ho.Booking, devices: Sequence[str], message: str) -> None:
        """Rewrite the booking's record to `devices` and put an Event on the pod."""
        ...


@dataclass(frozen=True, slots=True)
class PluginConfig:
    node: str
    plugin_dir: Path
    mode: ho.Mode = ho.Mode.CDI_CRI
    share_slots: int = 16
    watch_s: float = 1.0
    cdi_dirs: tuple[Path, ...] = ()  # checked at every Allocate in the CDI modes (empty: not checked)


def socket_name(resource: str) -> str:
    """The plugin's socket file for a resource ('/' and '.' are not wanted in a file name)."""
    return "gpupack-" + resource.replace("/", "_").replace(".", "-") + ".sock"


class DevicePlugins:
    """Every resource's server, the advertised devices, and the admission memory."""

    def __init__(self, cfg: PluginConfig, source: PodSource, gpus: Sequence[Gpu] = ()) -> None:
        self.cfg = cfg
        self.source = source
        self._cond = threading.Condition()
        self._gpus: tuple[Gpu, ...] = ()
        self._raw: tuple[Gpu, ...] = ()  # as discovered, before the XID verdicts
        self._sick: dict[int, int] = {}  # GPU index -> the fatal XID that made it Unhealthy
        self._offers: dict[str, tuple[ho.Device, ...]] = {}
        self._version = 0
        self._admitted: dict[Key, tuple[str, tuple[str, ...]]] = {}
        self._last_pods: list[Mapping[str, Any]] = []
        self._servers: dict[str, grpc.Server] = {}
        self._kubelet_id: tuple[int, float] | None = None
        self._stop = threading.Event()
        self._alloc_lock = threading.Lock()  # kubelet admits one pod at a time; keep it so across resources
        self.update(gpus)

    # --- devices -------------------------------------------------------------------------------------
    def update(self, gpus: Sequence[Gpu]) -> None:
        """A new inventory: new health or new devices go out on every ListAndWatch stream."""
        with self._cond:
            self._raw = tuple(gpus)
            gpus = tuple(dataclasses.replace(g, healthy=False) if g.index in self._sick else g for g in gpus)
        offers = ho.offers(gpus, self.cfg.share_slots)
        with self._cond:
            if tuple(gpus) == self._gpus and offers == self._offers:
                return
            self._gpus, self._offers = tuple(gpus), offers
            self._version += 1
            self._cond.notify_all()
        if self._servers:
            try:
                self._ensure_servers()  # a new MIG profile: a new resource to serve and register
            except (grpc.RpcError, OSError) as e:
                log.warning("new resource not registered (%s); retrying", e)
                self._kubelet_id = None

    def mark_unhealthy(self, index: int, xid: int) -> None:
        """A fatal XID on GPU `index`: Unhealthy for kubelet (with its MIG devices and share slots)."""
        with self._cond:
            self._sick[index] = xid
            raw = self._raw
        XID_ERRORS.labels(gpu=str(index), xid=str(xid)).inc()
        self.update(raw)

    def offers(self) -> dict[str, tuple[ho.Device, ...]]:
        with self._cond:
            return dict(self._offers)

    def gpus(self) -> tuple[Gpu, ...]:
        with self._cond:
            return self._gpus

    def _devices(self, resource: str) -> dict[str, ho.Device]:
        with self._cond:
            return {d.id: d for d in self._offers.get(resource, ())}

    def admitted(self) -> dict[Key, tuple[str, tuple[str, ...]]]:
        with self._cond:
            return dict(self._admitted)

    def learn(self, allocated: Mapping[Key, Mapping[str, Sequence[str]]]) -> None:
        """What kubelet reports as allocated (PodResources) counts as admitted: after an agent restart
        those containers are not offered a preferred allocation again."""
        with self._cond:
            for key, per in allocated.items():
                for resource, ids in per.items():
                    if resource in self._offers:
                        self._admitted[key] = (resource, tuple(ids))

    # --- the decisions, callable without gRPC ---------------------------------------------------------
    def _bookings(self, fresh: bool) -> ho.Bookings:
        pods = self._last_pods
        if fresh or not pods:
            try:
                pods = self.source.pods()
                self._last_pods = pods
            except Exception as e:  # the API server is down: decide from the last list if it suffices
                if not self._last_pods:
                    raise ApiUnavailable(str(e)) from e
                log.warning("pods on %s not listed (%s); using the last list", self.cfg.node, e)
        with self._cond:
            gpus = self._gpus
            live = {(str((p.get("metadata") or {}).get("namespace")), str((p.get("metadata") or {}).get("name")))
                    for p in pods}
            self._admitted = {k: v for k, v in self._admitted.items() if k[:2] in live}
        return ho.bookings(pods, self.cfg.node, gpus)

    def preferred(self, resource: str, available: Sequence[str], must: Sequence[str], size: int) -> list[str]:
        try:
            books = self._bookings(fresh=True)
        except ApiUnavailable:
            return []  # kubelet chooses; Allocate then decides (and says why if it cannot)
        return ho.prefer(resource, available, must, size, books, self.admitted().keys())

    def allocate(self, resource: str, ids: Sequence[str], taken: set[Key] | None = None) -> ho.Answer:
        """One container's Allocate; a granted answer is remembered and a correction written."""
        taken = set() if taken is None else taken
        try:
            books = self._bookings(fresh=False)
            answer = ho.allocate(resource, ids, books, self.admitted().keys(), self.cfg.node, taken)
            if answer.error:  # the pod may be newer than the last list
                books = self._bookings(fresh=True)
                answer = ho.allocate(resource, ids, books, self.admitted().keys(), self.cfg.node, taken)
        except ApiUnavailable as e:
            answer = ho.Answer(error=f"gpupack: cannot read the pods bound to {self.cfg.node} from the API server "
                                     f"({e}); the pod fails admission: delete it and create it again once the API "
                                     "server answers")
        if answer.error:
            ALLOCATIONS.labels(resource=resource, outcome="refused").inc()
            return answer
        b = answer.booking
        assert b is not None
        taken.add(b.key)
        with self._cond:
            self._admitted[b.key] = (resource, tuple(ids))
        if answer.correction is not None:
            ALLOCATIONS.labels(resource=resource, outcome="corrected").inc()
            CORRECTIONS.inc()
            msg = (f"kubelet allocated {', '.join(answer.correction)} to container {b.container!r} where gpupack "
                   f"booked {', '.join(b.devices)}; the container gets what kubelet allocated and the record is "
                   "corrected")
            log.warning("pod %s: %s", b.pod, msg, extra=about(b.pod))
            try:
                self.source.correct(b, answer.correction, msg)
            except Exception as e:  # the reconciler retries from PodResources
                log.warning("pod %s: record not corrected yet: %s", b.pod, e, extra=about(b.pod))
        else:
            ALLOCATIONS.labels(resource=resource, outcome="booked").inc()
            log.info("Allocate %s: pod %s container %r gets %s", resource, b.pod, b.container, ", ".join(ids),
                     extra=about(b.pod))
        return answer

    def allocate_response(self, resource: str, request: Any) -> Any:
        """An AllocateResponse for every container request, or raise AllocateRefused."""
        devices = self._devices(resource)
        out = pb.AllocateResponse()
        taken: set[Key] = set()
        with self._alloc_lock:
            for creq in request.container_requests:
                ids = list(creq.devices_ids)
                if self.cfg.mode is not ho.Mode.ENVVAR:  # before anything is remembered or corrected
                    self._check_cdi(ho.cdi_names(devices[d] for d in ids if d in devices))
                answer = self.allocate(resource, ids, taken)
                if answer.error:
                    raise AllocateRefused(answer.error)
                unknown = [d for d in ids if d not in devices]
                if unknown:
                    raise AllocateRefused(f"gpupack: kubelet asked for {', '.join(unknown)}, which this plugin does "
                                          "not advertise")
                fields = ho.response_fields(answer, devices, self.cfg.mode)
                out.container_responses.append(pb.ContainerAllocateResponse(
                    envs=fields["envs"], annotations=fields["annotations"],
                    cdi_devices=[pb.CDIDevice(name=n) for n in fields["cdi_devices"]]))
        return out

    def _check_cdi(self, names: list[str]) -> None:
        """A name no CDI spec defines would fail container creation later with a runtime error;
        refuse now with what to do."""
        if not self.cfg.cdi_dirs or self.cfg.mode is ho.Mode.ENVVAR:
            return
        missing = read_specs(self.cfg.cdi_dirs).missing(names)
        if missing:
            raise AllocateRefused(
                f"gpupack: no CDI spec in {', '.join(map(str, self.cfg.cdi_dirs))} names {', '.join(missing)}: the "
                "container could not start; regenerate the node's CDI spec (GPU Operator with CDI on, or "
                "nvidia-ctk cdi generate --device-name-strategy=uuid) and create the pod again")

    # --- serving -------------------------------------------------------------------------------------
    def list_and_watch(self, resource: str, active: Callable[[], bool]) -> Iterator[Any]:
        seen = -1
        while active() and not self._stop.is_set():
            with self._cond:
                if self._version == seen:
                    self._cond.wait(timeout=1.0)  # bounded, so a closed stream or stop() ends it within a second
                if self._version == seen:
                    continue
                seen = self._version
                devs = self._offers.get(resource, ())
            yield pb.ListAndWatchResponse(devices=[
                pb.Device(ID=d.id, health=HEALTHY if d.healthy else UNHEALTHY) for d in devs])

    def _ensure_servers(self) -> None:
        for resource in self.offers():
            if resource not in self._servers:
                self._serve(resource)

    def _serve(self, resource: str) -> None:
        sock = self.cfg.plugin_dir / socket_name(resource)
        if sock.exists():
            sock.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"dp-{resource}"))
        pb_grpc.add_DevicePluginServicer_to_server(_Servicer(self, resource), server)
        server.add_insecure_port(f"unix://{sock}")
        server.start()
        self._servers[resource] = server
        self._register(resource, sock.name)

    def _register(self, resource: str, endpoint: str) -> None:
        kubelet = self.cfg.plugin_dir / KUBELET_SOCKET
        with grpc.insecure_channel(f"unix://{kubelet}") as ch:
            pb_grpc.RegistrationStub(ch).Register(pb.RegisterRequest(
                version=VERSION, endpoint=endpoint, resource_name=resource,
                options=pb.DevicePluginOptions(get_preferred_allocation_available=True)), timeout=10)
        log.info("registered %s with kubelet (%s, %d devices)", resource, endpoint, len(self.offers()[resource]))

    def _kubelet_identity(self) -> tuple[int, float] | None:
        try:
            st = os.stat(self.cfg.plugin_dir / KUBELET_SOCKET)
        except OSError:
            return None
        return st.st_ino, st.st_ctime

    def start(self) -> None:
        """Serve every resource and register each with kubelet (raises when kubelet is not there)."""
        self._stop.clear()
        self._kubelet_id = self._kubelet_identity()
        self._ensure_servers()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for resource, server in list(self._servers.items()):
            server.stop(grace=1.0).wait(2.0)
            (self.cfg.plugin_dir / socket_name(resource)).unlink(missing_ok=True)
        self._servers.clear()

    def restart_if_needed(self) -> bool:
        """A new kubelet.sock (kubelet restarted) or a socket of ours removed: serve and register again."""
        ident = self._kubelet_identity()
        gone = [r for r in self._servers if not (self.cfg.plugin_dir / socket_name(r)).exists()]
        if ident is None or (ident == self._kubelet_id and not gone):
            return False
        log.info("kubelet restarted (or our sockets were removed): registering again")
        for server in self._servers.values():
            server.stop(grace=0.5).wait(2.0)
        self._servers.clear()
        self._stop.clear()
        self._kubelet_id = ident
        self._ensure_servers()
        return True

    def watch(self, stop: threading.Event) -> None:
        """Until `stop`: re-register after kubelet restarts; a failed registration is retried."""
        while not stop.wait(self.cfg.watch_s):
            try:
                self.restart_if_needed()
            except (grpc.RpcError, OSError) as e:
                log.warning("registration with kubelet failed (%s); retrying", e)
                self._kubelet_id = None


class ApiUnavailable(RuntimeError):
    """The pods bound to this node could not be listed, and nothing was listed before."""


class AllocateRefused(RuntimeError):
    """Allocate fails: the message is what the pod's admission failure shows."""


class _Servicer(pb_grpc.DevicePluginServicer):
    """The gRPC face of one resource."""

    def __init__(self, plugins: DevicePlugins, resource: str) -> None:
        self.p = plugins
        self.resource = resource

    def GetDevicePluginOptions(self, request: Any, context: Any) -> Any:
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def ListAndWatch(self, request: Any, context: Any) -> Iterator[Any]:
        yield from self.p.list_and_watch(self.resource, context.is_active)

    def GetPreferredAllocation(self, request: Any, context: Any) -> Any:
        out = pb.PreferredAllocationResponse()
        for creq in request.container_requests:
            ids = self.p.preferred(self.resource, list(creq.available_deviceIDs), list(creq.must_include_deviceIDs),
                                   int(creq.allocation_size))
            out.container_responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return out

    def Allocate(self, request: Any, context: Any) -> Any:
        try:
            return self.p.allocate_response(self.resource, request)
        except AllocateRefused as e:
            log.warning("Allocate %s refused: %s", self.resource, e)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except Exception as e:  # never a crash of the agent; kubelet shows the message
            log.exception("Allocate %s failed", self.resource)
            context.abort(grpc.StatusCode.INTERNAL, f"gpupack: internal error in Allocate: {type(e).__name__}: {e}")

    def PreStartContainer(self, request: Any, context: Any) -> Any:
        return pb.PreStartContainerResponse()


__all__ = ["AllocateRefused", "ApiUnavailable", "DevicePlugins", "PluginConfig", "PodSource", "socket_name"]
