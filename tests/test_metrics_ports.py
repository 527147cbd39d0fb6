"""Every component's metrics port, as Prometheus sees it: `gpupack serve`, `gpupack webhook` and
`gpupack agent` run as processes, each scraped on its own metrics port and parsed by prometheus_client's
own parser; the serving ports keep no /metrics where it must not be (the webhook's). The same runs check
the one log format: JSON lines naming the pod and the node, uvicorn's access log included."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from typer.testing import CliRunner

from scheduler.cli import app

WAIT_S = 60.0  # start-up on 2 busy cores (numpy, OR-Tools, FastAPI imports)


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together while chosen, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@contextmanager
def _gpupack(*argv: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`python -m scheduler.cli ARGV...` until the block ends; then its stderr lines (in the list)."""
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        yield proc, lines
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
        lines.extend(err.splitlines())


def _until(proc: subprocess.Popen[str], what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        assert proc.poll() is None, f"{what}: the process exited with {proc.returncode}"
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S:g} s"
        time.sleep(0.2)


def scrape(port: int) -> dict[str, list[Sample]]:
    """Family name -> samples, through prometheus_client's parser (what Prometheus' text format must pass)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, list[Sample]], family: str, sample: str, **labels: str) -> float:
    hits = [s.value for s in fams[family] if s.name == sample and labels.items() <= s.labels.items()]
    assert hits, f"no {sample}{labels} in {fams.get(family)}"
    return float(sum(hits))


def _json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in lines if x.startswith("{")]


POD = {"metadata": {"name": "train", "namespace": "ml", "uid": "u-train"},
       "spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]}}
HUGE = {"metadata": {"name": "huge", "namespace": "ml", "uid": "u-huge"},
        "spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "16"}}}]}}


def test_the_extender_is_scraped_on_its_metrics_port() -> None:
    port, mport = _free_ports(2)
    with _gpupack("serve", "--port", str(port), "--metrics-port", str(mport), "--log-format", "json",
                  "--access-log") as (proc, lines):
        base = f"http://127.0.0.1:{port}"
        _until(proc, "gpupack serve ready", lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200)
        r = httpx.post(f"{base}/filter", json={"Pod": POD, "NodeNames": ["dgx-h100-0", "t4-0"]}, timeout=10)
        assert "dgx-h100-0" in r.json()["NodeNames"]
        r = httpx.post(f"{base}/bind", json={"PodName": "train", "PodNamespace": "ml", "PodUID": "u-train",
                                             "Node": "dgx-h100-0"}, timeout=10)
        assert r.json() == {"Error": ""}
        # a bind that fails: the pod is unknown, so the Event and the log line say why
        r = httpx.post(f"{base}/bind", json={"PodName": "ghost", "PodNamespace": "ml", "PodUID": "u-ghost",
                                             "Node": "dgx-h100-0"}, timeout=10)
        assert "unknown" in r.json()["Error"]
        httpx.post(f"{base}/filter", json={"Pod": HUGE, "NodeNames": ["dgx-h100-0"]}, timeout=10)
        fams = scrape(mport)
        assert _value(fams, "gpupack_binds", "gpupack_binds_total", result="ok") == 1
        assert _value(fams, "gpupack_extender_request_seconds", "gpupack_extender_request_seconds_count",
                      verb="filter") == 2
        assert _value(fams, "gpupack_gpus_allocated", "gpupack_gpus_allocated", model="H100-SXM5-80GB") == 4
        assert _value(fams, "gpupack_gpus", "gpupack_gpus", model="H100-SXM5-80GB") == 16
        assert {s.labels["model"] for s in fams["gpupack_mig_slices"]} >= {"A100-SXM4-80GB"}
        assert "gpupack_pending_pods" in fams  # demo mode: no watch, so no pending pods (tests/test_observability.py)
        assert _value(fams, "gpupack_events", "gpupack_events_total", reason="GpupackBindFailed") == 1
        assert "gpupack_pod_groups" in fams and "gpupack_ready" in fams
        # the verbs' port stays on the loopback for kube-scheduler; its /metrics is the same registry
        assert "gpupack_binds_total" in httpx.get(f"{base}/metrics", timeout=10).text
    logs = _json_lines(lines)
    assert len(logs) == len([x for x in lines if x.strip()]), "every line is one JSON object"
    failed = [x for x in logs if x["logger"] == "gpupack.events" and "GpupackBindFailed" in x["msg"]]
    assert failed and failed[0]["pod"] == "ml/ghost" and failed[0]["node"] == "dgx-h100-0"
    access = [x for x in logs if x["logger"] == "uvicorn.access" and x.get("path") == "/bind"]
    assert access and access[0]["status"] == 200 and access[0]["method"] == "POST"
    assert any(x["logger"].startswith("uvicorn") and "shutdown" in x["msg"].lower() for x in logs)


def _review(name: str, gpus: str) -> dict[str, Any]:
    pod = {"metadata": {"name": name, "namespace": "ml"}, "spec": {"containers": [
        {"name": "main", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": f"u-{name}", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "operation": "CREATE", "object": pod, "dryRun": False}}


def test_the_webhook_serves_metrics_on_their_own_port_only() -> None:
    port, mport = _free_ports(2)
    with _gpupack("webhook", "--insecure-http", "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
                  str(mport), "--log-format", "json", "--access-log") as (proc, lines):
        base = f"http://127.0.0.1:{port}"
        _until(proc, "gpupack webhook up", lambda: httpx.get(f"{base}/healthz", timeout=2).text == "ok")
        assert httpx.post(f"{base}/mutate", json=_review("ok", "1"), timeout=10).json()["response"]["allowed"]
        denied = httpx.post(f"{base}/mutate", json=_review("big", "99"), timeout=10).json()["response"]
        assert denied["allowed"] is False
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 404  # nothing next to /mutate
        _until(proc, "metrics port", lambda: httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=2).is_success)
        fams = scrape(mport)
        assert _value(fams, "gpupack_webhook_admissions", "gpupack_webhook_admissions_total", result="denied") == 1
        assert _value(fams, "gpupack_webhook_admission_seconds", "gpupack_webhook_admission_seconds_count") == 2
        assert "process_cpu_seconds" in fams
    logs = _json_lines(lines)
    assert len(logs) == len([x for x in lines if x.strip()]), "every line is one JSON object"
    denial = [x for x in logs if x["logger"] == "gpupack.webhook" and x["msg"].startswith("denied")]
    assert denial and denial[0]["pod"] == "ml/big"
    assert any(x["logger"] == "uvicorn.access" and x.get("path") == "/mutate" for x in logs)


def test_the_agent_exports_its_own_metrics() -> None:
    (mport,) = _free_ports(1)
    with _gpupack("agent", "--print", "--fake", "dgx1-v100-gpu5-lost", "--interval", "1", "--node-name", "gpu-n1",
                  "--metrics-port", str(mport), "--log-format", "json", "--no-device-plugin") as (proc, lines):
        def passed() -> bool:
            fams = scrape(mport)
            return any(s.labels.get("result") == "ok" and s.value >= 2 for s in fams.get("gpupack_agent_passes", []))

        _until(proc, "two agent passes", passed)
        fams = scrape(mport)
        assert _value(fams, "gpupack_agent_gpus", "gpupack_agent_gpus", health="unhealthy") == 1
        assert _value(fams, "gpupack_agent_gpus", "gpupack_agent_gpus", health="healthy") == 7
        assert _value(fams, "gpupack_agent_nvml_errors", "gpupack_agent_nvml_errors_total", call="device") >= 2
        age = _value(fams, "gpupack_agent_inventory_age_seconds", "gpupack_agent_inventory_age_seconds")
        assert 0 <= age < WAIT_S
        assert _value(fams, "gpupack_agent_inventory_ok", "gpupack_agent_inventory_ok") == 1
    logs = _json_lines(lines)  # (--print also writes its device table on stderr: not log lines)
    assert logs and all(x["node"] == "gpu-n1" for x in logs)


@contextmanager
def _taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


@pytest.mark.parametrize(("argv", "says"), [
    (["serve", "--log-format", "xml"], "bad setting GPUPACK_LOG_FORMAT (--log-format): Value error, must be one of"),
    (["serve", "--port", "9000", "--metrics-port", "9000"], "metrics_port and port are both 9000"),
    (["webhook", "--insecure-http", "--host", "127.0.0.1", "--log-format", "xml"], "must be one of text, json"),
    (["webhook", "--insecure-http", "--host", "127.0.0.1", "--port", "9401"], "metrics_port and port are both 9401"),
    (["agent", "--once", "--print", "--fake", "t4-pcie", "--log-format", "xml"], "must be one of text, json"),
])
def test_bad_log_formats_and_port_clashes_stop_startup(argv: list[str], says: str) -> None:
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split())


def test_a_taken_metrics_port_stops_startup() -> None:
    with _taken() as port:
        for argv in (["serve", "--metrics-port", str(port)],
                     ["agent", "--print", "--fake", "t4-pcie", "--no-device-plugin", "--metrics-port", str(port)]):
            result = CliRunner().invoke(app, argv, env={"COLUMNS": "300"})
            assert result.exit_code == 2, (argv, result.output)
            assert str(port) in result.output or "in use" in result.output, result.output
