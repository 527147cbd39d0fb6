"""Property: whatever a claim's spec holds (junk shapes, odd counts, random CEL), gpupack's allocator answers
devices or a reason (Unallocatable / CelRefused), never another exception, and what it answers is valid."""

from __future__ import annotations

from typing import Any

from dra_support import state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binpack import validate
from scheduler.dra.allocate import Unallocatable, allocate_claims, claim_spec
from scheduler.dra.cel import CelRefused

CLUSTER, DRA = state()
SNAP = CLUSTER.view().snapshot
json_ = st.recursive(st.none() | st.booleans() | st.integers(-3, 20) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3), max_leaves=8)
cel = st.sampled_from(["device.driver == 'gpu.nvidia.com'", "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'",
                       "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('20Gi')) > 0", "true", "1 +",
                       "device.attributes['gpu.nvidia.com'].productName.lowerAscii() == 'x'", "'a'"]) | \
    st.text(max_size=20)
request = st.fixed_dictionaries({"name": st.sampled_from(["a", "b"]), "exactly": st.fixed_dictionaries(
    {"deviceClassName": st.sampled_from(["gpu.nvidia.com", "mig.nvidia.com", "x"]),
     "count": st.integers(-1, 10) | json_,
     "selectors": st.lists(st.fixed_dictionaries({"cel": st.fixed_dictionaries({"expression": cel})}), max_size=2)})})
spec = st.fixed_dictionaries({"devices": st.fixed_dictionaries({
    "requests": st.lists(request, min_size=1, max_size=2),
    "constraints": st.lists(st.fixed_dictionaries({"matchAttribute": st.sampled_from([
        "resource.kubernetes.io/pcieRoot", "gpu.nvidia.com/productName", "nosuch"])}), max_size=1)})}) | json_


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(spec, min_size=1, max_size=2), node=st.sampled_from(["dra-a100-node", "dra-h100-node",
                                                                           "dra-t4-node"]))
def test_junk_claims_get_devices_or_a_reason(specs: list[Any], node: str) -> None:
    nd = DRA.node_devices(node)
    assert nd is not None
    try:
        claims = [claim_spec({"metadata": {"uid": f"u{i}", "name": f"c{i}", "namespace": "n"}, "spec": s})
                  for i, s in enumerate(specs)]
        got = allocate_claims(SNAP, nd, claims)
    except (Unallocatable, CelRefused) as e:
        assert str(e)
        return
    placed = [(d, p) for uid in got.placements for d, p in zip(got.demands[uid], got.placements[uid], strict=True)]
    assert validate(SNAP, placed) == []
    names = [dev for uid in got.results for _, dev in got.results[uid]]
    assert len(names) == len(set(names))
