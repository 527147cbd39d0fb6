"""A claim-only pod's GPU ask, translated at the edge from its ResourceClaims (golden on the fixture pods)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from dra_support import load

from binpack import Demand, DemandKind
from scheduler.dra.claims import read_claim
from scheduler.dra.demand import claim_refs, claims_demand, uses_claims
from scheduler.translate.pod import read_pod

BEFORE = "claims/scheduled-ncc-true/before/"
HOST = {"cpu_milli": 100, "host_memory_mib": 128}
GOLDEN = {
    "ncc-1gpu": ("claim-ncc-1gpu-gpu-j2dtd", Demand.whole(1, **HOST)),
    "ncc-2gpu-pcieroot": ("claim-ncc-2gpu-pcieroot-gpu-kgrk7", Demand.whole(2, **HOST)),
    "ncc-h100-cel": ("claim-ncc-h100-cel-gpu-h4d26",
                     Demand.whole(1, models=frozenset({"NVIDIA H100 80GB HBM3"}), **HOST)),
    "ncc-mig-1g10gb": ("claim-ncc-mig-1g10gb-gpu-4rwr4", Demand.mig("1g.10gb", 1, **HOST)),
}


@pytest.mark.parametrize("pod", sorted(GOLDEN))
def test_each_fixture_pod_gets_its_claims_demand(pod: str) -> None:
    obj = load(f"{BEFORE}pod-{pod}.json")
    claim_file, want = GOLDEN[pod]
    assert uses_claims(obj) and claim_refs(obj).names == (claim_file.removeprefix("claim-"),)
    req = read_pod(obj)
    assert req.demand.kind is DemandKind.NONE  # nothing in resources: gpupack would have no say
    got, why = claims_demand(req, [read_claim(load(f"{BEFORE}{claim_file}.json"))])
    assert (got.demand, why) == (want, "")
    assert got.demand.models == want.models and "H100-SXM5-80GB" in GOLDEN["ncc-h100-cel"][1].models


def test_an_allocated_claim_asks_for_nothing_more() -> None:
    pod = load("claims/scheduled-ncc-true/after/pod-ncc-1gpu.json")
    claim = read_claim(load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json"))
    req = read_pod(pod)
    assert claims_demand(req, [claim]) == (req, "")


PROFILE = "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'"


def _claim(**exactly: Any) -> Any:
    doc = copy.deepcopy(load(f"{BEFORE}claim-ncc-1gpu-gpu-j2dtd.json"))
    doc["spec"]["devices"]["requests"][0]["exactly"].update(exactly)
    return doc


@pytest.mark.parametrize(("claims", "why"), [
    ([_claim(allocationMode="All")], "allocation mode All"),
    ([_claim(deviceClassName="mig.nvidia.com")], "without a profile selector"),
    ([_claim(), _claim(deviceClassName="mig.nvidia.com", selectors=[{"cel": {"expression": PROFILE}}])],
     "more than one kind"),
    ([_claim(count=40)], "demand.count"),
])
def test_what_gpupack_cannot_express_is_left_to_dra_with_a_reason(claims: list[Any], why: str) -> None:
    req = read_pod(load(f"{BEFORE}pod-ncc-1gpu.json"))
    got, reason = claims_demand(req, [read_claim(c) for c in claims])
    assert got is req and why in reason


def test_other_device_classes_and_unread_selectors() -> None:
    req = read_pod(load(f"{BEFORE}pod-ncc-1gpu.json"))
    nic = read_claim(_claim(deviceClassName="rdma.example.com"))
    assert claims_demand(req, [nic]) == (req, "")
    odd = read_claim(_claim(selectors=[{"cel": {"expression": "device.capacity['gpu.nvidia.com'].memory >= '40Gi'"}}]))
    assert odd.requests[0].other_selectors  # DRA applies it; gpupack counts the GPU all the same
    assert claims_demand(req, [odd])[0].demand == Demand.whole(1, **HOST)


def test_claim_refs_direct_template_pending_and_extended() -> None:
    assert claim_refs(load("prealloc/pod-prealloc-no-nodeselector.json")).names == ("v-no-nodeselector",)
    waiting = claim_refs(load("claims/no-controller/pod-waiting-for-claim.json"))
    assert waiting.names == () and waiting.pending == ("gpu",)
    ext = load("extended-resource/pod-extres-gpu1.json")
    assert claim_refs(ext).names == ("extres-gpu1-extended-resources-2pzwm",) and not uses_claims(ext)
    assert claim_refs({"spec": "junk"}).names == ()
