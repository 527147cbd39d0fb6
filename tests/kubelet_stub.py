"""A kubelet stand-in speaking the real device plugin API v1beta1 (and PodResources v1) over unix
sockets, for the device plugin tests: it serves Registration on `kubelet.sock`, opens ListAndWatch
to every plugin that registers, and admits containers as kubelet's device manager does (preferred
allocation if it is valid, else the first free healthy devices, then Allocate). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from scheduler.agent.handoff import Booking
from scheduler.agent.kubeletapi import deviceplugin_pb2 as pb
from scheduler.agent.kubeletapi import deviceplugin_pb2_grpc as pb_grpc
from scheduler.agent.kubeletapi import podresources_pb2 as prpb
from scheduler.agent.kubeletapi import podresources_pb2_grpc as prpb_grpc
from scheduler.translate.devices import DEVICES, corrected

Obj = dict[str, Any]


def short_dir() -> Path:
    """A socket folder with a short path (unix socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="gp-", dir="/tmp"))


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class FakeKubelet(pb_grpc.RegistrationServicer):
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.registered: list[Any] = []
        self.devices: dict[str, dict[str, str]] = {}  # resource -> id -> health
        self.updates: dict[str, int] = {}
        self.allocated: dict[str, set[str]] = {}  # resource -> ids in use
        self.by_container: dict[tuple[str, str, str], dict[str, list[str]]] = {}
        self.endpoints: dict[str, str] = {}
        self._server: grpc.Server | None = None
        self._streams: list[threading.Thread] = []
        self._calls: list[Any] = []  # open ListAndWatch streams, cancelled by stop()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # --- kubelet's registration service -----------------------------------------------------------
    def Register(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.registered.append(request)
            self.endpoints[request.resource_name] = request.endpoint
        t = threading.Thread(target=self._watch, args=(request.resource_name, request.endpoint), daemon=True)
        t.start()
        self._streams.append(t)
        return pb.Empty()

    def _channel(self, endpoint: str) -> grpc.Channel:
        return grpc.insecure_channel(f"unix://{self.dir / endpoint}")

    def _watch(self, resource: str, endpoint: str) -> None:
        with self._channel(endpoint) as ch:
            stream = pb_grpc.DevicePluginStub(ch).ListAndWatch(pb.Empty(), timeout=60)
            with self._lock:
                self._calls.append(stream)
            try:
                for resp in stream:
                    with self._lock:
                        self.devices[resource] = {d.ID: d.health for d in resp.devices}
                        self.updates[resource] = self.updates.get(resource, 0) + 1
                    if self._stop.is_set():
                        stream.cancel()
                        return
            except grpc.RpcError:
                return

    def start(self) -> FakeKubelet:
        self._stop.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_RegistrationServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.dir / 'kubelet.sock'}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and end every stream: no gRPC thread outlives the test (a gRPC call still open at
        interpreter exit can crash it)."""
        self._stop.set()
        with self._lock:
            calls, self._calls = self._calls, []
        for c in calls:
            c.cancel()
        for t in self._streams:
            t.join(5)
        self._streams = [t for t in self._streams if t.is_alive()]
        if self._server is not None:
            self._server.stop(grace=0.2).wait(2)
            self._server = None

    def restart(self) -> None:
        """As kubelet does: stop, wipe the socket folder, forget plugins, come back with a new socket."""
        self.stop()
        for f in self.dir.iterdir():
            f.unlink()
        with self._lock:
            self.devices.clear()
            self.endpoints.clear()
        self.start()

    # --- the device manager -------------------------------------------------------------------------
    def wait_devices(self, resource: str, cond: Callable[[dict[str, str]], bool] = bool,
                     timeout_s: float = 5.0) -> dict[str, str]:
        wait_until(lambda: cond(dict(self.devices.get(resource, {}))), timeout_s)
        return dict(self.devices[resource])

    def options(self, resource: str) -> Any:
        with self._channel(self.endpoints[resource]) as ch:
            return pb_grpc.DevicePluginStub(ch).GetDevicePluginOptions(pb.Empty(), timeout=5)

    def preferred(self, resource: str, available: Sequence[str], must: Sequence[str], size: int) -> list[str]:
        with self._channel(self.endpoints[resource]) as ch:
            resp = pb_grpc.DevicePluginStub(ch).GetPreferredAllocation(pb.PreferredAllocationRequest(
                container_requests=[pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available), must_include_deviceIDs=list(must),
                    allocation_size=size)]), timeout=5)
        return list(resp.container_responses[0].deviceIDs)

    def allocate(self, resource: str, ids: Sequence[str]) -> Any:
        with self._channel(self.endpoints[resource]) as ch:
            resp = pb_grpc.DevicePluginStub(ch).Allocate(pb.AllocateRequest(
                container_requests=[pb.ContainerAllocateRequest(devices_ids=list(ids))]), timeout=5)
        return resp.container_responses[0]

    def free(self, resource: str) -> list[str]:
        with self._lock:
            return [d for d, h in self.devices.get(resource, {}).items()
                    if h == "Healthy" and d not in self.allocated.get(resource, set())]

    def admit(self, resource: str, size: int, who: tuple[str, str, str] = ("", "", ""),
              choose: Callable[[list[str], int], list[str]] | None = None) -> tuple[list[str], Any]:
        """One container through the device manager: (ids kubelet allocated, the Allocate answer).
        `choose` overrides kubelet's pick (to simulate it ignoring the preference)."""
        free = self.free(resource)
        if len(free) < size:
            raise AssertionError(f"kubelet: not enough free {resource} ({len(free)} < {size})")
        pref = self.preferred(resource, free, [], size)
        if choose is not None:
            ids = choose(free, size)
        elif len(pref) == size and set(pref) <= set(free):
            ids = pref
        else:
            ids = free[:size]
        answer = self.allocate(resource, ids)
        with self._lock:
            self.allocated.setdefault(resource, set()).update(ids)
            self.by_container.setdefault(who, {})[resource] = list(ids)
        return ids, answer


