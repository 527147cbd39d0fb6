"""`gpupack report`'s replay checked against `gpupack bench packing`: one bench packing workload written
as the dump `gpupack report --from` reads, and both run on it.

The dump (a v1 List, as `kubectl get nodes,pods -A -o json` writes): the trace's nodes in the seed's
tie-break order, each with gpupack's inventory annotation (the binpack Node bench packing's gpupack
builds: openb's undisclosed models get UNKNOWN_MEMORY_MIB); then one pending Pod per arrival, in
arrival order, created one second apart, asking for the task's CPU (`m`), memory (`Mi`), and
`nvidia.com/gpu: n` or a compute-only share (`gpupack.io/gpu-compute` in percent, exact to the
milli), with `gpupack.io/gpu-model` for a task restricted to some models.

What the two can differ in, and how the check removes it:
- FGD's typical pods: bench packing takes them from the trace's pod list (the file the arrivals
  are drawn from, with replacement); the dump holds only the arrivals. The check therefore runs
  bench packing's engine (benchmarks.simulate) with the arrivals themselves as its pod list
  (same tasks, same order, same tie-break order), built by the same `pod_table` the replay uses:
  FGD's choices and both fragmentation figures then come from the same typical pods. gpupack's and
  best-fit's choices never read the typical pods, so for them the plain bench packing run (the
  trace's pod list) is compared too and must agree as well.
- Nothing else: no departures (bench packing never deletes a task), no inflation (arrivals stop at
  130% of capacity; all of them are in the dump), ties broken by the node order in both.

    gpupack bench replay-check [--trace default] [--seeds 1] [--nodes N] [--dump FILE] [--json FILE]
"""

from __future__ import annotations

import dataclasses
import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import typer

from benchmarks.cluster import task_of
from benchmarks.packing import seeds_from
from benchmarks.policies.gpupack import binpack_nodes
from benchmarks.simulate import RunResult, simulate
from benchmarks.trace import FULL, SHIPPED_PODS, NodeTable, PodTable, load_trace
from benchmarks.workload import STOP, Arrivals, draw

Obj = dict[str, Any]
POLICIES = ("gpupack", "fgd", "best-fit")
EPOCH = 1_790_000_000  # the first arrival's creation time (seconds); arrival j is created j seconds later


def _percent(milli: int) -> str:
    """Per-GPU milli as the percent `gpupack.io/gpu-compute` takes, exact (810 -> "81", 125 -> "12.5")."""
    f = Fraction(milli, 10)
    return str(f.numerator) if f.denominator == 1 else f"{float(f):g}"


def task_pod(pods: PodTable, row: int, j: int) -> Obj:
    """Arrival j (pod table row `row`) as a pending Pod."""
    t = task_of(pods, row)
    limits: dict[str, str] = {}
    if t.num_gpu and (t.num_gpu > 1 or t.milli == FULL):
        limits["nvidia.com/gpu"] = str(t.num_gpu)
    elif t.num_gpu:
        limits["gpupack.io/gpu-compute"] = _percent(t.milli)
    ann = {"gpupack.io/gpu-model": "|".join(sorted(t.models))} if t.num_gpu and t.models else {}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH + j))
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"task-{j:06d}", "namespace": "trace", "uid": f"trace-{j:06d}",
                         "creationTimestamp": created, "annotations": ann,
                         "labels": {"gpupack.io/trace-row": str(row)}},
            "spec": {"schedulerName": "gpupack-scheduler",
                     "containers": [{"name": "task", "resources": {
                         "requests": {"cpu": f"{t.cpu}m", "memory": f"{t.mem}Mi", **limits}, "limits": limits}}]},
            "status": {"phase": "Pending"}}


def packing_dump(nodes: NodeTable, pods: PodTable, arrivals: Arrivals) -> Obj:
    """The workload of one bench packing run (nodes, arrivals in order) as a `kubectl get -o json` List."""
    from scheduler.state.standalone import node_object

    items = [node_object(n) for n in binpack_nodes(nodes, arrivals.node_order)]
    items += [task_pod(pods, int(row), j) for j, row in enumerate(arrivals.pods.tolist())]
    return {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}


def cut(nodes: NodeTable, pods: PodTable, seed: int, n_nodes: int) -> tuple[NodeTable, Arrivals]:
    """A smaller run of the same trace: the first n_nodes of the seed's tie-break order, and the seed's
    arrivals up to 130% of their capacity (a prefix of the full run's arrivals)."""
    full = draw(nodes, pods, seed)
    keep = full.node_order[:n_nodes]
    sub = NodeTable(nodes.source, tuple(nodes.names[i] for i in keep), nodes.cpu[keep], nodes.mem[keep],
                    nodes.gpus[keep], nodes.model[keep], nodes.models)
    arrived = np.cumsum(pods.gpu_milli[full.pods])
    last = int(np.searchsorted(arrived, STOP * sub.capacity_milli, side="right"))
    return sub, Arrivals(seed, full.pods[: last + 1], np.arange(n_nodes))


