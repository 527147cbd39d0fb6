"""The device plugin through kubelet's real gRPC API (a kubelet stand-in on unix sockets): registration,
ListAndWatch and health, preferred allocation and Allocate for whole GPUs, NVLink sets, MIG and shares,
the whole path extender bind -> record -> Allocate, kubelet restarts, and each ambiguous case."""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from extender_support import pod, post, serve
from kubelet_stub import FakeKubelet, MemoryPods, pod_resources_server, short_dir, wait_until

from binpack import Gpu
from scheduler.agent.discover import discover
from scheduler.agent.fake_nvml import board
from scheduler.agent.handoff import GPU_RESOURCE, SHARE_RESOURCE, SLOT_SEP, Mode
from scheduler.agent.metrics import ALLOCATIONS
from scheduler.agent.plugin import DevicePlugins, PluginConfig, socket_name
from scheduler.agent.podresources import list_allocated
from scheduler.agent.reconcile import reconcile_once
from scheduler.agent.xid import XidWatcher
from scheduler.translate.devices import DEVICES, record_from
from scheduler.translate.inventory import INVENTORY

V100 = discover(board("dgx1-v100"))
A100 = discover(board("a100-nvswitch"))
Obj = dict[str, Any]


def node_obj(name: str, inv: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name},
                         "annotations": {INVENTORY: inv.annotation()}},
            "status": {"allocatable": {"cpu": "96", "memory": "1000Gi", "pods": "110"}}}


NODES = [node_obj("gpu-v", V100), node_obj("gpu-a", A100)]


def bind_all(pods: list[Obj], node: str) -> dict[str, Obj]:
    """Each pod bound by the real extender to `node` (in the order given): the stored pods by name."""
    with serve(NODES, pods) as (client, api, _):
        for p in pods:
            m = p["metadata"]
            answer = post(client, "bind", {"PodName": m["name"], "PodNamespace": "default", "PodUID": m["uid"],
                                           "Node": node})
            assert answer == {"Error": ""}, (m["name"], answer)
        return {p["metadata"]["name"]: api.get_pod("default", p["metadata"]["name"]) for p in pods}


def created(p: Obj, second: int) -> Obj:
    p["metadata"]["creationTimestamp"] = f"2026-12-06T00:{second // 60:02d}:{second % 60:02d}Z"
    return p


@contextlib.contextmanager
def agent(source: MemoryPods, node: str, gpus: tuple[Gpu, ...], mode: Mode = Mode.CDI_CRI,
          slots: int = 16, cdi_dirs: tuple[Path, ...] = ()) -> Iterator[tuple[FakeKubelet, DevicePlugins]]:
    folder = short_dir()
    kubelet = FakeKubelet(folder).start()
    plugins = DevicePlugins(PluginConfig(node=node, plugin_dir=folder, mode=mode, share_slots=slots, watch_s=0.05,
                                         cdi_dirs=cdi_dirs), source, gpus)
    stop = threading.Event()
    plugins.start()
    watcher = threading.Thread(target=plugins.watch, args=(stop,), daemon=True)
    watcher.start()
    try:
        yield kubelet, plugins
    finally:
        stop.set()
        watcher.join(2)
        plugins.stop()
        kubelet.stop()
        shutil.rmtree(folder, ignore_errors=True)


def booked(p: Obj, container: str = "main") -> list[str]:
    rec = record_from(p["metadata"]["annotations"])
    assert rec is not None
    c = rec.container(container)
    assert c is not None
    return list(c.devices)


def cdi(answer: Any) -> list[str]:
    return [d.name for d in answer.cdi_devices]


def test_registers_every_resource_and_lists_devices() -> None:
    with agent(MemoryPods(), "gpu-a", A100.gpus, slots=4) as (kubelet, _):
        wait_until(lambda: len(kubelet.registered) >= 8)
        names = {r.resource_name for r in kubelet.registered}
        assert {GPU_RESOURCE, SHARE_RESOURCE, "nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb",
                "nvidia.com/mig-7g.80gb"} <= names
        assert all(r.version == "v1beta1" and r.options.get_preferred_allocation_available for r in kubelet.registered)
        assert {r.endpoint for r in kubelet.registered} == {socket_name(n) for n in names}
        gpus = kubelet.wait_devices(GPU_RESOURCE)
        assert gpus == {A100.gpus[0].uuid: "Healthy"}  # GPUs 1-7 are in MIG mode: not whole GPUs
        mig = kubelet.wait_devices("nvidia.com/mig-1g.10gb")
        assert set(mig) == {i.uuid for g in A100.gpus for i in g.mig_instances if i.profile == "1g.10gb"}
        shares = kubelet.wait_devices(SHARE_RESOURCE)
        assert sorted(shares) == [f"{A100.gpus[0].uuid}{SLOT_SEP}{k}" for k in range(4)]
        assert kubelet.options(GPU_RESOURCE).get_preferred_allocation_available


