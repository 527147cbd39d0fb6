"""Dynamic MIG: the agent creates the instances the extender placed at bind, destroys them when the pod
is gone, and converges to the same state however often (or after however many restarts) it runs."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest

from binpack import Snapshot, allocate, place
from scheduler.agent.discover import discover
from scheduler.agent.dynamic import MigController, reconcile, wanted
from scheduler.agent.fake_nvml import FakeNvml, board
from scheduler.translate.devices import annotations_for
from scheduler.translate.inventory import INVENTORY, node_from_k8s
from scheduler.translate.pod import read_pod

NODE = "gpu-a100"


def _pod(name: str, profile: str, n: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "annotations": {}},
            "spec": {"containers": [{"name": "main", "resources": {"limits": {f"nvidia.com/mig-{profile}": n}}}]},
            "status": {"phase": "Pending"}}


def _bind(fake: FakeNvml, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the extender does at bind: place each pod on the agent's dynamic inventory, write the annotations."""
    inv = discover(fake, dynamic_mig=True)
    node = node_from_k8s({"metadata": {"name": NODE, "annotations": {INVENTORY: inv.annotation()}},
                          "status": {"allocatable": {"cpu": "64", "memory": "512Gi"}}})
    snap = Snapshot.build([node])
    for pod in pods:
        req = read_pod(pod)
        p = place(snap, req.demand, NODE)
        assert p is not None, pod["metadata"]["name"]
        snap = allocate(snap, p)
        pod["metadata"]["annotations"].update(annotations_for(req, p, node))
    return pods


def _empty_a100() -> FakeNvml:
    """The NVSwitch A100 board with MIG on but no instance yet (dynamic MIG starts from here)."""
    fake = board("a100-nvswitch")
    for g in fake.gpus:
        g.gis.clear()
    return fake


def _layout(fake: FakeNvml) -> set[tuple[int, str, int]]:
    """The instances that exist, read back through the agent's own static discovery."""
    return {(g.index, m.profile, m.start) for g in discover(fake).gpus for m in g.mig_instances}


def test_wanted_reads_the_bind_record_of_live_pods_on_this_node() -> None:
    fake = board("a100-nvswitch")
    pods = _bind(fake, [_pod("a", "3g.40gb"), _pod("b", "1g.10gb", 2)])
    want, problems = wanted(pods, NODE)
    assert problems == [] and len(want) == 3
    assert sorted(want.values()) == ["ml/a", "ml/b", "ml/b"]
    done = dict(pods[0], status={"phase": "Succeeded"})
    elsewhere = orjson.loads(orjson.dumps(pods[1]).replace(NODE.encode(), b"other-node"))
    assert wanted([done, elsewhere], NODE) == ({}, [])
    twice, problems = wanted([pods[0], dict(pods[0], metadata=dict(pods[0]["metadata"], name="copy"))], NODE)
    assert len(twice) == 1 and "both hold" in problems[0]
    broken = {"metadata": {"name": "x", "annotations": {"gpupack.io/devices": "{not json"}}}
    assert wanted([broken], NODE)[1][0].startswith("pod /x")


def test_reconcile_creates_the_placed_instances_and_is_idempotent() -> None:
    fake = _empty_a100()
    pods = _bind(fake, [_pod("a", "3g.40gb"), _pod("b", "1g.10gb", 2), _pod("c", "7g.80gb")])
    want, _ = wanted(pods, NODE)
    first = reconcile(fake, want)
    assert set(first.created) == set(want) and first.failed == ()
    assert _layout(fake) == set(want)  # exactly the placements, nothing left of the static layouts
    calls = len(fake.calls)
    again = reconcile(fake, want)
    restarted = MigController(api=None, nvml=fake, node=NODE)  # a restarted agent: no memory, same result
    restarted.pods = {p["metadata"]["uid"]: p for p in pods}
    assert again.created == again.destroyed == () and restarted.apply().created == ()
    assert len(fake.calls) == calls and fake.inits == 0


