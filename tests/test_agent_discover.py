"""The agent's discovery on fake NVML boards, checked against topology.md's matrices (binpack.topology),
the fakes' own MIG layouts, and the extender's parser (round trip through the annotation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from binpack import Demand, Gpu, MigMode, Node, Snapshot, fit
from binpack.topology import dgx1_v100, nvswitch, pcie_only
from scheduler.agent import fake_nvml
from scheduler.agent.discover import Inventory, discover, to_json
from scheduler.agent.fake_nvml import A100_LAYOUTS, board, mig_uuid
from scheduler.translate.inventory import INVENTORY, node_from_k8s

Matrix = tuple[tuple[int, ...], ...]


def _without(m: Matrix, k: int) -> Matrix:
    """A matrix with GPU k's row and column zeroed (a lost GPU has no links and no known PCIe level)."""
    return tuple(tuple(0 if k in (i, j) else v for j, v in enumerate(row)) for i, row in enumerate(m))


def _node_obj(inv: Inventory, name: str = "gpu-node") -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {INVENTORY: inv.annotation()}},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110"}}}


@pytest.mark.parametrize(("name", "expected", "n", "model"), [
    ("a100-nvswitch", nvswitch(8, 12), 8, "A100-SXM4-80GB"),
    ("a100-nvswitch-old-driver", nvswitch(8, 12), 8, "A100-SXM4-80GB"),
    ("dgx1-v100", dgx1_v100(), 8, "V100-SXM2-16GB"),
    ("t4-pcie", pcie_only(4), 4, "T4"),
])
def test_matrices_match_the_reference_boards(name: str, expected: tuple[Matrix, Matrix], n: int, model: str) -> None:
    fake = board(name)
    inv = discover(fake)
    assert inv.status == "ok" and len(inv.gpus) == n
    assert (inv.nvlink, inv.pcie) == expected
    assert {g.model for g in inv.gpus} == {model} and all(g.healthy for g in inv.gpus)
    assert [g.uuid for g in inv.gpus] == [g.uuid for g in fake.gpus]
    assert fake.inits == 0  # every nvmlInit is paired with nvmlShutdown


def test_dgx1_pairs_follow_the_cube_mesh() -> None:
    inv = discover(board("dgx1-v100"))
    doubles = {(i, j) for i in range(8) for j in range(i + 1, 8) if inv.nvlink[i][j] == 2}
    assert doubles == {(0, 3), (0, 4), (1, 2), (1, 5), (2, 3), (4, 7), (5, 6), (6, 7)}
    assert all(sum(row) == 6 for row in inv.nvlink)  # the seventh, down link is not counted


def test_partitioned_nvswitch_links_only_inside_a_partition() -> None:
    inv = discover(board("a100-nvswitch-partitioned"))
    nv, _ = nvswitch(8, 12)
    assert inv.nvlink == tuple(tuple(v if (i < 4) == (j < 4) else 0 for j, v in enumerate(row))
                               for i, row in enumerate(nv))
    assert inv.switch_links == (12,) * 8


def test_mixed_mig_layouts_are_read_instance_by_instance() -> None:
    fake = board("a100-nvswitch")
    inv = discover(fake)
    for i, layout in enumerate(A100_LAYOUTS):
        g = inv.gpus[i]
        if layout is None:
            assert g.mig_mode is MigMode.NONE and g.mig_instances == ()
            continue
        assert g.mig_mode is MigMode.STATIC
        whole = [(p, s) for p, s, cis in layout if cis == 1]  # a GI split into compute instances is not offered
        assert sorted((m.profile, m.start) for m in g.mig_instances) == sorted(whole)
        gi_of = {(gi.start, fake_nvml.A100_80GB_PROFILES[gi.enum][3]): gi.gi_id for gi in fake.gpus[i].gis}
        for m in g.mig_instances:
            assert m.uuid == mig_uuid(fake.gpus[i].uuid, gi_of[(m.start, m.profile)], 0)
    assert any("split into 3 compute instances" in n for n in inv.notes)
    assert any(n.startswith("GPU 5: MIG is on but no MIG device is visible") for n in inv.notes)


def test_dynamic_mode_publishes_mig_gpus_without_a_layout() -> None:
    inv = discover(board("a100-nvswitch"), dynamic_mig=True)
    assert [g.mig_mode for g in inv.gpus] == [MigMode.NONE] + [MigMode.DYNAMIC] * 7
    assert all(g.mig_instances == () for g in inv.gpus)


@pytest.mark.parametrize(("name", "lost", "reference"), [
    ("dgx1-v100-gpu5-lost", 5, dgx1_v100()),  # no handle at all
    ("t4-pcie-gpu2-lost", 2, pcie_only(4)),  # a handle, then GPU_IS_LOST on every call
])
def test_a_lost_gpu_keeps_its_index_and_is_unhealthy(name: str, lost: int, reference: tuple[Matrix, Matrix]) -> None:
    inv = discover(board(name))
    assert inv.status == "ok"
    assert [g.healthy for g in inv.gpus] == [i != lost for i in range(len(inv.gpus))]
    assert inv.gpus[lost].model == inv.gpus[0].model  # borrowed, so the node's indices stay aligned
    assert inv.nvlink == _without(reference[0], lost) and inv.pcie == _without(reference[1], lost)
    assert any("GpuIsLost" in n for n in inv.notes)


