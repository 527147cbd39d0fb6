"""`gpupack bench group-latency`: how long planning a pod group takes, against kube-scheduler's httpTimeout.

The cluster: benchmarks.latency's `nodes` nodes x 8 A100-80GB on NVSwitch, half of the GPUs booked by
recorded pods (0..8 whole GPUs per node, uniform). The group: `members` pods of `gpus` whole GPUs each, NVLink.
Two measurements, each over `plans` plans:
  binpack   place_group alone on the cluster's snapshot (greedy, then CP-SAT under the extender's time
            limit, one worker), the snapshot changed by one booking between plans so nothing cached per
            generation flatters it
  extender  inside ClusterState + PodGroups + the filter Engine, as a filter call of the member that
            completes the group runs it: plan, reserve all members under the state lock, answer for the
            5,000 node names; then the filter of each other member (pinned to its reserved node); then
            the group is deleted (its reservations released) and the next one comes
Reported: p50 / p99 / max in ms, the plans' status, nodes used per plan, and the margin to the 5 s
default httpTimeout.

    python -m benchmarks.group_latency [--nodes 5000] [--members 32] [--gpus 8] [--plans 40] [--json]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import typer

from benchmarks.latency import build_cluster

HTTP_TIMEOUT_S = 5.0


def _ms(xs: Sequence[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1e3
    return {"p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2), "n": len(a)}


def _member(group: str, i: int, size: int, gpus: int) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)}
    return {"metadata": {"name": f"{group}-{i}", "namespace": "bench", "uid": f"{group}-uid-{i}",
                         "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"gpupack.io/pod-group": group, "gpupack.io/pod-group-min": str(size),
                                         "gpupack.io/topology": "nvlink"}},
            "spec": {"containers": [{"name": "main", "resources": {
                "limits": limits, "requests": {"cpu": "4", "memory": "32Gi", **limits}}}],
                "schedulerName": "gpupack-scheduler", "priority": 0},
            "status": {"phase": "Pending"}}


def _binpack(node_objs: list[Any], pods: list[Any], members: int, gpus: int, plans: int,
             plan_s: float) -> dict[str, Any]:
    from binpack import Demand, Snapshot, Topology, allocate, place_group, release
    from binpack.catalog import FULL_MILLI
    from scheduler.translate.devices import placement_from
    from scheduler.translate.inventory import node_from_k8s

    snap = Snapshot.build([node_from_k8s(n) for n in node_objs])
    booked = [p for p in (placement_from(q["metadata"]["annotations"]) for q in pods) if p is not None]
    for p in booked:
        snap = allocate(snap, p)
    with snap.read() as v:
        free = v.free_milli()[snap.static.valid]
        fill = 1 - float(free.sum()) / (FULL_MILLI * free.size)
    demand = Demand.whole(gpus, topology=Topology.NVLINK, cpu_milli=4000, host_memory_mib=32 * 1024)
    times, status, nodes_used = [], Counter[str](), []
    for k in range(plans):
        p = booked[k % len(booked)]  # one booking off and on again: a new generation, the same fill
        snap = allocate(release(snap, p), p)
        t0 = time.perf_counter()
        r = place_group(snap, [demand] * members, time_limit_s=plan_s, workers=1, seed=0)
        times.append(time.perf_counter() - t0)
        status[r.status.value] += 1
        nodes_used.append(len(r.nodes))
    return {"plan_ms": _ms(times), "status": dict(status), "nodes_used_median": float(np.median(nodes_used)),
            "gpus_booked_share": round(fill, 3)}


def _extender(node_objs: list[Any], pods: list[Any], members: int, gpus: int, plans: int,
              plan_s: float) -> dict[str, Any]:
    from scheduler.extender.verdicts import Engine
    from scheduler.groups import GroupSettings, PodGroups
    from scheduler.state.cluster import ClusterState
    from scheduler.state.kubeapi import WatchEvent
    from scheduler.state.plugin import Plugins

    state = ClusterState(assume_ttl_s=60.0, mix_refresh_s=5.0)
    state.replace("nodes", node_objs)
    state.replace("pods", pods)
    groups = PodGroups(state, settings=GroupSettings(plan_s=plan_s, round_s=max(plan_s, 2.0)))
    engine = Engine(plugins=Plugins(groups))
    names = list(state.view().snapshot.names)
    planning, pinned, reserved = [], [], 0

    def filter_call(pod: dict[str, Any]) -> tuple[float, list[str]]:
        t0 = time.perf_counter()
        view = state.view()
        req = state.request(pod)
        out = engine.filter(view, req, "", engine.names(view, names))
        return time.perf_counter() - t0, out.passed_names or []

    for k in range(plans):
        group = [_member(f"g{k}", i, members, gpus) for i in range(members)]
        for p in group:
            state.push("pods", WatchEvent("ADDED", p))  # the watch brings the members
        dt, passed = filter_call(group[-1])  # the member that completes the group plans it
        planning.append(dt)
        if passed:
            reserved += 1
            for p in group[:-1]:
                pinned.append(filter_call(p)[0])
        for p in group:
            state.push("pods", WatchEvent("DELETED", p))  # the job goes away: its reservations are freed
        assert not state.assumed(), "a deleted group left reservations behind"
    return {"filter_planning_ms": _ms(planning), "filter_pinned_ms": _ms(pinned) if pinned else None,
            "groups_reserved": reserved, "groups": plans}


def build_half_full(n_nodes: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """benchmarks.latency's nodes, with 0..8 whole GPUs booked per node (uniform: half of all GPUs on
    average, one node in nine wholly free) by bound pods carrying their devices records."""
    from binpack import Placement
    from scheduler.translate.devices import annotations_for
    from scheduler.translate.inventory import node_from_k8s
    from scheduler.translate.pod import read_pod

    node_objs, _ = build_cluster(n_nodes, seed)
    rng = np.random.default_rng(seed)
    pods = []
    for i, obj in enumerate(node_objs):
        used = int(rng.integers(0, 9))
        if not used:
            continue
        node = node_from_k8s(obj)
        limits = {"nvidia.com/gpu": str(used)}
        pod: dict[str, Any] = {
            "metadata": {"name": f"busy-{i}", "namespace": "bench", "uid": f"busy-uid-{i}", "annotations": {}},
            "spec": {"containers": [{"name": "main", "resources": {"limits": limits, "requests": dict(limits)}}],
                     "nodeName": node.name}, "status": {"phase": "Running"}}
        placement = Placement(node.name, gpus=tuple(range(used)))
        pod["metadata"]["annotations"] = annotations_for(read_pod(pod), placement, node)
        pods.append(pod)
    return node_objs, pods


def run_group_latency(n_nodes: int = 5000, members: int = 32, gpus: int = 8, plans: int = 40,
                      plan_s: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Both measurements on one synthetic cluster; figures in ms."""
    node_objs, pods = build_half_full(n_nodes, seed)
    out: dict[str, Any] = {"nodes": n_nodes, "members": members, "gpus_per_member": gpus, "plans": plans,
                           "plan_time_limit_s": plan_s, "http_timeout_s": HTTP_TIMEOUT_S, "cores": os.cpu_count(),
                           "load_average": round(os.getloadavg()[0], 2)}
    out["binpack"] = _binpack(node_objs, pods, members, gpus, plans, plan_s)
    out["extender"] = _extender(node_objs, pods, members, gpus, plans, plan_s)
    worst = max(out["binpack"]["plan_ms"]["p99"], out["extender"]["filter_planning_ms"]["p99"])
    out["margin_to_http_timeout"] = round(HTTP_TIMEOUT_S * 1e3 / worst, 1) if worst else None
    return out