def test_instances_go_when_their_pod_is_gone_or_finished() -> None:
    fake = _empty_a100()
    pods = _bind(fake, [_pod("a", "3g.40gb"), _pod("b", "2g.20gb")])
    reconcile(fake, wanted(pods, NODE)[0])
    pods[0]["status"]["phase"] = "Failed"
    report = reconcile(fake, wanted(pods[1:], NODE)[0])
    assert [p for _, p, _ in report.destroyed] == ["3g.40gb"]
    assert _layout(fake) == set(wanted(pods[1:], NODE)[0])


def test_an_instance_in_use_is_retried_not_forced() -> None:
    fake = board("a100-nvswitch")
    fake.gpus[6].gis[0].cis[0].busy = True  # a process still runs on the 7g instance
    report = reconcile(fake, {})
    assert any("destroy GPU 6 7g.80gb@0" in f and "InUse" in f for f in report.failed)
    assert (6, "7g.80gb", 0) in _layout(fake)
    fake.gpus[6].gis[0].cis[0].busy = False
    assert (6, "7g.80gb", 0) in reconcile(fake, {}).destroyed and _layout(fake) == set()


def test_a_gpu_instance_left_without_compute_gets_one() -> None:
    fake = board("a100-nvswitch")
    fake.gpus[2].gis[0].cis.clear()  # the agent died between creating the GI and its CI
    want = {(2, "3g.40gb", 0): "ml/a", (2, "3g.40gb", 4): "ml/b"}
    report = reconcile(fake, want)
    assert report.created == ((2, "3g.40gb", 0),) and not any(g == 2 for g, _, _ in report.destroyed)
    assert _layout(fake) == set(want)  # the other GPUs' unclaimed instances are gone


def test_what_cannot_be_created_is_reported() -> None:
    fake = board("a100-nvswitch")
    report = reconcile(fake, {(0, "1g.10gb", 0): "ml/off", (9, "1g.10gb", 0): "ml/nowhere",
                              (5, "3g.40gb", 1): "ml/bad-start"})
    text = " | ".join(report.failed)
    assert "GPU 0 has MIG off" in text and "GPU 9: no such GPU" in text and "may start at [0, 4], not 1" in text
    assert not any(c.startswith("create") for c in fake.calls)
    assert reconcile(board("no-driver"), {}).failed[0].startswith("NVML did not start")


class _Resp:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.data = orjson.dumps(doc)


class _PodApi:
    """list_pod_for_all_namespaces, as the agent calls it (raw JSON, field selector on the node)."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.selectors: list[str] = []

    def list_pod_for_all_namespaces(self, field_selector: str = "", **kw: Any) -> _Resp:
        self.selectors.append(field_selector)
        return _Resp({"items": self.pods, "metadata": {"resourceVersion": "41"}})


def test_controller_lists_then_follows_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _empty_a100()
    pods = _bind(fake, [_pod("a", "3g.40gb"), _pod("b", "1g.10gb")])
    api = _PodApi(pods[:1])
    stop = threading.Event()
    seen: list[dict[str, Any]] = []

    class FakeWatch:
        def stream(self, func: Any, **kw: Any) -> Any:
            seen.append(kw)
            assert func == api.list_pod_for_all_namespaces
            yield {"type": "ADDED", "raw_object": pods[1]}
            yield {"type": "DELETED", "raw_object": pods[0]}
            stop.set()
            yield {"type": "MODIFIED", "raw_object": pods[1]}

        def stop(self) -> None:
            pass

    import kubernetes.watch

    monkeypatch.setattr(kubernetes.watch, "Watch", FakeWatch)
    ctl = MigController(api, fake, NODE, resync_s=30)
    ctl.run(stop)
    assert api.selectors == [f"spec.nodeName={NODE}"]
    assert seen[0]["resource_version"] == "41" and seen[0]["timeout_seconds"] == 30
    assert _layout(fake) == set(wanted(pods[1:], NODE)[0])  # a's instance created then destroyed, b's kept


def test_controller_survives_a_failing_api() -> None:
    class Down:
        def list_pod_for_all_namespaces(self, **kw: Any) -> Any:
            stop.set()
            raise ConnectionError("apiserver unreachable")

    stop = threading.Event()
    fake = board("a100-nvswitch")
    before = _layout(fake)
    MigController(Down(), fake, NODE, backoff_s=0.01).run(stop)
    assert _layout(fake) == before  # no pod list, so nothing was destroyed