def test_health_changes_reach_listandwatch() -> None:
    with agent(MemoryPods(), "gpu-v", V100.gpus) as (kubelet, plugins):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        lost = tuple(replace(g, healthy=False) if g.index == 5 else g for g in V100.gpus)
        plugins.update(lost)
        devs = kubelet.wait_devices(GPU_RESOURCE, lambda d: d.get(V100.gpus[5].uuid) == "Unhealthy")
        assert sum(h == "Healthy" for h in devs.values()) == 7
        slots = kubelet.wait_devices(SHARE_RESOURCE, lambda d: any(h == "Unhealthy" for h in d.values()))
        assert {k.split(SLOT_SEP)[0] for k, h in slots.items() if h == "Unhealthy"} == {V100.gpus[5].uuid}
        plugins.update(V100.gpus)
        kubelet.wait_devices(GPU_RESOURCE, lambda d: all(h == "Healthy" for h in d.values()))


@pytest.mark.parametrize("limits,ann", [
    ({"nvidia.com/gpu": "1"}, {}),
    ({"nvidia.com/gpu": "2"}, {}),
    ({"nvidia.com/gpu": "4"}, {"gpupack.io/topology": "nvlink"}),
    ({"nvidia.com/gpu": "8"}, {}),
])
def test_bind_record_allocate_hands_over_exactly_the_booked_gpus(limits: dict, ann: dict) -> None:
    stored = bind_all([pod("train", limits, annotations=ann)], "gpu-v")["train"]
    want = booked(stored)
    n = int(limits["nvidia.com/gpu"])
    assert len(want) == n
    with agent(MemoryPods([stored]), "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        ids, answer = kubelet.admit(GPU_RESOURCE, n, ("default", "train", "main"))
        assert sorted(ids) == sorted(want)
        assert cdi(answer) == [f"nvidia.com/gpu={u}" for u in want]
        assert answer.envs["GPUPACK_DEVICES"] == ",".join(want)
        assert "NVIDIA_VISIBLE_DEVICES" not in answer.envs


def test_mig_pod_gets_its_instance_by_uuid() -> None:
    stored = bind_all([pod("mig", {"nvidia.com/mig-3g.40gb": "1"})], "gpu-a")["mig"]
    (uuid,) = booked(stored)
    assert uuid.startswith("MIG-")
    with agent(MemoryPods([stored]), "gpu-a", A100.gpus) as (kubelet, _):
        kubelet.wait_devices("nvidia.com/mig-3g.40gb", lambda d: uuid in d)
        ids, answer = kubelet.admit("nvidia.com/mig-3g.40gb", 1, ("default", "mig", "main"))
        assert ids == [uuid] and cdi(answer) == [f"nvidia.com/gpu={uuid}"]


def test_share_pod_gets_a_slot_of_its_gpu_and_its_mps_limits() -> None:
    stored = bind_all([pod("share", {"gpupack.io/gpu-memory": "8000", "gpupack.io/gpu-compute": "30"})], "gpu-v")
    p = stored["share"]
    (gpu,) = booked(p)
    with agent(MemoryPods([p]), "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(SHARE_RESOURCE, lambda d: len(d) == 8 * 16)
        ids, answer = kubelet.admit(SHARE_RESOURCE, 1, ("default", "share", "main"))
        assert ids[0].split(SLOT_SEP)[0] == gpu
        assert cdi(answer) == [f"nvidia.com/gpu={gpu}"]
        assert answer.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "30"
        assert answer.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=8000M"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_32_pods_admitted_in_turn_each_get_their_own_devices(seed: int) -> None:
    rng = random.Random(seed)
    wholes = [created(pod(f"w{i}", {"nvidia.com/gpu": "1"}), i) for i in range(4)]
    shares = [created(pod(f"s{i}", {"gpupack.io/gpu-memory": "1000", "gpupack.io/gpu-compute": "10"}), 4 + i)
              for i in range(28)]
    pods = wholes + shares
    order = pods[:]
    rng.shuffle(order)
    stored = bind_all(order, "gpu-v")
    source = MemoryPods(list(stored.values()))
    given: dict[str, list[str]] = {}
    with agent(source, "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(SHARE_RESOURCE, lambda d: len(d) == 8 * 16)
        for p in pods:  # kubelet admits in creation order
            name = p["metadata"]["name"]
            resource = GPU_RESOURCE if name.startswith("w") else SHARE_RESOURCE
            ids, answer = kubelet.admit(resource, 1, ("default", name, "main"))
            assert cdi(answer) == [f"nvidia.com/gpu={u}" for u in booked(stored[name])]
            given[name] = ids
    assert source.corrections == []
    all_ids = [i for ids in given.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == 32  # no device (GPU or share slot) given twice
    whole_gpus = {given[f"w{i}"][0] for i in range(4)}
    share_gpus = {given[f"s{i}"][0].split(SLOT_SEP)[0] for i in range(28)}
    assert not whole_gpus & share_gpus  # a whole GPU is nobody else's


def test_kubelet_restart_re_registers_and_readmission_is_answered_again() -> None:
    stored = bind_all([pod("a", {"nvidia.com/gpu": "2"})], "gpu-v")["a"]
    with agent(MemoryPods([stored]), "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        ids, first = kubelet.admit(GPU_RESOURCE, 2, ("default", "a", "main"))
        before = len(kubelet.registered)
        kubelet.restart()  # mid-admission: kubelet lost the allocation and will ask again
        wait_until(lambda: len(kubelet.registered) >= before + 2)
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        again = kubelet.allocate(GPU_RESOURCE, ids)
        assert cdi(again) == cdi(first) == [f"nvidia.com/gpu={u}" for u in booked(stored)]


def test_same_second_pods_swapped_by_kubelet_are_corrected_by_the_reconciler() -> None:
    a, b = (created(pod(n, {"nvidia.com/gpu": "2"}), 7) for n in ("a", "b"))  # same size, same second
    stored = bind_all([a, b], "gpu-v")
    source = MemoryPods(list(stored.values()), lambda: V100.gpus)
    booked_a, booked_b = booked(stored["a"]), booked(stored["b"])
    with agent(source, "gpu-v", V100.gpus) as (kubelet, plugins):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        # kubelet admits b first; the agent cannot tell the two apart and offers the older booking (a's)
        ids_b, _ = kubelet.admit(GPU_RESOURCE, 2, ("default", "b", "main"))
        ids_a, _ = kubelet.admit(GPU_RESOURCE, 2, ("default", "a", "main"))
        assert sorted(ids_b) == sorted(booked_a) and sorted(ids_a) == sorted(booked_b)  # swapped
        sock = short_dir() / "pr.sock"
        with pod_resources_server(kubelet, sock):
            found = reconcile_once(plugins, lambda: list_allocated(sock))
            assert {(m.name, m.kubelet) for m in found} == {("a", tuple(sorted(ids_a))), ("b", tuple(sorted(ids_b)))}
            after = {p["metadata"]["name"]: p for p in source.pods()}
            assert sorted(booked(after["a"])) == sorted(ids_a) and sorted(booked(after["b"])) == sorted(ids_b)
            assert reconcile_once(plugins, lambda: list_allocated(sock)) == []  # records, kubelet, containers agree
            gpus_a = orjson.loads(after["a"]["metadata"]["annotations"][DEVICES])["gpus"]
            assert sorted(V100.gpus[g].uuid for g in gpus_a) == sorted(ids_a)  # the ledger follows too


def test_pod_deleted_before_admission_frees_its_booking_for_nobody_else() -> None:
    a, b = created(pod("a", {"nvidia.com/gpu": "4"}), 1), created(pod("b", {"nvidia.com/gpu": "4"}), 2)
    stored = bind_all([a, b], "gpu-v")
    source = MemoryPods(list(stored.values()))
    with agent(source, "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        source.remove(stored["a"]["metadata"]["uid"])  # deleted before kubelet admitted it
        ids, answer = kubelet.admit(GPU_RESOURCE, 4, ("default", "b", "main"))
        assert sorted(ids) == sorted(booked(stored["b"]))
        assert cdi(answer) == [f"nvidia.com/gpu={u}" for u in booked(stored["b"])]


def test_kubelet_picking_other_devices_wins_and_the_record_is_corrected() -> None:
    stored = bind_all([pod("a", {"nvidia.com/gpu": "1"})], "gpu-v")["a"]
    source = MemoryPods([stored], lambda: V100.gpus)
    want = booked(stored)
    before = ALLOCATIONS.labels(resource=GPU_RESOURCE, outcome="corrected")._value.get()
    with agent(source, "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        other = next(g.uuid for g in V100.gpus if g.uuid not in want)
        ids, answer = kubelet.admit(GPU_RESOURCE, 1, ("default", "a", "main"), choose=lambda free, n: [other])
        assert ids == [other] and cdi(answer) == [f"nvidia.com/gpu={other}"]  # the container gets kubelet's pick
    assert booked(source.pods()[0]) == [other]  # and the record says so
    ((who, ctr, devs, msg),) = source.corrections
    assert who == "default/a" and ctr == "main" and devs == (other,) and want[0] in msg
    assert ALLOCATIONS.labels(resource=GPU_RESOURCE, outcome="corrected")._value.get() == before + 1


def _refused(kubelet: FakeKubelet, resource: str, ids: list[str]) -> str:
    with pytest.raises(grpc.RpcError) as err:
        kubelet.allocate(resource, ids)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    return str(err.value.details())


def test_bad_records_and_requests_fail_admission_with_a_message() -> None:
    good = bind_all([pod("a", {"nvidia.com/gpu": "2"})], "gpu-v")["a"]
    alien = pod("alien", {"nvidia.com/gpu": "1"}, node="gpu-v", annotations={DEVICES: orjson.dumps({
        "v": 1, "node": "gpu-v", "kind": "whole", "gpus": [0],
        "containers": {"main": {"devices": ["GPU-not-on-this-node"]}}}).decode()})
    broken = pod("broken", {"nvidia.com/gpu": "1"}, node="gpu-v", annotations={DEVICES: "{not json"})
    source = MemoryPods([good, alien, broken])
    with agent(source, "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        free = [g.uuid for g in V100.gpus if g.uuid not in booked(good)]
        msg = _refused(kubelet, GPU_RESOURCE, free[:1])
        assert "GPU-not-on-this-node" in msg and "default/alien" in msg and "are not on this node" in msg
        msg = _refused(kubelet, GPU_RESOURCE, free[:3])  # more devices than any record names
        assert "asks 3 nvidia.com/gpu" in msg and "no pod bound to node gpu-v" in msg
        source.remove(alien["metadata"]["uid"])
        msg = _refused(kubelet, GPU_RESOURCE, free[:1])
        assert "default/broken" in msg and "unreadable record" in msg
        # the good pod still gets its devices
        assert cdi(kubelet.allocate(GPU_RESOURCE, booked(good))) == [f"nvidia.com/gpu={u}" for u in booked(good)]


def test_apiserver_down_during_allocate() -> None:
    stored = bind_all([pod("a", {"nvidia.com/gpu": "1"})], "gpu-v")["a"]
    source = MemoryPods([stored])
    source.fail_list = True
    with agent(source, "gpu-v", V100.gpus) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        msg = _refused(kubelet, GPU_RESOURCE, booked(stored))
        assert "cannot read the pods bound to gpu-v from the API server" in msg
        source.fail_list = False
        kubelet.preferred(GPU_RESOURCE, list(kubelet.devices[GPU_RESOURCE]), [], 1)  # lists once: now cached
        source.fail_list = True
        assert cdi(kubelet.allocate(GPU_RESOURCE, booked(stored))) == [f"nvidia.com/gpu={booked(stored)[0]}"]


@pytest.mark.parametrize("mode", [Mode.CDI_ANNOTATIONS, Mode.ENVVAR])
def test_other_handoff_modes(mode: Mode) -> None:
    stored = bind_all([pod("a", {"nvidia.com/gpu": "2"})], "gpu-v")["a"]
    want = booked(stored)
    with agent(MemoryPods([stored]), "gpu-v", V100.gpus, mode=mode) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        _, answer = kubelet.admit(GPU_RESOURCE, 2)
        assert list(answer.cdi_devices) == []
        if mode is Mode.ENVVAR:
            assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == ",".join(want) and not answer.annotations
        else:
            ((key, value),) = answer.annotations.items()
            assert key.startswith("cdi.k8s.io/gpupack_") and value == ",".join(f"nvidia.com/gpu={u}" for u in want)
            assert "NVIDIA_VISIBLE_DEVICES" not in answer.envs


def test_reconciler_reports_a_planted_mismatch_and_foreign_allocations() -> None:
    stored = bind_all([pod("a", {"nvidia.com/gpu": "1"})], "gpu-v")["a"]
    source = MemoryPods([stored], lambda: V100.gpus)
    want = tuple(booked(stored))
    with agent(source, "gpu-v", V100.gpus) as (kubelet, plugins):
        other = next(g.uuid for g in V100.gpus if g.uuid not in want)
        kubelet.by_container[("default", "a", "main")] = {GPU_RESOURCE: [other]}  # planted
        kubelet.by_container[("default", "stranger", "main")] = {GPU_RESOURCE: [V100.gpus[7].uuid]}
        sock = short_dir() / "pr.sock"
        with pod_resources_server(kubelet, sock):
            found = reconcile_once(plugins, lambda: list_allocated(sock))
    assert {(m.name, m.kubelet, m.record) for m in found} == {
        ("a", (other,), want), ("stranger", (V100.gpus[7].uuid,), ())}
    assert booked(source.pods()[0]) == [other]
    assert plugins.admitted()[("default", "a", "main")] == (GPU_RESOURCE, (other,))


def test_a_device_no_cdi_spec_names_fails_admission_instead_of_container_creation(tmp_path: Path) -> None:
    stored = bind_all([pod("a", {"nvidia.com/gpu": "8"})], "gpu-v")["a"]
    data = Path(__file__).parent / "data" / "cdi"
    (tmp_path / "stale").mkdir()
    (tmp_path / "full").mkdir()
    shutil.copy(data / "nvidia-dgx1-v100-stale.yaml", tmp_path / "stale")  # GPU 3 is missing
    shutil.copy(data / "nvidia-dgx1-v100.yaml", tmp_path / "full")
    with agent(MemoryPods([stored]), "gpu-v", V100.gpus, cdi_dirs=(tmp_path / "stale",)) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        msg = _refused(kubelet, GPU_RESOURCE, booked(stored))
        assert f"names nvidia.com/gpu={V100.gpus[3].uuid}" in msg and "regenerate the node's CDI spec" in msg
    with agent(MemoryPods([stored]), "gpu-v", V100.gpus, cdi_dirs=(tmp_path / "full",)) as (kubelet, _):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        assert len(cdi(kubelet.allocate(GPU_RESOURCE, booked(stored)))) == 8


def test_a_fatal_xid_makes_the_gpu_unhealthy_and_an_application_xid_does_not() -> None:
    nvml = board("dgx1-v100")
    gpus = discover(nvml).gpus
    with agent(MemoryPods(), "gpu-v", gpus, slots=2) as (kubelet, plugins):
        kubelet.wait_devices(GPU_RESOURCE, lambda d: len(d) == 8)
        watcher = XidWatcher(nvml, plugins.mark_unhealthy, wait_ms=50)
        stop = threading.Event()
        t = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        t.start()
        try:
            assert watcher.ready.wait(5) and len(watcher.watched) == 8
            nvml.inject_xid(1, 13)  # a kernel's own fault: the GPU stays healthy
            nvml.inject_xid(2, 79)  # fallen off the bus
            devs = kubelet.wait_devices(GPU_RESOURCE, lambda d: d.get(gpus[2].uuid) == "Unhealthy")
            assert [u for u, h in devs.items() if h != "Healthy"] == [gpus[2].uuid]
            slots = kubelet.wait_devices(SHARE_RESOURCE, lambda d: d.get(f"{gpus[2].uuid}{SLOT_SEP}0") == "Unhealthy")
            assert slots[f"{gpus[1].uuid}{SLOT_SEP}0"] == "Healthy"
            plugins.update(gpus)  # a new healthy inventory does not undo a fatal XID
            assert plugins.offers()[GPU_RESOURCE][2].healthy is False
        finally:
            stop.set()
            t.join(5)
    assert not t.is_alive() and nvml.inits == 0  # NVML released
