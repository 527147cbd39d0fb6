"""The agent's loop and edges: publishing only on change, surviving failures, the heartbeat and probes,
and the CLI (`gpupack agent --once --print`, `python -m scheduler.agent.discover --print`)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from binpack.topology import dgx1_v100
from scheduler.agent import cli as agent_cli
from scheduler.agent.discover import Inventory, discover
from scheduler.agent.fake_nvml import board
from scheduler.agent.probe import check_file, check_url
from scheduler.agent.probe import main as probe_main
from scheduler.agent.publish import publish, run
from scheduler.translate.inventory import INVENTORY, decode_inventory


class _Resp:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.data = orjson.dumps(doc)


class NodeApi:
    """read_node / patch_node over one in-memory Node, recording the patches and their content type."""

    def __init__(self, annotations: dict[str, str] | None = None, fail: int = 0) -> None:
        self.node = {"metadata": {"name": "n1", "annotations": dict(annotations or {})}}
        self.patches: list[tuple[dict[str, Any], str]] = []
        self.fail = fail

    def read_node(self, name: str, **kw: Any) -> _Resp:
        assert name == "n1" and kw.get("_preload_content") is False and kw.get("_request_timeout")
        if self.fail:
            self.fail -= 1
            raise ConnectionError("apiserver unreachable")
        return _Resp(self.node)

    def patch_node(self, name: str, body: dict[str, Any], **kw: Any) -> None:
        self.patches.append((body, kw["_content_type"]))
        self.node["metadata"]["annotations"].update(body["metadata"]["annotations"])


def test_publish_patches_only_when_the_annotation_differs() -> None:
    api = NodeApi({"other": "kept"})
    text = discover(board("t4-pcie")).annotation()
    assert publish(api, "n1", text) is True
    assert api.patches == [({"metadata": {"annotations": {INVENTORY: text}}}, "application/merge-patch+json")]
    assert publish(api, "n1", text) is False and len(api.patches) == 1
    api.node["metadata"]["annotations"].pop(INVENTORY)  # someone removed it: the next pass restores it
    assert publish(api, "n1", text) is True and api.node["metadata"]["annotations"]["other"] == "kept"


def test_loop_survives_api_and_discovery_failures(caplog: pytest.LogCaptureFixture) -> None:
    api = NodeApi(fail=2)
    fakes = iter([RuntimeError("surprise")] + [None] * 10)

    def found() -> Inventory:
        err = next(fakes)
        if err:
            raise err
        return discover(board("dgx1-v100"))

    stop = threading.Event()
    passes = [0]

    def count() -> Inventory:
        passes[0] += 1
        if passes[0] == 5:
            stop.set()
        return found()

    made = run(count, 0.001, stop, api=api, node="n1")
    assert made == 5  # stop ends the loop; failures never did
    assert len(api.patches) == 1  # the first pass raised, two reads failed, then one patch, then nothing new
    _gpus, nv, pc = decode_inventory(api.node["metadata"]["annotations"][INVENTORY])
    assert (nv, pc) == dgx1_v100()
    assert "surprise" in caplog.text and "apiserver unreachable" in caplog.text


def test_print_mode_emits_each_change_and_never_calls_kubernetes(tmp_path: Path) -> None:
    out: list[str] = []
    beat = tmp_path / "alive"
    assert run(lambda: discover(board("t4-pcie")), 60, threading.Event(), emit=out.append, heartbeat=beat,
               once=True) == 1
    assert len(out) == 1 and orjson.loads(out[0])["gpus"][0]["model"] == "T4"
    assert check_file(beat, 10) is None
    assert "last beat" in (check_file(beat, 10, now=time.time() + 60) or "")
    assert "No such file" in (check_file(tmp_path / "missing", 10) or "")


def test_url_probe_against_a_loopback_server() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert check_url(f"{base}/healthz", 2) is None
        assert "503" in (check_url(f"{base}/readyz", 2) or "")
        assert probe_main(["--url", f"{base}/healthz"]) == 0
    finally:
        server.shutdown()
        t.join(5)
    assert probe_main(["--url", f"{base}/healthz", "--timeout", "0.5"]) == 1  # nothing listens any more


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """gpupack (test copy)."""

    agent_cli.register(app)
    return app


def test_cli_once_print_on_a_fake_board() -> None:
    res = CliRunner().invoke(_app(), ["agent", "--once", "--print", "--fake", "dgx1-v100"])
    assert res.exit_code == 0, res.output
    doc = orjson.loads(res.stdout)
    assert doc["version"] == 1 and len(doc["gpus"]) == 8
    assert (tuple(map(tuple, doc["nvlink"])), tuple(map(tuple, doc["pcie"]))) == dgx1_v100()


def test_cli_refuses_to_run_without_a_node_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    res = CliRunner().invoke(_app(), ["agent", "--once", "--fake", "t4-pcie"])
    assert res.exit_code == 2 and "NODE_NAME" in res.output
    res = CliRunner().invoke(_app(), ["agent", "--once", "--print", "--fake", "nope"])
    assert res.exit_code == 2 and "unknown fake board" in res.output


def test_cli_publishes_to_the_node_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    api = NodeApi()
    monkeypatch.setattr(agent_cli, "_kube_api", lambda: api)
    res = CliRunner().invoke(_app(), ["agent", "--once", "--fake", "a100-nvswitch"], env={"NODE_NAME": "n1"})
    assert res.exit_code == 0, res.output
    assert decode_inventory(api.node["metadata"]["annotations"][INVENTORY])[0] == discover(board("a100-nvswitch")).gpus


def test_discover_module_prints_without_kubernetes() -> None:
    out = subprocess.run([sys.executable, "-m", "scheduler.agent.discover", "--print", "--fake", "no-library"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert orjson.loads(out.stdout)["status"] == "unavailable"
    assert "LibraryNotFound" in out.stderr


def test_cli_dynamic_mig_once_creates_what_the_pods_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = board("a100-nvswitch")
    want = {"v": 1, "node": "n1", "kind": "mig", "gpus": [], "mig": [{"gpu": 5, "profile": "2g.20gb", "start": 2}]}
    pod = {"metadata": {"uid": "u1", "name": "p", "namespace": "ml",
                        "annotations": {"gpupack.io/devices": orjson.dumps(want).decode()}}, "status": {}}

    class Api(NodeApi):
        def list_pod_for_all_namespaces(self, field_selector: str = "", **kw: Any) -> _Resp:
            assert field_selector == "spec.nodeName=n1"
            return _Resp({"items": [pod], "metadata": {"resourceVersion": "1"}})

    api = Api()
    monkeypatch.setattr(agent_cli, "_kube_api", lambda: api)
    monkeypatch.setattr(agent_cli, "_nvml", lambda name: fake)
    res = CliRunner().invoke(_app(), ["agent", "--once", "--dynamic-mig", "--node-name", "n1"])
    assert res.exit_code == 0, res.output
    assert [(m.profile, m.start) for m in discover(fake).gpus[5].mig_instances] == [("2g.20gb", 2)]
    published, _, _ = decode_inventory(api.node["metadata"]["annotations"][INVENTORY])
    assert {g.mig_mode.name for g in published} == {"NONE", "DYNAMIC"}
