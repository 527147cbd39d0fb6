"""The hand-off's pure parts: CDI specs on disk, what is advertised, how records become bookings
(dynamic MIG placeholders included), the CLI's --print table, and that the vendored stubs are current."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
from typer.testing import CliRunner

from binpack import Gpu, MigInstance, MigMode
from scheduler.agent import cli as agent_cli
from scheduler.agent.cdi import read_specs
from scheduler.agent.discover import discover
from scheduler.agent.fake_nvml import board
from scheduler.agent.handoff import (
    GPU_RESOURCE,
    SHARE_RESOURCE,
    Bookings,
    Mode,
    allocate,
    bookings,
    mig_resource,
    offers,
    prefer,
)
from scheduler.agent.service import cdi_check
from scheduler.translate.devices import DEVICES

DATA = Path(__file__).parent / "data" / "cdi"
ROOT = Path(__file__).resolve().parents[1]
V100 = discover(board("dgx1-v100"))
A100 = discover(board("a100-nvswitch"))


def _only(tmp_path: Path, *names: str) -> Path:
    for n in names:
        shutil.copy(DATA / n, tmp_path / n)
    return tmp_path


def test_nvidia_spec_names_every_gpu_and_mig_device_by_uuid(tmp_path: Path) -> None:
    specs = read_specs([_only(tmp_path, "nvidia-a100-nvswitch.yaml"), tmp_path / "absent"])
    assert specs.notes == () and len(specs.files) == 1
    assert f"nvidia.com/gpu={A100.gpus[0].uuid}" in specs.names and "nvidia.com/gpu=0" in specs.names
    assert "nvidia.com/gpu=1:0" in specs.names and "nvidia.com/gpu=all" in specs.names
    assert cdi_check(offers(A100.gpus, 4), specs, Mode.CDI_CRI) == []


def test_stale_and_index_only_specs_say_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    stale = read_specs([_only(tmp_path / "a", "nvidia-dgx1-v100-stale.yaml")])
    assert cdi_check(offers(V100.gpus, 4), stale, Mode.CDI_CRI) == [f"nvidia.com/gpu={V100.gpus[3].uuid}"]
    (tmp_path / "b").mkdir()
    index_only = read_specs([_only(tmp_path / "b", "nvidia-dgx1-v100-index-only.yaml")])
    assert len(cdi_check(offers(V100.gpus, 4), index_only, Mode.CDI_CRI)) == 8
    assert cdi_check(offers(V100.gpus, 4), index_only, Mode.ENVVAR) == []  # envvar needs no spec


def test_unreadable_spec_files_are_notes_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [unclosed")
    (tmp_path / "notcdi.json").write_text(orjson.dumps({"hello": 1}).decode())
    (tmp_path / "nodevices.yaml").write_text("kind: nvidia.com/gpu\n")
    (tmp_path / "ignored.txt").write_text("whatever")
    specs = read_specs([tmp_path])
    assert specs.names == frozenset() and specs.files == ()
    assert len(specs.notes) == 3 and any("bad.yaml: cannot be read" in n for n in specs.notes)


def test_offers_skip_mig_parents_and_name_mig_resources_as_nvidia_does() -> None:
    got = offers(A100.gpus, 2)
    assert [d.id for d in got[GPU_RESOURCE]] == [A100.gpus[0].uuid]
    assert len(got[SHARE_RESOURCE]) == 2
    assert mig_resource("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me" and "nvidia.com/mig-1g.10gb.me" in got
    assert SHARE_RESOURCE not in offers(A100.gpus, 0)


def _dynamic_node() -> tuple[Gpu, ...]:
    """A dynamic-MIG GPU as the device plugin reads it: the instances that exist now (static read)."""
    return (Gpu(0, "A100-SXM4-80GB", uuid="GPU-dyn-0", mig_mode=MigMode.STATIC,
                mig_instances=(MigInstance("3g.40gb", 4, "MIG-dyn-0-4"),)),)


def _mig_pod(devices: list[str]) -> dict:
    doc = {"v": 1, "node": "n", "kind": "mig", "gpus": [], "mig": [{"gpu": 0, "profile": "3g.40gb", "start": 4}],
           "containers": {"main": {"devices": devices}}}
    ann = {DEVICES: orjson.dumps(doc).decode()}
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u", "annotations": ann},
            "spec": {"nodeName": "n", "containers": [{"name": "main"}]}}


def test_dynamic_mig_placeholder_is_handed_over_by_the_created_instances_uuid() -> None:
    books = bookings([_mig_pod(["0:4"])], "n", _dynamic_node())
    (b,) = books.items
    assert b.resource == "nvidia.com/mig-3g.40gb" and b.devices == ("MIG-dyn-0-4",) and not b.problem
    assert prefer(b.resource, ["MIG-dyn-0-4"], [], 1, books, set()) == ["MIG-dyn-0-4"]
    assert allocate(b.resource, ["MIG-dyn-0-4"], books, set(), "n").booking == b
    # not created yet: the booking has a problem and Allocate says so
    (late,) = bookings([_mig_pod(["0:0"])], "n", _dynamic_node()).items
    assert "not on this node" in late.problem


def test_records_of_other_nodes_finished_or_deleting_pods_are_not_bookings() -> None:
    p = _mig_pod(["MIG-dyn-0-4"])
    gone = {**p, "metadata": {**p["metadata"], "deletionTimestamp": "2026-12-06T00:00:00Z"}}
    done = {**p, "status": {"phase": "Succeeded"}}
    moved = {**p, "spec": {"nodeName": "other"}}
    assert bookings([gone, done, moved], "n", _dynamic_node()) == Bookings()
    wrong = _mig_pod(["MIG-dyn-0-4"])
    wrong["metadata"]["annotations"][DEVICES] = wrong["metadata"]["annotations"][DEVICES].replace('"n"', '"x"')
    assert bookings([wrong], "n", _dynamic_node()).unreadable[0][1] == "its record names node 'x', not 'n'"


def test_allocate_without_ids_or_bookings_is_refused() -> None:
    assert "asked for no" in allocate(GPU_RESOURCE, [], Bookings(), set(), "n").error
    assert "no pod bound to node n" in allocate(GPU_RESOURCE, ["GPU-x"], Bookings(), set(), "n").error
    assert prefer(GPU_RESOURCE, ["GPU-x"], [], 1, Bookings(), set()) == []


def test_cli_print_shows_what_the_device_plugin_would_advertise(tmp_path: Path) -> None:
    import typer

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """gpupack (test copy)."""

    agent_cli.register(app)
    folder = _only(tmp_path, "nvidia-dgx1-v100-stale.yaml")
    res = CliRunner().invoke(app, ["agent", "--once", "--print", "--fake", "dgx1-v100", "--cdi-dir", str(folder)],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["version"] == 1  # stdout is still the inventory JSON
    err = res.stderr
    assert "nvidia.com/gpu" in err and "gpupack.io/gpu-share" in err and V100.gpus[7].uuid in err
    assert f"nvidia.com/gpu={V100.gpus[3].uuid} (no CDI spec names it)" in err
    assert "device names missing from them: 1" in err
    assert "--fake" in CliRunner().invoke(app, ["agent", "--help"], env={"COLUMNS": "200"}).output


def test_vendored_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    pkg = Path("scheduler/agent/kubeletapi")
    (tmp_path / pkg).mkdir(parents=True)
    for proto in ("deviceplugin.proto", "podresources.proto"):
        shutil.copy(ROOT / pkg / proto, tmp_path / pkg / proto)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
                    "--grpc_python_out=.", str(pkg / "deviceplugin.proto"), str(pkg / "podresources.proto")],
                   cwd=tmp_path, check=True, timeout=120)
    for name in ("deviceplugin_pb2.py", "deviceplugin_pb2.pyi", "deviceplugin_pb2_grpc.py",
                 "podresources_pb2.py", "podresources_pb2.pyi", "podresources_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / pkg / name, ROOT / pkg / name, shallow=False), f"{name} is stale: regenerate"
