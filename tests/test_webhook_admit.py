"""Admission policy and the JSONPatch builder, table-driven on hand-made pods."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from binpack.catalog import CATALOG, canonical_model
from scheduler.translate.pod import read_pod
from webhook.admit import Decision, Policy, admit
from webhook.patch import TOLERATION, escape, pointer
from webhook.products import GFD_PRODUCTS, PRODUCT_LABEL, is_label_value, product_values, unknown_models

POLICY = Policy()


def ctr(*parts: str | dict[str, str], env: list[Any] | None = None,
        envFrom: list[Any] | None = None) -> dict[str, Any]:
    """A container: its name (default main) and GPU limits, copied to requests as the apiserver does."""
    name = next((x for x in parts if isinstance(x, str)), "main")
    lim = next((x for x in parts if isinstance(x, dict)), {})
    c: dict[str, Any] = {"name": name, "image": "cuda", "resources": {"limits": lim, "requests": {"cpu": "1", **lim}}}
    if env is not None:
        c["env"] = env
    if envFrom is not None:
        c["envFrom"] = envFrom
    return c


def pod(*containers: dict[str, Any], ann: dict[str, str] | None = None, init: list[dict[str, Any]] | None = None,
        **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"containers": list(containers), "schedulerName": "default-scheduler", **spec}
    if init:
        s["initContainers"] = init
    meta: dict[str, Any] = {"generateName": "job-", "namespace": "ns"}
    if ann is not None:
        meta["annotations"] = ann
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": s}


def apply(p: dict[str, Any], d: Decision) -> dict[str, Any]:
    assert d.allowed, d.message
    out = jsonpatch.apply_patch(copy.deepcopy(p), list(d.patch))
    assert admit(out, POLICY).patch == ()  # idempotent
    assert read_pod(out).demand == read_pod(p).demand
    return out


def env_of(p: dict[str, Any], name: str, key: str = "containers") -> dict[str, str]:
    c = next(c for c in p["spec"][key] if c["name"] == name)
    return {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] if "valueFrom" in e else e["value"]
            for e in c.get("env", [])}


GPU = {"nvidia.com/gpu": "1"}
DENIALS = [
    ("share over 100%", pod(ctr({"gpupack.io/gpu-compute": "150"})), "1..100"),
    ("share under 1%", pod(ctr({"gpupack.io/gpu-compute": "500m"})), "1..100"),
    ("fraction over 1", pod(ctr(), ann={"gpupack.io/gpu-fraction": "1.5"}), "ask for nvidia.com/gpu"),
    ("fraction under 1%", pod(ctr(), ann={"gpupack.io/gpu-fraction": "0.005"}), "write at least 0.01"),
    ("fraction finer than 1%", pod(ctr(), ann={"gpupack.io/gpu-fraction": "0.333"}), "write 0.33 or 0.34"),
    ("unknown MIG profile", pod(ctr({"nvidia.com/mig-9g.99gb": "1"})), "unknown MIG profile"),
    ("MIG with whole GPUs", pod(ctr({"nvidia.com/mig-1g.10gb": "1", "nvidia.com/gpu": "1"})),
     "one kind per container"),
    ("requests != limits", pod({"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"},
                                                          "requests": {"nvidia.com/gpu": "2"}}}),
     "make requests equal to limits"),
    ("requests without limits", pod({"name": "m", "resources": {"requests": {"gpupack.io/gpu-memory": "100"}}}),
     "write it under limits"),
    ("memory beyond the largest GPU", pod(ctr({"gpupack.io/gpu-memory": "999999"})), "ask for whole GPUs"),
    ("memory annotation beyond", pod(ctr(), ann={"gpupack.io/gpu-memory": "1Ti"}), "largest GPU"),
    ("pod group without size", pod(ctr(GPU), ann={"gpupack.io/pod-group": "g"}), "gpupack.io/pod-group-min"),
    ("more GPUs than a node", pod(ctr({"nvidia.com/gpu": "9"})), "max per node is 8"),
    ("bad topology", pod(ctr(GPU), ann={"gpupack.io/topology": "ring"}), "nvlink, best-effort"),
    ("sets NVIDIA_VISIBLE_DEVICES", pod(ctr(GPU, env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])),
     "ask for GPUs with resources"),
    ("CPU pod sets NVIDIA_VISIBLE_DEVICES", pod(ctr("cpu", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0,1"}])),
     "would reach GPUs gpupack did not book"),
    ("NVIDIA_VISIBLE_DEVICES from a field", pod(ctr(GPU, env=[{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.annotations['x']"}}}])), "remove it"),
    ("envFrom prefix", pod(ctr(GPU, envFrom=[{"prefix": "NVIDIA_", "configMapRef": {"name": "x"}}])),
     "use another prefix"),
    ("pod writes the record", pod(ctr(GPU), ann={"gpupack.io/devices": "{}"}), "written by gpupack only"),
    ("old per-container key", pod(ctr(GPU), ann={"gpupack.io/visible-devices.main": "all"}), "written by gpupack only"),
    ("CDI annotation", pod(ctr("cpu"), ann={"cdi.k8s.io/x": "nvidia.com/gpu=all"}), "asks the runtime to inject CDI"),
]


@pytest.mark.parametrize(("why", "p", "hint"), DENIALS, ids=[d[0] for d in DENIALS])
def test_denials_say_what_to_write(why: str, p: dict[str, Any], hint: str) -> None:
    d = admit(p, POLICY)
    assert not d.allowed and d.result == "denied" and d.patch == ()
    assert d.message.startswith("gpupack: ") and hint in d.message, d.message


@pytest.mark.parametrize("p", [
    pod(ctr()),
    pod(ctr({"nvidia.com/gpu": "0"})),
    pod(ctr(), ann={"gpupack.io/pod-group": "g"}),  # malformed gpupack annotations on a CPU pod: still allowed
    pod(ctr(), ann={"gpupack.io/topology": "ring"}),
    pod(ctr(), schedulerName="my-scheduler"),
    {"metadata": {}, "spec": {"containers": "not a list"}},
])
def test_no_gpu_is_allowed_untouched(p: dict[str, Any]) -> None:
    d = admit(p, POLICY)
    assert d.allowed and d.patch == () and d.result == "skipped"


def test_whole_gpus_two_containers_and_init_get_no_env_only_the_scheduler() -> None:
    p = pod(ctr("a", GPU, env=[{"name": "KEEP", "value": "1"}]), ctr("b", {"nvidia.com/gpu": "2"}), ctr("cpu"),
            init=[ctr("warm", GPU)])
    out = apply(p, admit(p, POLICY))
    assert out["spec"]["schedulerName"] == "gpupack-scheduler"
    assert env_of(out, "a") == {"KEEP": "1"}  # devices come from the device plugin, not from env
    assert env_of(out, "b") == env_of(out, "cpu") == env_of(out, "warm", "initContainers") == {}
    assert out["spec"]["tolerations"] == [dict(TOLERATION)]
    assert "gpupack.io/gpu-share" not in str(out)


@pytest.mark.parametrize("value", ["void", "none", ""])
def test_visible_devices_that_grant_nothing_are_allowed(value: str) -> None:
    p = pod(ctr(GPU, env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": value}]))
    assert admit(p, POLICY).allowed


def test_long_container_names_are_fine_now_that_no_annotation_carries_them() -> None:
    p = pod(ctr("c" * 63, {"gpupack.io/gpu-compute": "10"}))
    out = apply(p, admit(p, POLICY))
    assert out["spec"]["containers"][0]["resources"]["limits"]["gpupack.io/gpu-share"] == "1"


def test_share_containers_each_get_one_slot_of_the_device_plugin() -> None:
    p = pod(ctr("mem", {"gpupack.io/gpu-memory": "1024"}),
            ctr("both", {"gpupack.io/gpu-memory": "1024", "gpupack.io/gpu-compute": "20"}), ctr("cpu"))
    out = apply(p, admit(p, POLICY))
    for i in (0, 1):
        res = out["spec"]["containers"][i]["resources"]
        assert res["limits"]["gpupack.io/gpu-share"] == res["requests"]["gpupack.io/gpu-share"] == "1"
    assert "gpupack.io/gpu-share" not in str(out["spec"]["containers"][2])
    assert env_of(out, "mem") == env_of(out, "both") == {}


def test_fraction_rewrite_with_no_resources_at_all() -> None:
    p = pod({"name": "main", "image": "x"}, ctr("side"), ann={"gpupack.io/gpu-fraction": "0.25"})
    out = apply(p, admit(p, POLICY))
    assert out["spec"]["containers"][0]["resources"] == {
        "limits": {"gpupack.io/gpu-compute": "25", "gpupack.io/gpu-share": "1"},
        "requests": {"gpupack.io/gpu-compute": "25", "gpupack.io/gpu-share": "1"}}
    assert read_pod(out).demand.compute_milli == 250


def test_model_affinity_is_anded_into_every_term() -> None:
    terms = [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
             {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    p = pod(ctr(GPU), ann={"gpupack.io/gpu-model": "A100-SXM4-80GB|h100"}, affinity=aff)
    out = apply(p, admit(p, POLICY))
    got = out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(got) == 2
    for t in got:
        expr = next(e for e in t["matchExpressions"] if e["key"] == PRODUCT_LABEL)
        assert {"NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"} <= set(expr["values"])
    assert got[0]["matchExpressions"][0]["key"] == "zone"


def test_model_affinity_on_a_pod_without_affinity_and_switch_off() -> None:
    p = pod(ctr(GPU), ann={"gpupack.io/gpu-model": "T4"})
    out = apply(p, admit(p, POLICY))
    expr = out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expr["values"] == ["NVIDIA-T4", "Tesla-T4", "Tesla-T4-SHARED"]
    off = admit(p, Policy(model_affinity=False))
    assert all("/spec/affinity" not in op["path"] for op in off.patch)


def test_other_scheduler_left_alone_with_a_warning() -> None:
    d = admit(pod(ctr(GPU), schedulerName="volcano"), POLICY)
    assert d.allowed and d.patch == () and "volcano" in d.warnings[0]
    d = admit(pod(ctr({"nvidia.com/gpu": "99"}), schedulerName="volcano"), POLICY)
    assert d.allowed  # not gpupack's pod: not gpupack's to refuse


def test_configured_names_and_runtime_class() -> None:
    p = pod(ctr(GPU))
    del p["spec"]["schedulerName"]
    del p["metadata"]["generateName"]
    policy = Policy(scheduler_name="gpu-sched", runtime_class="nvidia")
    d = admit(p, policy)
    out = jsonpatch.apply_patch(p, list(d.patch))
    assert (out["spec"]["schedulerName"], out["spec"]["runtimeClassName"]) == ("gpu-sched", "nvidia")
    assert admit(out, policy).patch == ()
    kept = admit(pod(ctr(GPU), runtimeClassName="kata"), policy)
    assert all(op["path"] != "/spec/runtimeClassName" for op in kept.patch)
    assert any("kata" in w for w in kept.warnings)


@pytest.mark.parametrize("tol", [
    {"operator": "Exists"},
    {"key": "nvidia.com/gpu", "operator": "Exists"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
])
def test_existing_toleration_that_covers_the_taint(tol: dict[str, str]) -> None:
    d = admit(pod(ctr(GPU), tolerations=[tol]), POLICY)
    assert all(not op["path"].startswith("/spec/tolerations") for op in d.patch)


def test_equal_toleration_does_not_cover_any_value() -> None:
    d = admit(pod(ctr(GPU), tolerations=[{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                            "effect": "NoSchedule"}]), POLICY)
    assert {"op": "add", "path": "/spec/tolerations/-", "value": dict(TOLERATION)} in d.patch


def test_rfc6901_escaping() -> None:
    assert escape("nvidia.com/gpu") == "nvidia.com~1gpu"
    assert escape("a~/b") == "a~0~1b"
    assert pointer("metadata", "annotations", "gpupack.io/mutated") == "/metadata/annotations/gpupack.io~1mutated"
    doc = {"a~/b": {"x/y": 1}}
    assert jsonpatch.apply_patch(doc, [{"op": "replace", "path": pointer("a~/b", "x/y"), "value": 2}]) == \
        {"a~/b": {"x/y": 2}}


def test_gfd_products_fold_back_to_their_catalog_model() -> None:
    assert set(GFD_PRODUCTS) == set(CATALOG)
    for model, values in GFD_PRODUCTS.items():
        for v in values:
            assert canonical_model(v) == model, v
            assert is_label_value(v), v


def test_product_values_for_unknown_and_odd_models() -> None:
    assert product_values(["RTX 4090", " "]) == ()
    assert unknown_models(["RTX 4090", "a100-sxm4-80gb", " "]) == ("RTX 4090",)
    assert product_values(["NVIDIA A100 80GB PCIe"]) == product_values(["A100-SXM4-80GB"])  # any spelling


def test_unknown_model_gets_no_affinity_but_a_warning() -> None:
    p = pod(ctr(GPU), ann={"gpupack.io/gpu-model": "T4|GeForce-RTX-4090"})
    d = admit(p, POLICY)
    out = apply(p, d)
    assert "affinity" not in out["spec"]
    assert any("GeForce-RTX-4090 not in gpupack's catalog" in w for w in d.warnings)