@pytest.mark.parametrize(("name", "says"), [("no-library", "LibraryNotFound"), ("no-driver", "DriverNotLoaded")])
def test_no_nvml_is_an_unavailable_inventory(name: str, says: str) -> None:
    inv = discover(board(name))
    assert inv.status == "unavailable" and says in inv.message and inv.gpus == ()
    node = node_from_k8s(_node_obj(inv))
    assert node.gpus == () and "unavailable" in inv.summary()


def test_nvml_surprises_are_facts_not_crashes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = board("a100-nvswitch")
    real = fake.nvmlDeviceGetMigMode

    def flaky(h: Any) -> list[int]:
        if h.gpu == 3:
            raise fake.NVMLError(999)  # an error code nobody expected
        return real(h)

    monkeypatch.setattr(fake, "nvmlDeviceGetMigMode", flaky)
    inv = discover(fake)
    assert not inv.gpus[3].healthy and inv.gpus[3].mig_mode is MigMode.NONE
    assert sum(g.healthy for g in inv.gpus) == 7
    counting = board("t4-pcie")
    monkeypatch.setattr(counting, "nvmlDeviceGetCount", lambda: (_ for _ in ()).throw(counting.NVMLError(15)))
    assert discover(counting).status == "unavailable"


@pytest.mark.parametrize("name", sorted(fake_nvml.BOARDS))
def test_inventory_round_trips_through_the_extender_parser(name: str) -> None:
    inv = discover(board(name))
    node = node_from_k8s(_node_obj(inv))
    assert node == Node("gpu-node", inv.gpus, 64000, 512 * 1024, inv.nvlink, inv.pcie)
    Snapshot.build([node])  # the extender can build its snapshot from it


def test_the_extender_places_on_what_the_agent_found() -> None:
    inv = discover(board("a100-nvswitch"))
    snap = Snapshot.build([node_from_k8s(_node_obj(inv))])
    assert bool(fit(snap, Demand.mig("3g.40gb")).fits[0])  # GPU 2 and GPU 7 have free-standing 3g instances
    assert bool(fit(snap, Demand.whole(1)).fits[0])  # GPU 0 has MIG off
    assert not bool(fit(snap, Demand.whole(2)).fits[0])  # only one GPU is whole


def test_summary_is_one_line_with_the_facts() -> None:
    line = discover(board("a100-nvswitch")).summary()
    assert "\n" not in line
    for fact in ("8 x A100-SXM4-80GB", "MIG on 7 GPUs", "28/28 pairs", "NVSwitch"):
        assert fact in line
    assert "no NVLink" in discover(board("t4-pcie")).summary()


def test_gpu_models_map_to_the_catalog() -> None:
    names = {b: {g.name for g in board(b).gpus} for b in ("a100-nvswitch", "dgx1-v100", "t4-pcie")}
    found = {b: {g.model for g in discover(board(b)).gpus} for b in names}
    assert names == {"a100-nvswitch": {"NVIDIA A100-SXM4-80GB"}, "dgx1-v100": {"Tesla V100-SXM2-16GB"},
                     "t4-pcie": {"Tesla T4"}}
    assert found == {"a100-nvswitch": {"A100-SXM4-80GB"}, "dgx1-v100": {"V100-SXM2-16GB"}, "t4-pcie": {"T4"}}
    assert all(Gpu(0, m).memory_mib > 0 for ms in found.values() for m in ms)  # catalogued, not guessed


_DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("path", sorted(_DATA.glob("inventory-fake-*.json")), ids=lambda p: p.stem)
def test_checked_in_fake_inventories_are_what_the_agent_prints(path: Path) -> None:
    """tests/data holds the agent's output for some fake boards (examples for people and other tests)."""
    printed = orjson.loads(to_json(discover(board(path.stem.removeprefix("inventory-fake-")))))
    assert orjson.loads(path.read_bytes()) == printed


@pytest.mark.parametrize("path", sorted(_DATA.glob("inventory-*.json")), ids=lambda p: p.stem)
def test_every_checked_in_inventory_parses_into_a_binpack_node(path: Path) -> None:
    """Fake boards and inventories captured on real GPUs (`gpupack agent --once --print`) alike."""
    doc = orjson.loads(path.read_bytes())
    node = node_from_k8s({"metadata": {"name": path.stem, "annotations": {INVENTORY: path.read_text()}}})
    assert len(node.gpus) == (len(doc["gpus"]) if doc["status"] == "ok" else 0)
    Snapshot.build([node])


def test_pynvml_is_imported_only_by_the_agent() -> None:
    """binpack never imports NVML (import-linter checks it too); the rest of the project neither."""
    import ast

    root = Path(__file__).resolve().parents[1]
    importers = set()
    for pkg in ("binpack", "scheduler", "webhook", "benchmarks"):
        for f in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] == "pynvml" for n in names):
                    importers.add(str(f.relative_to(root)))
    assert importers == {"scheduler/agent/nvml.py", "scheduler/agent/fake_nvml.py"}
