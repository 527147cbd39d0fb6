"""CEL selectors (scheduler/dra/cel.py) on the fixture slices' devices: the chart's DeviceClass selectors and
the fixture claims' selectors pick the devices DRA picked from; Kubernetes' quantity and semver functions work;
what cel-python plus gpupack's functions cannot evaluate is refused with a message, never a pass."""

from __future__ import annotations

import pytest
from dra_support import load, slices

from scheduler.dra.cel import CelRefused, device_env, matches

DEVICES = {d["name"]: device_env("gpu.nvidia.com", d) for s in slices() if s["spec"]["nodeName"] == "dra-h100-node"
           for d in s["spec"]["devices"]}


def _picked(expr: str) -> set[str]:
    return {n for n, d in DEVICES.items() if matches(expr, d)}


def test_the_charts_device_classes_split_gpus_from_mig_devices() -> None:
    for cls, kind in (("gpu", "gpu"), ("mig", "mig")):
        (sel,) = load(f"driver/deviceclass-{cls}.nvidia.com.json")["spec"]["selectors"]
        got = _picked(sel["cel"]["expression"])
        assert got and all(("-mig-" in n) == (kind == "mig") for n in got)
        assert len(got) == (6 if kind == "gpu" else 7)


def test_the_fixture_claims_selectors() -> None:
    assert _picked("device.attributes['gpu.nvidia.com'].productName == 'NVIDIA H100 80GB HBM3'") == set(DEVICES)
    mig = {n for n in DEVICES if "-mig-" in n}
    assert {n for n in mig if matches("device.attributes['gpu.nvidia.com'].profile == '1g.10gb'", DEVICES[n])} == {
        "gpu-6-mig-1g10gb-19-6", "gpu-7-mig-1g10gb-19-0", "gpu-7-mig-1g10gb-19-1", "gpu-7-mig-1g10gb-19-2"}


@pytest.mark.parametrize(("expr", "n"), [
    ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0", 6),
    ("device.capacity['gpu.nvidia.com'].memory.isGreaterThan(quantity('20Gi'))", 6 + 2),
    ("has(device.capacity['gpu.nvidia.com'].multiprocessors) && "
     "device.capacity['gpu.nvidia.com'].multiprocessors.asInteger() < 20", 4),
    ("device.attributes['gpu.nvidia.com'].cudaComputeCapability.isGreaterThan(semver('8.0.0'))", 13),
    ("device.attributes['gpu.nvidia.com'].driverVersion.major() == 580", 13),
    ("'resource.kubernetes.io' in device.attributes && "
     "device.attributes['resource.kubernetes.io'].pcieRoot.startsWith('pci')", 13),
])
def test_kubernetes_quantity_and_semver_functions(expr: str, n: int) -> None:
    assert len(_picked(expr)) == n


@pytest.mark.parametrize(("expr", "why"), [
    ("device.attributes['gpu.nvidia.com'].productName.lowerAscii() == 'x'", "cannot be evaluated"),
    ("device.attributes['gpu.nvidia.com'].profile == '1g.10gb'", "no such member"),  # gpu-0 has no profile
    ("device.attributes['gpu.nvidia.com'] ==", "does not parse"),
    ("device.capacity['gpu.nvidia.com'].memory", "not a bool"),
    ("device.capacity['gpu.nvidia.com'].memory.compareTo(semver('1.0.0')) > 0", "cannot be evaluated"),
    ("quantity('12 parsecs').isInteger()", "quantity"),
])
def test_what_cannot_be_evaluated_is_refused_with_a_message(expr: str, why: str) -> None:
    with pytest.raises(CelRefused, match=why):
        matches(expr, DEVICES["gpu-0"])


def test_a_slice_attribute_of_an_unknown_type_is_refused_when_read_and_harmless_otherwise() -> None:
    dev = {"name": "gpu-9", "attributes": {"type": {"string": "gpu"}, "future": {"float": 1.5}},
           "capacity": {"memory": {"value": "80Gi"}, "odd": {"value": "lots"}}}
    env = device_env("gpu.nvidia.com", dev)
    assert matches("device.attributes['gpu.nvidia.com'].type == 'gpu'", env)
    assert matches("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) == 0", env)
    for expr in ("device.attributes['gpu.nvidia.com'].future > 1.0",
                 "device.capacity['gpu.nvidia.com'].odd.isInteger()"):
        with pytest.raises(CelRefused, match="no such member"):
            matches(expr, env)
