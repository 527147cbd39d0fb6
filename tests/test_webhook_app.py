"""The HTTP edge: bad bodies get 400/413/408 with a message, other kinds pass, metrics count, nothing 500s."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jsonpatch
import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

import webhook.review
from webhook.app import _read_body, _TooLarge, create_app
from webhook.settings import WebhookSettings

SETTINGS = WebhookSettings(host="127.0.0.1", insecure_http=True, max_body_bytes=2**16)


def review(obj: Any = None, **request: Any) -> dict[str, Any]:
    req = {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
           "object": obj if obj is not None else gpu_pod(), "dryRun": False, **request}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def gpu_pod(n: str = "1") -> dict[str, Any]:
    return {"metadata": {"generateName": "p-"}, "spec": {"schedulerName": "default-scheduler", "containers": [
        {"name": "main", "resources": {"limits": {"nvidia.com/gpu": n}, "requests": {"nvidia.com/gpu": n}}}]}}


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(SETTINGS))


@pytest.mark.parametrize(("body", "why"), [
    (b"this is not json <html>", "not JSON"),
    (b'{"hello":"world"}', "not an AdmissionReview"),
    (b"[1, 2]", "not an AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "no request"),
    (json.dumps(review(uid="")).encode(), "no uid"),
    (json.dumps({**review(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(), "use admission.k8s.io/v1"),
    (json.dumps(review(obj="a string")).encode(), "no object"),
    (b"[" * 5000 + b"]" * 5000, "not JSON"),  # deeper than orjson's limit: refused, not a crash
])
def test_not_an_admission_review_is_400(client: TestClient, body: bytes, why: str) -> None:
    r = client.post("/mutate", content=body)
    assert r.status_code == 400
    doc = r.json()
    assert doc["kind"] == "Status" and doc["code"] == 400 and doc["message"].startswith("gpupack: ")
    assert why in doc["message"]


def test_body_over_the_cap_is_413(client: TestClient) -> None:
    big = json.dumps(review(gpu_pod())).encode() + b" " * SETTINGS.max_body_bytes
    r = client.post("/mutate", content=big)
    assert r.status_code == 413 and "bytes" in r.json()["message"]


def test_slow_body_times_out() -> None:
    async def run() -> None:
        async def receive() -> dict[str, Any]:
            await asyncio.sleep(30)  # a client that never finishes its body
            return {"type": "http.request", "body": b"", "more_body": False}

        req = Request({"type": "http", "method": "POST", "headers": []}, receive)
        with pytest.raises(TimeoutError):
            await _read_body(req, 1000, 0.05)

        chunks = iter([b"x" * 600, b"x" * 600])

        async def receive_big() -> dict[str, Any]:
            return {"type": "http.request", "body": next(chunks), "more_body": True}

        with pytest.raises(_TooLarge):  # no content-length: counted while streaming
            await _read_body(Request({"type": "http", "method": "POST", "headers": []}, receive_big), 1000, 1.0)

    asyncio.run(asyncio.wait_for(run(), 5))


@pytest.mark.parametrize("request_fields", [
    {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}},
    {"operation": "UPDATE"},
    {"subResource": "ephemeralcontainers"},
])
def test_other_kinds_and_operations_are_allowed_unpatched(client: TestClient, request_fields: dict[str, Any]) -> None:
    r = client.post("/mutate", content=json.dumps(review(**request_fields)).encode())
    assert r.status_code == 200
    assert r.json()["response"] == {"uid": "u-1", "allowed": True}


def _metrics(client: TestClient) -> str:
    return generate_latest(client.app.state.metrics.registry).decode()  # type: ignore[attr-defined]


def test_metrics_count_admissions_by_result(client: TestClient) -> None:
    client.post("/mutate", content=json.dumps(review()).encode())
    client.post("/mutate", content=json.dumps(review(gpu_pod("99"))).encode())
    client.post("/mutate", content=b"nope")
    assert client.get("/metrics").status_code == 404  # never on the TLS port next to /mutate: a port of its own
    text = _metrics(client)
    assert 'gpupack_webhook_admissions_total{result="patched"} 1.0' in text
    assert 'gpupack_webhook_admissions_total{result="denied"} 1.0' in text
    assert 'gpupack_webhook_admissions_total{result="invalid"} 1.0' in text
    assert "gpupack_webhook_admission_seconds_count 3.0" in text
    assert client.get("/healthz").text == "ok"


def test_a_bug_is_answered_not_crashed(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(webhook.review, "admit", boom)
    r = client.post("/mutate", content=json.dumps(review()).encode())
    assert r.status_code == 200
    resp = r.json()["response"]
    assert resp["uid"] == "u-1" and resp["allowed"] is False and resp["status"]["code"] == 500
    assert 'result="error"' in _metrics(client)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                    max_leaves=12)
POD_KEYS = st.sampled_from(["metadata", "spec", "containers", "initContainers", "resources", "limits", "requests",
                            "nvidia.com/gpu", "annotations", "gpupack.io/gpu-fraction", "env", "tolerations",
                            "affinity", "name", "schedulerName"])
POD_LIKE = st.recursive(JSON, lambda kids: st.dictionaries(POD_KEYS, kids, max_size=4) | st.lists(kids, max_size=2),
                        max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=POD_LIKE)
def test_any_pod_shaped_garbage_gets_an_answer(client: TestClient, obj: Any) -> None:
    r = client.post("/mutate", content=json.dumps(review(obj if obj is not None else {})).encode())
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        resp = r.json()["response"]
        assert resp["uid"] == "u-1" and (resp["allowed"] or resp["status"]["code"] == 403)


PATHS = [("metadata",), ("metadata", "annotations"), ("metadata", "annotations", "gpupack.io/gpu-fraction"),
         ("metadata", "annotations", "gpupack.io/gpu-model"), ("spec",), ("spec", "containers"),
         ("spec", "containers", 0), ("spec", "containers", 0, "name"), ("spec", "containers", 0, "env"),
         ("spec", "containers", 0, "resources"), ("spec", "containers", 0, "resources", "limits"),
         ("spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"), ("spec", "tolerations"),
         ("spec", "affinity"), ("spec", "affinity", "nodeAffinity"), ("spec", "schedulerName"),
         ("spec", "initContainers")]


def rich_gpu_pod() -> dict[str, Any]:
    p = gpu_pod("2")
    p["metadata"]["annotations"] = {"gpupack.io/gpu-model": "A100-SXM4-80GB", "gpupack.io/gpu-fraction": "0.5"}
    p["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    p["spec"]["tolerations"] = []
    p["spec"]["affinity"] = {"nodeAffinity": {}}
    return p


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), junk=JSON)
def test_a_gpu_pod_with_one_garbage_field_gets_an_answer(client: TestClient, path: tuple[Any, ...], junk: Any) -> None:
    pod = rich_gpu_pod()
    node: Any = pod
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = junk
    r = client.post("/mutate", content=json.dumps(review(pod)).encode())
    assert r.status_code == 200
    resp = r.json()["response"]
    assert resp["uid"] == "u-1"
    assert resp["allowed"] or (resp["status"]["code"] == 403 and resp["status"]["message"].startswith("gpupack: "))
    if "patch" in resp:  # whatever shape the pod had, the patch applies to it
        jsonpatch.apply_patch(pod, json.loads(base64.b64decode(resp["patch"])))
