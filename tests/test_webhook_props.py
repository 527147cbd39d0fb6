"""Property tests: for generated pods (GPU and not, several containers, init containers, existing env,
tolerations, affinity and annotations) the patch applies cleanly, a second pass yields no patch, and the
extender reads the same demand (scheduler.translate.pod.read_pod) from the mutated pod as from the original.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scheduler.translate.pod import InvalidPod, read_pod
from webhook.admit import Policy, admit, asks_for_gpu, handoff_problem
from webhook.patch import TOLERATION

POLICY = Policy(runtime_class="nvidia")
NAMES = ["main", "side", "worker", "a-b", "x1", "loader"]
OWN_CHECKS = ("max per node", "requests", "gpupack.io/gpu-fraction")


@st.composite
def gpu_limits(draw: st.DrawFn, kind: str) -> dict[str, str]:
    if kind == "whole":
        return {"nvidia.com/gpu": str(draw(st.integers(1, 4)))}
    if kind == "mig":
        profile = draw(st.sampled_from(["nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb"]))
        return {profile: str(draw(st.integers(1, 2)))}
    mem = draw(st.sampled_from([0, 512, 1000, 20000, 40960]))
    pct = draw(st.sampled_from([0, 5, 25, 40]))
    if not mem and not pct:
        mem = 1024
    out = {}
    if mem:  # the apiserver stores 20000 as "20k": both spellings must read the same
        out["gpupack.io/gpu-memory"] = draw(st.sampled_from([str(mem), f"{mem // 1000}k"])) if mem % 1000 == 0 \
            else str(mem)
    if pct:
        out["gpupack.io/gpu-compute"] = str(pct)
    return out


@st.composite
def container(draw: st.DrawFn, name: str, kind: str, uses_gpu: bool) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "registry.invalid/cuda"}
    lim = draw(gpu_limits(kind)) if uses_gpu and kind != "none" else {}
    form = draw(st.sampled_from(["copied", "limits-only", "absent"]))
    if form == "copied" or (lim and form == "absent"):  # the apiserver copies extended-resource limits to requests
        c["resources"] = {"limits": lim, "requests": {"cpu": "100m", "memory": "128Mi", **lim}} if lim else {
            "requests": {"cpu": "100m"}}
    elif form == "limits-only":
        c["resources"] = {"limits": {"cpu": "1", **lim}}
    if draw(st.booleans()):
        c["env"] = [{"name": n, "value": v} for n, v in draw(st.lists(st.tuples(
            st.sampled_from(["FOO", "NVIDIA_VISIBLE_DEVICES", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "PATH"]),
            st.text("abc,0123", max_size=5)), max_size=3))]
    return c


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["whole", "mig", "share", "none", "fraction"]))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    n_app = draw(st.integers(1, len(names)))
    app_names, init_names = names[:n_app], names[n_app:]
    res_kind = kind if kind in ("whole", "mig", "share") else "none"
    gpu_app = [draw(st.booleans()) for _ in app_names]
    if res_kind != "none" and not any(gpu_app):
        gpu_app[0] = True
    spec: dict[str, Any] = {"containers": [draw(container(n, res_kind, g)) for n, g in zip(app_names, gpu_app,
                                                                                            strict=True)]}
    if init_names:
        spec["initContainers"] = [draw(container(n, res_kind, draw(st.booleans()))) for n in init_names]
    sched = draw(st.sampled_from([None, "default-scheduler", "default-scheduler", "gpupack-scheduler", "volcano"]))
    if sched:
        spec["schedulerName"] = sched
    tols = draw(st.sampled_from(["absent", "default", "ours", "all"]))
    default = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}]
    if tols != "absent":
        spec["tolerations"] = default + ([dict(TOLERATION)] if tols == "ours" else []) + (
            [{"operator": "Exists"}] if tols == "all" else [])
    if draw(st.booleans()):
        terms = [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}] * draw(st.integers(1, 2))
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": copy.deepcopy(terms)}}}
    ann: dict[str, str] = {}
    if draw(st.booleans()):
        ann["team"] = "ml"
    if kind == "fraction":
        if draw(st.booleans()):
            ann["gpupack.io/gpu-fraction"] = draw(st.sampled_from(["0.5", "0.25", "1", "0.07", "0.333", "0.005"]))
        if draw(st.booleans()) or not ann:
            ann["gpupack.io/gpu-memory"] = draw(st.sampled_from(["1Gi", "40Gi", "20000Mi", "3G"]))
    if draw(st.booleans()):
        ann["gpupack.io/gpu-model"] = draw(st.sampled_from(["A100-SXM4-80GB", "H100|A100-SXM4-40GB", "T4", "RTX 4090"]))
    if kind == "whole" and draw(st.booleans()):
        ann["gpupack.io/topology"] = draw(st.sampled_from(["nvlink", "best-effort"]))
    if draw(st.booleans()):
        ann["gpupack.io/pod-group"] = "g1"
        ann["gpupack.io/pod-group-min"] = str(draw(st.integers(1, 4)))
    meta: dict[str, Any] = {"generateName": "job-", "namespace": "ns"}  # on CREATE: no uid, often no name
    if ann or draw(st.booleans()):
        meta["annotations"] = ann
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _slots(pod: dict[str, Any], name: str) -> str:
    for key in ("containers", "initContainers"):
        for c in pod["spec"].get(key, []):
            if c["name"] == name:
                res = c.get("resources", {})
                assert res["limits"]["gpupack.io/gpu-share"] == res["requests"]["gpupack.io/gpu-share"]
                return str(res["limits"]["gpupack.io/gpu-share"])
    raise AssertionError(name)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_patch_applies_is_idempotent_and_keeps_the_demand(pod: dict[str, Any]) -> None:
    original = copy.deepcopy(pod)
    d = admit(pod, POLICY)
    assert pod == original  # pure: the input is not touched
    event(f"result={d.result}")
    refused = handoff_problem(pod)
    if refused:  # NVIDIA_VISIBLE_DEVICES set by the pod itself, GPU pod or not
        assert not d.allowed and d.message == "gpupack: " + refused and "NVIDIA_VISIBLE_DEVICES" in refused
        return
    if not asks_for_gpu(pod):
        assert d.allowed and d.patch == ()
        return
    if not d.allowed:
        assert d.message.startswith("gpupack: ")
        try:
            read_pod(pod)
        except InvalidPod:
            return
        assert any(k in d.message for k in OWN_CHECKS), d.message
        return
    out = jsonpatch.apply_patch(pod, list(d.patch))  # raises on a patch that does not apply
    again = admit(out, POLICY)
    assert again.allowed and again.patch == ()
    if d.result == "skipped":
        assert d.patch == ()
        return
    before, after = read_pod(pod), read_pod(out)
    assert after.demand == before.demand
    assert after.containers == before.containers
    assert out["spec"]["schedulerName"] == "gpupack-scheduler"
    assert out["spec"]["runtimeClassName"] == "nvidia"
    for c in after.containers:  # each share container goes through the device plugin's Allocate
        if after.demand.kind.value == "share":
            assert _slots(out, c.name) == "1"
    assert "gpupack.io/visible-devices" not in str(out)
    assert any(t.get("operator") == "Exists" and t.get("key") in (None, "nvidia.com/gpu")
               for t in out["spec"]["tolerations"])