class MemoryPods:
    """The PodSource of the tests: pods in memory; corrections rewrite the record as the agent's do."""

    def __init__(self, pods: Sequence[Obj] = (), gpus: Callable[[], Sequence[Any]] = tuple) -> None:
        self._pods = {p["metadata"]["uid"]: p for p in pods}
        self.gpus = gpus
        self.corrections: list[tuple[str, str, tuple[str, ...], str]] = []
        self.fail_list = False
        self.lists = 0

    def add(self, pod: Obj) -> None:
        self._pods[pod["metadata"]["uid"]] = pod

    def remove(self, uid: str) -> None:
        self._pods.pop(uid, None)

    def pods(self) -> list[Mapping[str, Any]]:
        self.lists += 1
        if self.fail_list:
            raise ConnectionError("apiserver down")
        return list(self._pods.values())

    def correct(self, booking: Booking, devices: Sequence[str], message: str) -> None:
        pod = self._pods[booking.uid]
        ann = pod["metadata"]["annotations"]
        ann[DEVICES] = corrected(ann[DEVICES], booking.container, list(devices), self.gpus())
        self.corrections.append((booking.pod, booking.container, tuple(devices), message))


class FakePodResources(prpb_grpc.PodResourcesListerServicer):
    """kubelet's PodResources List over a unix socket, answering from a FakeKubelet's allocations."""

    def __init__(self, kubelet: FakeKubelet) -> None:
        self.k = kubelet

    def List(self, request: Any, context: Any) -> Any:
        pods: dict[tuple[str, str], list[Any]] = {}
        for (ns, name, ctr), per in self.k.by_container.items():
            pods.setdefault((ns, name), []).append(prpb.ContainerResources(name=ctr, devices=[
                prpb.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in per.items()]))
        return prpb.ListPodResourcesResponse(pod_resources=[
            prpb.PodResources(namespace=ns, name=name, containers=cs) for (ns, name), cs in pods.items()])


@contextlib.contextmanager
def pod_resources_server(kubelet: FakeKubelet, socket: Path) -> Iterator[Path]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prpb_grpc.add_PodResourcesListerServicer_to_server(FakePodResources(kubelet), server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    try:
        yield socket
    finally:
        server.stop(grace=0.2).wait(2)
