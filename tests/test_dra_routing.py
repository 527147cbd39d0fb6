"""Allocate mode per DeviceClass and per profile (scheduler/dra/routing.py): with GPUPACK_DRA_ALLOCATE_CLASSES and
GPUPACK_DRA_ALLOCATE_PROFILES, gpupack allocates only its classes and only for pods of profiles without
DynamicResources; a claim of another class there, or of its classes in a DynamicResources profile, is refused at
filter (every node, unresolvable) and at bind with the reason; other pods are observed and adopted."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from dra_support import load, nodes, slices
from extender_support import post, wait_for
from fastapi.testclient import TestClient
from test_dra_allocate import KAI, _bind, _check_writes, _fresh_claim, _fresh_pod, _one_gpu, _put

from scheduler.dra.routing import Routing
from scheduler.dra.state import DraState
from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.dra_memapi import DraMemoryApi

Obj = dict[str, Any]
MIG = {"devices": {"requests": [{"name": "mig", "exactly": {
    "deviceClassName": "mig.nvidia.com", "allocationMode": "ExactCount", "count": 1,
    "selectors": [{"cel": {"expression": "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'"}}]}}]}}
ROOT = Path(__file__).resolve().parents[1]
NIC = {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "nic.example.com", "count": 1}}]}}


def _claim(spec: Obj) -> Obj:
    return {"metadata": {"name": "c", "namespace": "ns"}, "spec": spec}


def test_the_settings_parse_and_a_class_gpupack_cannot_allocate_stops_start_up() -> None:
    assert Routing.parse("", "") == Routing(frozenset({"gpu.nvidia.com", "mig.nvidia.com"}), frozenset())
    assert Routing.parse(" gpu.nvidia.com ,", "a,b") == Routing(frozenset({"gpu.nvidia.com"}), frozenset({"a", "b"}))
    with pytest.raises(ValueError, match=r"\['nic.example.com'\] not allocatable by gpupack"):
        Routing.parse("nic.example.com", "")
    with pytest.raises(ValueError, match="not allocatable"):
        create_app(Settings(dra_mode="allocate", dra_allocate_classes="nic.example.com"),
                   api=DraMemoryApi(nodes(), [], slices(), []))


@pytest.mark.parametrize(("profile", "spec", "route", "why"), [
    ("gpupack-allocate", _one_gpu(), "allocate", ""),
    ("gpupack-allocate", MIG, "refuse", "device class 'mig.nvidia.com' is not one gpupack allocates "
                                        "(it allocates ['gpu.nvidia.com']), and profile gpupack-allocate has "
                                        "DynamicResources disabled: nothing would allocate it"),
    ("gpupack-allocate", NIC, "refuse", "'nic.example.com' is not one gpupack allocates"),
    ("gpupack-scheduler", MIG, "observe", ""),
    ("gpupack-scheduler", NIC, "observe", ""),
    ("gpupack-scheduler", _one_gpu(), "refuse", "device class 'gpu.nvidia.com' is allocated by gpupack in "
                                                "profile(s) ['gpupack-allocate'] only; in profile gpupack-scheduler "
                                                "kube-scheduler's DynamicResources would allocate it too"),
    ("", _one_gpu(), "refuse", "in profile default-scheduler"),
])
def test_each_claim_goes_to_one_allocator(profile: str, spec: Obj, route: str, why: str) -> None:
    r = Routing(frozenset({"gpu.nvidia.com"}), frozenset({"gpupack-allocate"}))
    got, reason = r.route(profile, [_claim(spec)])
    assert got == route and why in reason and bool(reason) == bool(why)
    assert r.route(profile, []) == ("observe" if profile != "gpupack-allocate" else "allocate", "")


def test_every_profile_allocates_when_none_is_named() -> None:
    r = Routing.parse("", "")
    assert r.route("anything", [_claim(MIG)]) == ("allocate", "")
    assert r.route("anything", [_claim(NIC)])[0] == "refuse"


@contextmanager
def _app() -> Iterator[tuple[TestClient, DraMemoryApi, DraState]]:
    api = DraMemoryApi(nodes(), [], slices(), [])
    app = create_app(Settings(dra_mode="allocate", dra_allocate_classes="gpu.nvidia.com",
                              dra_allocate_profiles="gpupack-allocate"), api=api)
    with TestClient(app) as client:
        wait_for(lambda: app.state.gpupack.state.ready)
        yield client, api, app.state.dra


def _filter(client: TestClient, pod: Obj) -> Obj:
    req = copy.deepcopy(KAI["kai-1gpu"]["request"])
    req["Pod"] = pod
    out: Obj = post(client, "filter", req)
    return out


def test_a_gpupack_class_in_the_allocating_profile_is_allocated_by_gpupack() -> None:
    with _app() as (client, api, dra):
        c, pod = _fresh_claim(0, _one_gpu()), _fresh_pod(0, "c0")
        pod["spec"]["schedulerName"] = "gpupack-allocate"
        _put(api, dra, pod, [c])
        assert len((_filter(client, pod).get("Nodes") or {}).get("items") or []) == 3
        assert _bind(client, pod, "dra-a100-node") == {"Error": ""}
        _check_writes(api, pod, c, "dra-a100-node", 1)


@pytest.mark.parametrize(("profile", "spec", "why"), [
    ("gpupack-allocate", MIG, "nothing would allocate it"),
    ("gpupack-scheduler", _one_gpu(), "DynamicResources would allocate it too"),
])
def test_a_claim_routed_to_no_allocator_is_refused_at_filter_and_bind(profile: str, spec: Obj, why: str) -> None:
    with _app() as (client, api, dra):
        c, pod = _fresh_claim(0, spec), _fresh_pod(0, "c0")
        pod["spec"]["schedulerName"] = profile
        _put(api, dra, pod, [c])
        got = _filter(client, pod)
        assert not (got.get("Nodes") or {}).get("items")
        assert len(got["FailedAndUnresolvableNodes"]) == 3
        assert why in got["FailedAndUnresolvableNodes"]["dra-h100-node"], got  # the others: no MIG there at all
        assert why in _bind(client, pod, "dra-h100-node")["Error"]
        assert api.claim_writes == []


def test_a_dynamicresources_profile_pod_is_observed_and_its_allocation_adopted() -> None:
    """A MIG claim of a pod of gpupack-scheduler (DynamicResources on): kube-scheduler allocated it in PreBind
    (the fixture claim as it stored it); gpupack passes the nodes, binds by adoption and writes no claim."""
    with _app() as (client, api, dra):
        done = copy.deepcopy(load("claims/scheduled-ncc-false/after/claim-dra-mig-1g10gb-gpu-5q4vp.json"))
        meta = done["metadata"]
        pod = _fresh_pod(0, meta["name"])
        pod["metadata"]["namespace"] = meta["namespace"]
        pod["spec"]["schedulerName"] = "gpupack-scheduler"
        done["status"]["reservedFor"] = [{"resource": "pods", "name": "p0", "uid": pod["metadata"]["uid"]}]
        _put(api, dra, pod, [done])
        node = done["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        got = _filter(client, pod)
        assert not got.get("FailedAndUnresolvableNodes"), got
        assert _bind(client, pod, node) == {"Error": ""}
        assert api.claim_writes == []
        assert api.get_pod(meta["namespace"], "p0")["spec"]["nodeName"] == node


def _render(overlay: str) -> list[Obj]:
    exe = shutil.which("kubectl")
    assert exe
    out = subprocess.run([exe, "kustomize", str(ROOT / "manifests" / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _config_and_env(objs: list[Obj]) -> tuple[Obj, dict[str, str]]:
    (cm,) = [d for d in objs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gpupack-scheduler-conf")]
    (dep,) = [d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gpupack-scheduler"]
    (ext,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "extender"]
    return yaml.safe_load(cm["data"]["scheduler-config.yaml"]), {e["name"]: e.get("value", "") for e in ext["env"]}


def test_the_per_class_overlay_gives_each_class_one_allocator_per_profile() -> None:
    cfg, env = _config_and_env(_render("dra-allocate-per-class"))
    routing = Routing.parse(env["GPUPACK_DRA_ALLOCATE_CLASSES"], env["GPUPACK_DRA_ALLOCATE_PROFILES"])
    assert env["GPUPACK_DRA_MODE"] == "allocate"
    off = {p["schedulerName"] for p in cfg["profiles"]
           if {"name": "DynamicResources"} in ((p.get("plugins") or {}).get("multiPoint") or {}).get("disabled", [])}
    assert off == routing.profiles == {"gpupack-allocate"}  # gpupack allocates exactly where DRA does not
    assert routing.classes == {"gpu.nvidia.com"}
    assert {p["schedulerName"] for p in cfg["profiles"]} == {"gpupack-scheduler", "gpupack-allocate"}
    base, _ = _config_and_env(_render("dra-allocate"))
    assert cfg["extenders"] == base["extenders"]  # every profile's pods reach gpupack, claim-only ones included
    assert all(p["pluginConfig"] == base["profiles"][0]["pluginConfig"] for p in cfg["profiles"])
    assert {k: v for k, v in cfg.items() if k != "profiles"} == {k: v for k, v in base.items() if k != "profiles"}
