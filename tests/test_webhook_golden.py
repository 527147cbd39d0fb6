"""Golden tests: the AdmissionReview bodies a real kube-apiserver sent, answered by the webhook app.

Each answer must have the v1 envelope, echo the uid, carry a base64 JSONPatch that applies (jsonpatch)
to the request's pod and yields what the fixture notes describe (schedulerName, the GPU toleration,
the annotation), plus gpupack's env fieldRefs; the deny case must answer 403 Forbidden.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
from fastapi.testclient import TestClient

from scheduler.translate.pod import read_pod
from webhook.app import create_app
from webhook.settings import WebhookSettings

PATCHED = ["gpu-pod", "mig-pod", "fraction-annotation-pod"]
# The capture webhook gave these requests a broken answer on purpose; gpupack must answer them properly.
BROKEN_ANSWERS = ["garbage", "wrongkind", "http500", "http500-ignore", "wrong-uid-fail", "bad-patch-fail",
                  "patch-fail-dryrun"]


def fixture(shared: Path, name: str) -> Any:
    return json.loads((shared / "fixtures" / "webhook" / f"admissionreview-{name}.json").read_text())


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(WebhookSettings(host="127.0.0.1", insecure_http=True)))


def post(client: TestClient, shared: Path, case: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST the captured body with the captured headers, to the path the apiserver used."""
    body = fixture(shared, f"{case}-request")
    path = body.pop("_request_path", "/mutate?timeout=5s")  # capture metadata, not part of the body
    hdr_file = shared / "fixtures" / "webhook" / f"admissionreview-{case}-request-headers.json"
    headers = json.loads(hdr_file.read_text()) if hdr_file.exists() else {"Content-Type": "application/json"}
    headers = {k: v for k, v in headers.items() if k not in ("Host", "Content-Length")}
    r = client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return body, r.json()


def patched_pod(body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    resp = answer["response"]
    assert resp["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(resp["patch"]))
    return jsonpatch.apply_patch(body["request"]["object"], ops)


@pytest.mark.parametrize("case", PATCHED)
def test_patched_as_the_fixture_describes(client: TestClient, shared: Path, case: str) -> None:
    body, answer = post(client, shared, case)
    want = fixture(shared, f"{case}-response")
    assert (answer["apiVersion"], answer["kind"]) == (want["apiVersion"], want["kind"])
    assert answer["response"]["uid"] == want["response"]["uid"] == body["request"]["uid"]
    assert answer["response"]["allowed"] is True
    pod = patched_pod(body, answer)
    expected = jsonpatch.apply_patch(body["request"]["object"], fixture(shared, f"{case}-patch-decoded"))
    assert pod["spec"]["schedulerName"] == expected["spec"]["schedulerName"] == "gpupack-scheduler"
    assert pod["spec"]["tolerations"] == expected["spec"]["tolerations"]
    assert pod["spec"]["tolerations"][-1] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert pod["metadata"]["annotations"]["gpupack.io/mutated"] == expected["metadata"]["annotations"][
        "gpupack.io/mutated"]
    # the captured patch (from before the device plugin) also wrote an env fieldRef; no more: kubelet's
    # Allocate through gpupack's device plugin hands the devices over
    assert not any(e.get("name") == "NVIDIA_VISIBLE_DEVICES" for e in pod["spec"]["containers"][0].get("env", []))
    assert read_pod(pod).demand == read_pod(body["request"]["object"]).demand
    kubernetes_validate.validate(pod, "1.36.0", strict=True)  # the apiserver's schema accepts the result


def test_fraction_annotations_become_resources(client: TestClient, shared: Path) -> None:
    body, answer = post(client, shared, "fraction-annotation-pod")
    pod = patched_pod(body, answer)
    res = pod["spec"]["containers"][0]["resources"]
    want = {"gpupack.io/gpu-memory": "40960", "gpupack.io/gpu-compute": "50"}  # 40Gi in MiB; 0.5 as percent
    assert {k: res["limits"][k] for k in want} == want
    assert {k: res["requests"][k] for k in want} == want
    assert res["requests"]["cpu"] == "100m"  # what was there stays
    assert res["limits"]["gpupack.io/gpu-share"] == res["requests"]["gpupack.io/gpu-share"] == "1"  # via Allocate
    demand = read_pod(pod).demand
    assert (demand.memory_mib, demand.compute_milli) == (40960, 500)


def test_deny_like_the_fixture(client: TestClient, shared: Path) -> None:
    body, answer = post(client, shared, "deny")
    want = fixture(shared, "deny-response")
    assert (answer["apiVersion"], answer["kind"]) == (want["apiVersion"], want["kind"])
    resp = answer["response"]
    assert resp["uid"] == want["response"]["uid"] == body["request"]["uid"]
    assert resp["allowed"] is False and "patch" not in resp
    assert {k: resp["status"][k] for k in ("code", "reason")} == {"code": 403, "reason": "Forbidden"}
    assert resp["status"]["message"].startswith(want["response"]["status"]["message"])  # + what to write instead
    assert "at most 8" in resp["status"]["message"]


@pytest.mark.parametrize("case", BROKEN_ANSWERS)
def test_proper_answer_where_the_capture_broke_it(client: TestClient, shared: Path, case: str) -> None:
    body, answer = post(client, shared, case)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == body["request"]["uid"]  # the all-zero uid was refused by the apiserver
    pod = patched_pod(body, answer)  # applies, unlike the capture's /spec/doesNotExist/x
    assert pod["spec"]["schedulerName"] == "gpupack-scheduler"


def test_dry_run_gets_the_same_answer(client: TestClient, shared: Path) -> None:
    dry, dry_answer = post(client, shared, "patch-fail-dryrun")
    assert dry["request"]["dryRun"] is True
    real, real_answer = post(client, shared, "gpu-pod")
    strip = ("name", "namespace", "labels", "generateName")
    a, b = patched_pod(dry, dry_answer), patched_pod(real, real_answer)
    # no side effects to skip: a dry run is answered exactly like the real request
    assert a["spec"]["schedulerName"] == b["spec"]["schedulerName"]
    assert a["spec"]["tolerations"] == b["spec"]["tolerations"]
    assert {k: v for k, v in a["metadata"].items() if k not in strip and k != "managedFields"} == \
        {k: v for k, v in b["metadata"].items() if k not in strip and k != "managedFields"}


def test_patch_is_idempotent_on_the_stored_pod(client: TestClient, shared: Path) -> None:
    for case in PATCHED:
        body, answer = post(client, shared, case)
        body["request"]["object"] = patched_pod(body, answer)
        again = client.post("/mutate", content=json.dumps(body).encode()).json()["response"]
        assert again["allowed"] is True and "patch" not in again, case
