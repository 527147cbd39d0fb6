"""Issue 17, defect 1: one pod's absurd quantities must never poison the learned mix.

A CPU or memory request too large for int64 used to enter the workload mix; every share-pod bind then
answered `internal error in bind: OverflowError` and prioritize answered `[]`. Every amount is now
range-checked where it enters binpack (scheduler/translate/quantity.py, scheduler/translate/pod.py), binpack's types and
the mix learner refuse out-of-range values, and the webhook denies such a pod.
"""

from __future__ import annotations

import math

import pytest
from extender_support import args, pod, post, serve, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from binpack import Demand, MixLearner
from binpack.types import MAX_AMOUNT
from scheduler.state.standalone import demo_objects
from scheduler.translate.pod import InvalidPod, read_pod
from scheduler.translate.quantity import bytes_to_mib, to_int, to_milli
from webhook.admit import Policy, admit

HUGE = "99999999999999999999999"
NODES = demo_objects()
NAMES = [n["metadata"]["name"] for n in NODES]
SHARE = {"gpupack.io/gpu-memory": "10000", "gpupack.io/gpu-compute": "25"}


@pytest.mark.parametrize("fn", [to_milli, to_int, bytes_to_mib])
@pytest.mark.parametrize("raw", [HUGE, "9E", "1e30", "-1", "-500m", "1" * 65, 2**70, -3])
def test_quantities_out_of_range_are_a_value_error(fn: object, raw: object) -> None:
    with pytest.raises(ValueError, match="quantity"):
        fn(raw)  # type: ignore[operator]


def test_quantities_in_range_still_parse() -> None:
    assert to_milli("64") == 64_000 and bytes_to_mib("512Gi") == 512 * 1024 and to_int("20k") == 20_000


@pytest.mark.parametrize("res", [{"cpu": HUGE}, {"memory": HUGE}, {"cpu": "-1"}, {"memory": "1e30"}])
def test_a_pod_with_absurd_cpu_or_memory_is_invalid(res: dict[str, str]) -> None:
    p = pod("absurd", SHARE)
    p["spec"]["containers"][0]["resources"]["requests"].update(res)
    with pytest.raises(InvalidPod, match="quantity"):
        read_pod(p)


def test_many_containers_cannot_add_up_past_the_range() -> None:
    p = pod("wide", SHARE, containers=3)
    for c in p["spec"]["containers"]:
        c["resources"]["requests"]["cpu"] = str(MAX_AMOUNT // 1000)
    with pytest.raises(InvalidPod, match="more CPU or memory"):
        read_pod(p)


def test_the_webhook_denies_a_pod_with_absurd_cpu() -> None:
    p = pod("absurd", {"nvidia.com/gpu": "1"})
    p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = HUGE
    d = admit(p, Policy())
    assert not d.allowed and d.patch == () and "out of range" in d.message, d.message


def test_one_absurd_pod_neither_breaks_bind_nor_prioritize() -> None:
    """The reported sequence: the absurd pod is seen (by the watch and by filter), then share pods bind."""
    bad = pod("absurd", SHARE)
    bad["spec"]["containers"][0]["resources"]["requests"]["cpu"] = HUGE
    good = pod("share", SHARE)
    with serve(NODES, [bad, good]) as (client, api, state):
        verdict = post(client, "filter", args(bad, NAMES))
        assert verdict["Error"] == "" and verdict["NodeNames"] == []
        assert all("out of range" in why for why in verdict["FailedAndUnresolvableNodes"].values())
        assert post(client, "filter", args(good, NAMES))["NodeNames"]
        scores = post(client, "prioritize", args(good, NAMES))
        assert [s["Host"] for s in scores] == NAMES and max(s["Score"] for s in scores) == 10
        target = max(scores, key=lambda s: s["Score"])["Host"]
        answer = post(client, "bind", {"PodName": "share", "PodNamespace": "default", "PodUID": "uid-share",
                                       "Node": target})
        assert answer == {"Error": ""}
        wait_for(lambda: api.get_pod("default", "share")["spec"].get("nodeName") == target)
        state.view().mix.arrays()  # the learned mix is usable: no class out of int64


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 * MAX_AMOUNT), st.integers(0, 2 * MAX_AMOUNT),
                          st.sampled_from(["whole", "share", "none"])), min_size=1, max_size=8),
       st.floats(allow_nan=True, allow_infinity=True))
def test_no_demand_or_weight_can_break_the_mix_learner(pods: list[tuple[int, int, str]], weight: float) -> None:
    """Whatever demands are offered, a Demand either refuses them or the mix stays usable; a bad
    weight is refused and changes nothing."""
    learner = MixLearner(refresh_every=1)
    for cpu, mem, kind in pods:
        try:
            d = (Demand.whole(1, cpu_milli=cpu, host_memory_mib=mem) if kind == "whole"
                 else Demand.share(0, 500, cpu_milli=cpu, host_memory_mib=mem) if kind == "share"
                 else Demand.none(cpu_milli=cpu, host_memory_mib=mem))
        except ValueError:
            assert cpu > MAX_AMOUNT or mem > MAX_AMOUNT
            continue
        learner.observe(d)
    before = learner.mix()
    if not (math.isfinite(weight) and 0 <= weight <= 1e6):
        with pytest.raises(ValueError):
            learner.observe(Demand.whole(1), weight)
        assert learner.mix() is before
    mix = learner.mix()
    _, _, cpu_arr, mem_arr = mix.arrays()
    assert (cpu_arr <= MAX_AMOUNT).all() and (mem_arr <= MAX_AMOUNT).all()
    assert math.isclose(float(mix.prob.sum()) + mix.cpu_only, 1.0) or len(mix) == 0


def test_a_node_claiming_absurd_gpu_counts_is_an_unreadable_inventory_at_once() -> None:
    """Node quantities cross the same edge: a label of 10^12 GPUs is refused before any GPU is built."""
    from scheduler.translate.inventory import InvalidInventory, node_from_k8s

    n = {"metadata": {"name": "liar", "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
         "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "1000000000000"}}}
    with pytest.raises(InvalidInventory, match="more than a node can have"):
        node_from_k8s(n)
    n["status"]["allocatable"] = {"cpu": HUGE, "memory": "512Gi", "nvidia.com/gpu": "8"}
    with pytest.raises(InvalidInventory, match="out of range"):
        node_from_k8s(n)
