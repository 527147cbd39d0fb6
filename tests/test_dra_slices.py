"""Golden tests: each captured ResourceSlice (NVIDIA DRA driver format) parses into the exact inventory."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from binpack import Gpu, MigInstance, MigMode, MigSlot
from scheduler.dra.slices import InvalidSlice, inventory, parse_slice

DRA = Path(__file__).parent / "data" / "dra"


def slice_of(node: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((DRA / "driver" / f"resourceslice-{node}.json").read_bytes())
    return doc


A100 = ["GPU-d993d038-044a-6f88-e470-8f68cff59619", "GPU-7b717ee6-b493-c704-c89c-99c66821acf1",
        "GPU-bf642546-efe3-9477-a470-e0e323702535", "GPU-b2e99a6c-9358-6282-a08b-67d39fc6e883",
        "GPU-433b759f-b626-537a-2a31-23596daeb91e", "GPU-b79bfa3b-979f-7fbc-5348-c2573711a2b7",
        "GPU-24e7ac35-83d2-a9e3-30c2-f6e143fefdb9", "GPU-15e221da-a5eb-017a-e3be-1d903fbb4d38"]
H100 = ["GPU-cbd65127-d2e4-5c26-eec6-c74e84832803", "GPU-19971aa9-37d6-ab3d-601d-8adbfd98ef1a",
        "GPU-71da5442-e8db-550d-b9df-2517fabcfb79", "GPU-08af2d69-ca2c-d462-8e2e-5f9996df040b",
        "GPU-c787ad8d-6edf-1888-ef02-b9602bfd3183", "GPU-a3897619-695d-ac5a-966e-fdcc50a20c89"]
T4 = ["GPU-c7e38c6e-5d69-a79f-13a6-1793a55bd5d8", "GPU-737fef39-b9f8-ed6c-146f-82cf469db845",
      "GPU-1e8a66ac-eee9-9a24-ea13-e8b9f4fef6bb", "GPU-4a0ce01a-f9c5-73fb-c799-47bbab654a5c"]
GPU6 = (MigInstance("3g.40gb", 0, "MIG-3ff852c8-3083-36bf-da0e-ec2e6c2f77df"),
        MigInstance("2g.20gb", 4, "MIG-71e8f4c3-4364-b42d-5af2-b0900445575b"),
        MigInstance("1g.10gb", 6, "MIG-39031cfa-c519-02d3-c6cd-19dfd9c203e1"))
GPU7 = (MigInstance("1g.10gb", 0, "MIG-08f1d8f5-7895-4e42-35ea-b998f44ebe3a"),
        MigInstance("1g.10gb", 1, "MIG-d441a6ce-a4dc-c6a7-a5bd-b76fa2e225c3"),
        MigInstance("1g.10gb", 2, "MIG-88c1c4ea-c5f6-dc8f-aa37-59175899a731"),
        MigInstance("3g.40gb", 4, "MIG-f1107717-991a-9d79-1dcc-9605de200ac4"))
P, S = 30, 50  # same PCIe root (at most PHB), different roots (SYS)


def _pcie(roots: list[str]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(0 if i == j else (P if a == b else S) for j, b in enumerate(roots)) for i, a in enumerate(roots))


EXPECTED = {
    "dra-a100-node": (
        tuple(Gpu(i, "A100-SXM4-80GB", 81920, u) for i, u in enumerate(A100)),
        _pcie(["00", "00", "40", "40", "80", "90", "b0", "b0"]),
        {f"gpu-{i}": (i, None) for i in range(8)},
    ),
    "dra-h100-node": (
        (*(Gpu(i, "H100-SXM5-80GB", 81559, u) for i, u in enumerate(H100)),
         Gpu(6, "H100-SXM5-80GB", 81559, "GPU-58b11fba-720c-debe-ae8c-885d813f1446", MigMode.STATIC, GPU6),
         Gpu(7, "H100-SXM5-80GB", 81559, "GPU-b3e322ee-262b-4cd6-4ca6-555f6c51f690", MigMode.STATIC, GPU7)),
        _pcie(["10", "20", "30", "50", "90", "a0", "b0", "d0"]),
        {**{f"gpu-{i}": (i, None) for i in range(6)},
         "gpu-6-mig-3g40gb-9-0": (6, MigSlot(6, "3g.40gb", 0)), "gpu-6-mig-2g20gb-14-4": (6, MigSlot(6, "2g.20gb", 4)),
         "gpu-6-mig-1g10gb-19-6": (6, MigSlot(6, "1g.10gb", 6)), "gpu-7-mig-1g10gb-19-0": (7, MigSlot(7, "1g.10gb", 0)),
         "gpu-7-mig-1g10gb-19-1": (7, MigSlot(7, "1g.10gb", 1)), "gpu-7-mig-1g10gb-19-2": (7, MigSlot(7, "1g.10gb", 2)),
         "gpu-7-mig-3g40gb-9-4": (7, MigSlot(7, "3g.40gb", 4))},
    ),
    "dra-t4-node": (
        tuple(Gpu(i, "T4", 15360, u) for i, u in enumerate(T4)),
        _pcie(["00"] * 4),
        {f"gpu-{i}": (i, None) for i in range(4)},
    ),
}


@pytest.mark.parametrize("node", sorted(EXPECTED))
def test_each_fixture_slice_parses_into_the_exact_inventory(node: str) -> None:
    s = parse_slice(slice_of(node))
    assert (s.driver, s.node, s.pool, s.generation, s.skipped) == ("gpu.nvidia.com", node, node, 1, ())
    inv = inventory(s.devices)
    gpus, pcie, devices = EXPECTED[node]
    assert inv.gpus == gpus
    assert inv.pcie == pcie
    assert dict(inv.devices) == devices
    assert inv.skipped == ()


def test_a_gpu_in_mig_mode_is_not_a_full_gpu() -> None:
    inv = inventory(parse_slice(slice_of("dra-h100-node")).devices)
    assert [g.mig_mode for g in inv.gpus] == [MigMode.NONE] * 6 + [MigMode.STATIC] * 2
    assert all(not g.mig_instances for g in inv.gpus[:6])


def test_other_drivers_are_ignored_with_a_reason() -> None:
    doc = slice_of("dra-t4-node")
    doc["spec"]["driver"] = "compute-domain.nvidia.com"
    s = parse_slice(doc)
    assert s.devices == () and s.skipped == ("driver 'compute-domain.nvidia.com' is not gpu.nvidia.com",)


def test_unreadable_devices_are_left_out_with_a_reason_the_rest_kept() -> None:
    doc = slice_of("dra-h100-node")
    devs = doc["spec"]["devices"]
    devs[0]["attributes"]["type"] = {"string": "vfio"}
    devs[1]["capacity"]["memory"] = {"value": "lots"}
    del devs[2]["attributes"]["uuid"]
    devs.append("not a device")
    s = parse_slice(doc)
    assert [d.name for d in s.devices][:3] == ["gpu-3", "gpu-4", "gpu-5"]
    assert len(s.skipped) == 4
    assert "type 'vfio' is not gpu or mig" in s.skipped[0]
    assert "quantity" in s.skipped[1]
    inv = inventory(s.devices)
    assert [g.uuid for g in inv.gpus][:3] == H100[3:]
    assert inv.devices["gpu-3"] == (0, None)  # local indices stay dense


def test_a_mig_layout_the_catalog_refuses_drops_that_gpu_only() -> None:
    doc = slice_of("dra-h100-node")
    for d in doc["spec"]["devices"]:
        if d["name"] == "gpu-7-mig-1g10gb-19-1":
            d["attributes"]["profile"] = {"string": "9g.99gb"}
    inv = inventory(parse_slice(doc).devices)
    assert len(inv.gpus) == 7 and inv.gpus[6].uuid.startswith("GPU-58b1")
    assert len(inv.skipped) == 1 and "9g.99gb" in inv.skipped[0]
    assert "gpu-7-mig-1g10gb-19-0" not in inv.devices


def test_mig_start_falls_back_to_the_name_without_memory_slices() -> None:
    doc = slice_of("dra-h100-node")
    for d in doc["spec"]["devices"]:
        d["capacity"] = {k: v for k, v in d["capacity"].items() if not k.startswith("memorySlice")}
    assert inventory(parse_slice(doc).devices).gpus[7].mig_instances == GPU7


@pytest.mark.parametrize("mutate", [
    lambda d: d["spec"].pop("nodeName"),
    lambda d: d.__setitem__("spec", "junk"),
    lambda d: d["spec"]["pool"].__setitem__("generation", "x"),
])
def test_a_slice_gpupack_cannot_place_on_is_refused_clearly(mutate: Any) -> None:
    doc = copy.deepcopy(slice_of("dra-t4-node"))
    mutate(doc)
    with pytest.raises(InvalidSlice, match="resourceslice dra-t4-node"):
        parse_slice(doc)
