"""The in-memory API server's claim writes answer like the real kube-apiserver 1.36.2 did for every recorded
status write (tests/data/dra/kai/validation/status-write-cases.json, V1-V15 and R1/R4): the same HTTP status,
so the allocate-mode tests that run against it check gpupack's writes against the apiserver's rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from dra_support import DRA, load

from scheduler.state.dra_memapi import DraMemoryApi
from scheduler.state.kubeapi import ApiError

CASES = [c for c in load("kai/validation/status-write-cases.json") if c.get("method") == "PUT resourceclaims/status"]
STORED = {p.stem.removeprefix("claim-"): load(str(p.relative_to(DRA)))
          for p in (DRA / "kai/validation/claims-as-stored").glob("claim-*.json")}


def _name(case: dict[str, Any]) -> str:
    r = case["response"]
    return str((r.get("metadata") or {}).get("name") or (r.get("details") or {}).get("name"))


def _before(case: dict[str, Any]) -> dict[str, Any]:
    """The claim as it was before the case's write: unallocated, or as V3 left it for the V6 cases."""
    c = copy.deepcopy(STORED[_name(case)])
    c["status"] = {}
    if case["case"].startswith("V6"):
        (v3,) = [x for x in CASES if x["case"] == "V3"]
        c["status"] = copy.deepcopy(v3["request_status"])
    c["metadata"].pop("resourceVersion", None)
    return c


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_the_memory_apiserver_answers_each_recorded_status_write_as_the_real_one_did(case: dict[str, Any]) -> None:
    api = DraMemoryApi(claims=[_before(case)])
    api.binding_allowed = case["case"] not in ("R1", "R2")  # R1/R2: no cluster-wide resourceclaims/binding
    meta = _before(case)["metadata"]
    body = {"metadata": {"name": meta["name"], "namespace": meta["namespace"]}, "status": case["request_status"]}
    try:
        stored = api.update_resource_claim_status(meta["namespace"], meta["name"], body)
        got = 200
    except ApiError as e:
        got = e.status
        assert e.message.split(":")[0] in case["response"]["message"]
        stored = None
    assert got == case["http_status"], case["what"]
    if stored is not None:
        assert stored["status"] == case["response"]["status"]


def test_a_put_on_the_main_resource_drops_status_and_a_stale_resource_version_conflicts() -> None:
    c = copy.deepcopy(STORED["v-no-reservedfor"])
    c["metadata"].pop("resourceVersion")
    api = DraMemoryApi(claims=[c])
    cur = api.get_resource_claim("gpupack-dra", "v-no-reservedfor")
    assert cur is not None
    (v3,) = [x for x in CASES if x["case"] == "V3"]
    new = api.update_resource_claim("gpupack-dra", "v-no-reservedfor",
                                    {**cur, "status": v3["request_status"],
                                     "metadata": {**cur["metadata"], "finalizers": ["f"]}})
    assert new["status"] == {} and new["metadata"]["finalizers"] == ["f"]  # V16
    with pytest.raises(ApiError) as e:
        api.update_resource_claim_status("gpupack-dra", "v-no-reservedfor", {**cur, "status": v3["request_status"]})
    assert e.value.status == 409
