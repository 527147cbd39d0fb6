"""`gpupack report` and `gpupack explain` on dumps made from the captured fixtures and a generated
cluster, and against a fake apiserver on 127.0.0.1 (paged lists; a context that may not list pods)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from extender_support import fixture_nodes, pod
from extender_support import load as load_fixture
from typer.testing import CliRunner

from benchmarks.report_bench import make_dump, run_report_bench
from binpack import Placement
from scheduler.cli import app
from scheduler.report.analyze import pending, per_model, read
from scheduler.report.dump import DumpError, load, split
from scheduler.report.explain import explain
from scheduler.report.replay import POLICIES, replay
from scheduler.translate.devices import annotations_for
from scheduler.translate.inventory import node_from_k8s
from scheduler.translate.pod import read_pod

Obj = dict[str, Any]
runner = CliRunner()


def _fixture_dump(shared: Path) -> Obj:
    """The capture cluster (2 x 8 A100, 4 H100 + 2 MIG GPUs, a CPU node) with pods of every state."""
    nodes = fixture_nodes(shared)
    node_a = node_from_k8s(next(n for n in nodes if n["metadata"]["name"] == "gpu-node-a"))
    mine = pod("mine", {"nvidia.com/gpu": "4"}, node="gpu-node-a")
    mine["metadata"]["annotations"] = annotations_for(read_pod(mine), Placement("gpu-node-a", gpus=(0, 1, 2, 3)),
                                                      node_a)
    foreign = pod("foreign", {"nvidia.com/gpu": "8"}, node="gpu-node-b")  # another scheduler's, no record
    done = pod("done", {"nvidia.com/gpu": "8"}, node="gpu-node-a", phase="Succeeded")  # holds nothing
    huge = pod("huge", {"nvidia.com/gpu": "9"})
    captured = {**load_fixture(shared, "filter-nodes-request.json")["Pod"], "kind": "Pod"}  # 1 GPU, pending
    pods = [mine, foreign, done, huge, captured]
    for i, p in enumerate(pods):
        p["metadata"]["creationTimestamp"] = f"2026-12-01T00:00:0{i}Z"
    return {"apiVersion": "v1", "kind": "List", "items": [{**n, "kind": "Node"} for n in nodes] + pods}


@pytest.fixture()
def fixture_file(shared: Path, tmp_path: Path) -> Path:
    path = tmp_path / "dump.json"
    path.write_bytes(orjson.dumps(_fixture_dump(shared)))
    return path


def test_allocation_counts_recorded_foreign_and_ignores_finished(fixture_file: Path) -> None:
    pic = read(load(fixture_file))
    models = {m.model: m for m in per_model(pic.snapshot, pic.mix)}
    a100 = models["A100-SXM4-80GB"]
    assert (a100.nodes, a100.gpus, a100.allocated, a100.whole_free) == (2, 16, 12.0, 4)
    h100 = models["H100-SXM5-80GB"]
    assert h100.allocated == 0 and h100.mig_gpus == 2 and h100.mig_slices_free == h100.mig_slices == 16
    for m in models.values():
        assert 0 <= m.stranded <= m.free and m.allocated + m.free == pytest.approx(m.gpus)


def test_pending_pods_say_why(fixture_file: Path) -> None:
    waiting = {w.name: w for w in pending(read(load(fixture_file)))}
    assert set(waiting) == {"huge", "s1-gpu-pod"}
    assert waiting["huge"].fits_on == 0 and "needs 9" in waiting["huge"].reason
    assert "gpu-node-" in waiting["huge"].reason  # names an example node per reason
    assert waiting["s1-gpu-pod"].fits_on == 2  # a (4 free) and c (4 whole); b is the foreign pod's


def test_replay_places_the_same_pods_with_each_policy(fixture_file: Path) -> None:
    rows = replay(read(load(fixture_file)))
    assert [r.policy for r in rows] == ["as bound", *POLICIES]
    assert rows[0].placed == 2 and rows[0].unplaced == 2 and rows[0].allocated == 12.0
    for r in rows[1:]:
        assert r.placed + r.unplaced == 4  # the finished pod is not replayed
        assert r.unplaced == 1 and r.allocated == 13.0  # everything but the 9-GPU pod fits


def test_report_command_tables_json_and_plot(fixture_file: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["report", "--from", str(fixture_file), "--plot", str(tmp_path / "r.png")],
                        env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    assert "A100-SXM4-80GB" in out.output and "default/huge" in out.output and "best-fit" in out.output
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = runner.invoke(app, ["report", "--from", str(fixture_file), "--json", "--no-replay"])
    doc = json.loads(out.stdout)
    assert doc["replay"] == [] and {p["name"] for p in doc["pending"]} == {"huge", "s1-gpu-pod"}


def test_explain_a_bound_pod_hands_its_devices_back(fixture_file: Path) -> None:
    e = explain(read(load(fixture_file)), "default/mine")
    assert e.bound_to == "gpu-node-a" and e.asks == "4 GPUs"
    verdicts = {v.node: v for v in e.verdicts}
    assert verdicts["gpu-node-a"].fits  # its own 4 GPUs are free again for the question
    assert not verdicts["gpu-node-b"].fits and "0 free" in verdicts["gpu-node-b"].reason  # the foreign pod's
    assert verdicts["gpu-node-b"].preemption_may_help
    assert not verdicts["cpu-node-d"].fits and verdicts["cpu-node-d"].reason
    assert e.choice and e.devices.startswith("GPUs") and e.choice_score == max(v.score or 0 for v in e.verdicts)
    assert [v.fits for v in e.verdicts] == sorted((v.fits for v in e.verdicts), reverse=True)


def test_explain_a_pod_that_fits_nowhere(fixture_file: Path) -> None:
    e = explain(read(load(fixture_file)), "huge")
    assert e.choice == "" and e.choice_score is None
    assert all(not v.fits and v.reason for v in e.verdicts) and len(e.verdicts) == 4


def test_explain_command_and_its_refusals(fixture_file: Path) -> None:
    out = runner.invoke(app, ["explain", "s1-gpu-pod", "--from", str(fixture_file)], env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    assert "gpupack picks" in out.output and "gpu-node-a" in out.output
    out = runner.invoke(app, ["explain", "gpupack-test/s1-gpu-pod", "--from", str(fixture_file), "--json"])
    assert json.loads(out.stdout)["choice"] in ("gpu-node-a", "gpu-node-c")
    out = runner.invoke(app, ["explain", "nope", "--from", str(fixture_file)])
    assert out.exit_code == 2 and "no pod 'nope'" in out.output
    out = runner.invoke(app, ["explain", "x"])
    assert out.exit_code == 2 and "exactly one of --from" in out.output


def test_bad_dumps_are_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("nodes:\n - a")
    with pytest.raises(DumpError, match="not JSON"):
        load(tmp_path / "x.json")
    with pytest.raises(DumpError, match="no Node"):
        split([{"kind": "Pod"}], "here")
    out = runner.invoke(app, ["report", "--from", str(tmp_path / "missing.json")])
    assert out.exit_code == 2 and "missing.json" in out.output


def test_generated_cluster_report_is_consistent() -> None:
    doc = make_dump(30, 300, seed=3)
    pic = read(split(doc["items"], "generated"))
    models = per_model(pic.snapshot, pic.mix)
    assert sum(m.gpus for m in models) == sum(len(n.gpus) for n in pic.snapshot.static.nodes)
    rows = replay(pic)
    gpu_pods = rows[0].placed + rows[0].unplaced
    assert gpu_pods > 100 and rows[0].allocated == pytest.approx(sum(m.allocated for m in models))
    for r in rows[1:]:
        assert r.placed + r.unplaced == gpu_pods and 0 < r.allocated <= sum(m.gpus for m in models)
    assert not pic.view.invalid


def test_bench_report_times_every_stage() -> None:
    r = run_report_bench(20, 200)
    stages = {"read file", "cluster picture", "pending reasons", "replay (after the pending reasons)"}
    assert stages <= set(r["stages_s"])
    assert set(r["replay_policy_s"]) == {"gpupack", "fgd", "best-fit"}
    assert r["pods"] == 200 and r["gpus"] > 0


class _Api(BaseHTTPRequestHandler):
    """Lists nodes in pages of one (continue tokens) and pods, or answers 403 for pods."""

    forbid_pods: ClassVar[bool] = False
    nodes: ClassVar[list[Obj]] = []
    pods: ClassVar[list[Obj]] = []

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/api/v1/pods" and self.forbid_pods:
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                    "message": 'pods is forbidden: User "viewer" cannot list resource "pods"'}
            return self._send(403, body)
        if path == "/api/v1/nodes":
            start = int(query.partition("continue=")[2].partition("&")[0] or 0)
            more = {"continue": str(start + 1)} if start + 1 < len(self.nodes) else {}
            return self._send(200, {"kind": "NodeList", "metadata": more, "items": self.nodes[start:start + 1]})
        if path == "/api/v1/pods":
            return self._send(200, {"kind": "PodList", "metadata": {}, "items": self.pods})
        return self._send(404, {"kind": "Status", "code": 404})

    def _send(self, code: int, body: Obj) -> None:
        data = orjson.dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # quiet
        return


@pytest.fixture()
def apiserver(shared: Path, tmp_path: Path) -> Iterator[tuple[Path, type[_Api]]]:
    doc = _fixture_dump(shared)
    handler = type("Api", (_Api,), {"nodes": [i for i in doc["items"] if i["kind"] == "Node"],
                                    "pods": [i for i in doc["items"] if i["kind"] == "Pod"], "forbid_pods": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "t", "user": {"token": "x"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}))
    try:
        yield kubeconfig, handler
    finally:
        server.shutdown()
        server.server_close()


def test_kubeconfig_lists_page_by_page(apiserver: tuple[Path, type[_Api]]) -> None:
    kubeconfig, _ = apiserver
    out = runner.invoke(app, ["report", "--kubeconfig", str(kubeconfig), "--json", "--no-replay"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert sum(m["nodes"] for m in doc["models"]) == 3  # four nodes over four pages; the CPU node has no model
    assert {p["name"] for p in doc["pending"]} == {"huge", "s1-gpu-pod"}


def test_a_context_that_cannot_list_pods_is_refused(apiserver: tuple[Path, type[_Api]]) -> None:
    kubeconfig, handler = apiserver
    handler.forbid_pods = True
    out = runner.invoke(app, ["report", "--kubeconfig", str(kubeconfig)])
    assert out.exit_code == 2
    assert "may not list pods" in out.output and "HTTP 403" in out.output


def test_report_tables_fit_80_columns() -> None:
    from rich.console import Console

    from scheduler.report.render import report_tables

    pic = read(split(make_dump(30, 300, seed=4)["items"], "generated"))
    console = Console(width=80, record=True, color_system=None)
    console.print(report_tables("generated", per_model(pic.snapshot, pic.mix), pending(pic), replay(pic), {}))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert "H100-SXM5-80GB" in text  # model names are not folded


def test_a_pod_gpupack_cannot_read_is_reported_not_fatal(shared: Path, tmp_path: Path) -> None:
    bad = pod("bad", {"nvidia.com/mig-9g.99gb": "1"})
    path = tmp_path / "d.json"
    path.write_bytes(orjson.dumps({"kind": "List", "items": [{**n, "kind": "Node"} for n in fixture_nodes(shared)]
                                   + [bad]}))
    (w,) = pending(read(load(path)))
    assert w.asks == "invalid" and "cannot read its GPU request" in w.reason and "9g.99gb" in w.reason
    out = runner.invoke(app, ["explain", "default/bad", "--from", str(path)])
    assert out.exit_code == 2 and "9g.99gb" in out.output


def test_bulk_read_pauses_the_cyclic_gc_then_freezes_what_was_read() -> None:
    import gc

    from scheduler.report.bulk import bulk_read

    was, frozen = gc.isenabled(), gc.get_freeze_count()
    try:
        gc.enable()
        with bulk_read():
            assert not gc.isenabled()  # no collection walks the heap while the dump is read
            kept = [[i] for i in range(1000)]  # lists: always tracked by the collector
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(kept)  # read objects frozen
        gc.disable()
        with bulk_read():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
        with pytest.raises(RuntimeError), bulk_read():
            raise RuntimeError("a failed read")
        assert not gc.isenabled() and gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
        if was:
            gc.enable()