def _report(r: dict[str, Any]) -> str:
    b, e = r["binpack"], r["extender"]
    lines = [f"pod group of {r['members']} x {r['gpus_per_member']} GPUs (NVLink) on {r['nodes']} nodes x 8 GPUs, "
             f"{b['gpus_booked_share']:.0%} of GPU capacity booked; CP-SAT limit {r['plan_time_limit_s']} s, 1 worker",
             f"{'measurement':<40}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'n':>6}"]
    for label, m in (("binpack place_group", b["plan_ms"]), ("extender filter that plans + reserves", e[
            "filter_planning_ms"]), ("extender filter of a pinned member", e["filter_pinned_ms"])):
        if m is not None:
            lines.append(f"{label:<40}{m['p50']:>10}{m['p99']:>10}{m['max']:>10}{m['n']:>6}")
    lines.append(f"plans: {b['status']}, median nodes used {b['nodes_used_median']}; "
                 f"groups reserved in the extender: {e['groups_reserved']}/{e['groups']}")
    lines.append(f"worst p99 is 1/{r['margin_to_http_timeout']} of the {r['http_timeout_s']} s httpTimeout; "
                 f"{r['cores']} cores, load average {r['load_average']}")
    return "\n".join(lines)


def register(bench: typer.Typer) -> None:
    @bench.command("group-latency")
    def group_latency(nodes: int = typer.Option(5000, help="Nodes in the synthetic cluster (8 GPUs each)"),
                      members: int = typer.Option(32, help="Members of the pod group"),
                      gpus: int = typer.Option(8, help="Whole GPUs per member"),
                      plans: int = typer.Option(40, help="Plans per measurement"),
                      json: bool = typer.Option(False, "--json", help="Print the figures as JSON")) -> None:
        """Pod-group planning time (binpack alone, and inside the extender), p50/p99 against httpTimeout."""
        r = run_group_latency(nodes, members, gpus, plans)
        typer.echo(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() if json else _report(r))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--plans", type=int, default=40)
    ap.add_argument("--plan-s", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run_group_latency(a.nodes, a.members, a.gpus, a.plans, a.plan_s)
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() if a.json else _report(r))


if __name__ == "__main__":
    main()