def arrived_table(pods: PodTable, arrivals: Arrivals) -> tuple[PodTable, Arrivals]:
    """The arrivals as bench packing's pod list, in order (row j = arrival j), built as the replay builds
    its own from the dump's pods, and the arrivals over it."""
    from benchmarks.report_choosers import shapes_table

    # the trace's own model names (the replay's are binpack's catalog names: V100M32 -> V100-SXM2-32GB),
    # numbered by first appearance as the replay numbers its own
    tasks = [task_of(pods, row) for row in arrivals.pods.tolist()]
    table = shapes_table([(t.cpu, t.mem, t.num_gpu, t.milli, t.models) for t in tasks],
                         f"{pods.source} (arrivals of seed {arrivals.seed})")
    return table, Arrivals(arrivals.seed, np.arange(len(tasks)), arrivals.node_order)


@dataclasses.dataclass(frozen=True)
class Figures:
    """One side's outcome after every arrival: pods placed, GPUs allocated, FGD fragmentation (GPUs)."""

    placed: int
    allocated: float
    frag: float


def _bench(r: RunResult) -> Figures:
    return Figures(r.tasks - r.failed, round(r.allocated_milli / FULL, 2), round(r.frag_milli / FULL, 2))


def check(trace: str = "default", seed: int = 42, n_nodes: int = 0, policies: tuple[str, ...] = POLICIES,
          workers: int = 0) -> dict[str, Any]:
    """bench packing and the report's replay on one workload; per policy both sides' figures."""
    from scheduler.report.analyze import read
    from scheduler.report.dump import split
    from scheduler.report.replay import replay

    nodes, pods = load_trace("openb", trace)
    if n_nodes:
        nodes, arrivals = cut(nodes, pods, seed, n_nodes)
    else:
        arrivals = draw(nodes, pods, seed)
    t0 = time.perf_counter()
    doc = packing_dump(nodes, pods, arrivals)
    pic = read(split(doc["items"], f"bench packing {trace} seed {seed}"))
    from scheduler.report.replay import listed_nodes

    if [n.name for n in listed_nodes(pic)] != [nodes.names[i] for i in arrivals.node_order]:
        raise AssertionError("the report did not read every node of the trace, in the seed's order")
    t1 = time.perf_counter()
    rows = {r.policy: r for r in replay(pic, policies, workers=workers)[1:]}
    t2 = time.perf_counter()
    table, over = arrived_table(pods, arrivals)
    out: dict[str, Any] = {
        "trace": trace, "seed": seed, "nodes": len(nodes.names), "gpus": nodes.capacity_milli // FULL,
        "pods": len(arrivals.pods), "dump_s": round(t1 - t0, 2), "replay_s": round(t2 - t1, 2), "policies": {}}
    for p in policies:
        r = rows[p]
        same_pods = _bench(simulate(p, nodes, table, over))
        plain = _bench(simulate(p, nodes, pods, arrivals))
        out["policies"][p] = {"report": dataclasses.asdict(Figures(r.placed, r.allocated, r.fgd_frag)),
                              "bench_packing": dataclasses.asdict(same_pods),
                              "bench_packing_trace_mix": dataclasses.asdict(plain)}
    return out


def register(bench: typer.Typer) -> None:
    @bench.command("replay-check")
    def replay_check(
        trace: Annotated[str, typer.Option(help=f"shipped pod list: {', '.join(SHIPPED_PODS)}")] = "default",
        seeds: Annotated[int, typer.Option(min=1, help="seeds 42, 43, ...")] = 1,
        nodes: Annotated[int, typer.Option(min=0, help="only the first N nodes of each seed's order (0: all)")] = 0,
        dump: Annotated[Path | None, typer.Option(help="also write the first seed's dump here")] = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="write the figures as JSON here")] = None,
    ) -> None:
        """`gpupack report`'s replay against `bench packing` on the same pods, per policy; exit 1 on a difference."""
        from rich.console import Console
        from rich.table import Table

        results: list[dict[str, Any]] = []
        for seed in seeds_from(seeds):
            if dump is not None and not results:
                write_dump(trace, seed, nodes, dump)
            results.append(check(trace, seed, nodes))
        t = Table(title=f"the report's replay and bench packing on {trace} (pods placed / GPUs allocated / FGD frag)",
                  title_justify="left")
        for col in ("seed", "policy", "report", "bench packing", "same?", "bench packing, trace's mix"):
            t.add_column(col)
        same = True
        for r in results:
            for p, f in r["policies"].items():
                ok = f["report"] == f["bench_packing"]
                same &= ok
                t.add_row(str(r["seed"]), p, *(" / ".join(str(v) for v in f[k].values())
                                                for k in ("report", "bench_packing")),
                          "yes" if ok else "NO", " / ".join(str(v) for v in f["bench_packing_trace_mix"].values()))
        Console(width=150).print(t)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(results, indent=1) + "\n")
        if not same:
            raise typer.Exit(1)


def write_dump(trace: str, seed: int, n_nodes: int, path: Path) -> None:
    """One bench packing run's workload as a dump file for `gpupack report --from`."""
    nodes, pods = load_trace("openb", trace)
    if n_nodes:
        nodes, arrivals = cut(nodes, pods, seed, n_nodes)
    else:
        arrivals = draw(nodes, pods, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(packing_dump(nodes, pods, arrivals)))
