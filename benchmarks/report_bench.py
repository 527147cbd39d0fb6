"""`gpupack bench report`: how long `gpupack report` takes on a large cluster dump.

Generates a `kubectl get nodes,pods -A -o json`-shaped dump (default 5,000 nodes of `bench
synthetic`'s kinds and 50,000 pods: bound GPU pods with gpupack's devices record, some bound
without it as another scheduler would leave them, CPU-only pods, and pending GPU pods, some too
big for any node), writes it to a temporary file, and times each stage of the report: reading the
file, the cluster picture (ClusterState), the per-model table, the pending pods' reasons, and the
replay per policy.

    gpupack bench report [--nodes 5000] [--pods 50000] [--no-replay] [--json]
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import typer

Obj = dict[str, Any]
_ASKS: tuple[tuple[dict[str, str], dict[str, str], float], ...] = (  # (limits, annotations, weight)
    ({"nvidia.com/gpu": "1"}, {}, 0.30),
    ({"nvidia.com/gpu": "2"}, {}, 0.10),
    ({"nvidia.com/gpu": "4"}, {"gpupack.io/topology": "nvlink"}, 0.05),
    ({"gpupack.io/gpu-memory": "20000", "gpupack.io/gpu-compute": "25"}, {}, 0.25),
    ({"gpupack.io/gpu-memory": "10000", "gpupack.io/gpu-compute": "50"}, {}, 0.10),
    ({"nvidia.com/mig-1g.10gb": "1"}, {}, 0.12),
    ({"nvidia.com/mig-3g.40gb": "1"}, {}, 0.08),
)


def _pod(i: int, limits: dict[str, str], ann: dict[str, str], node: str, created: int) -> Obj:
    from benchmarks.latency import _pod as shaped

    p = shaped(i, limits, ann, node)
    p["kind"] = "Pod"
    p["metadata"]["namespace"] = f"team-{i % 40}"
    p["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_790_000_000 + created))
    return p


def make_dump(n_nodes: int = 5000, n_pods: int = 50_000, seed: int = 0) -> Obj:
    """A v1 List of Nodes and Pods; bound pods are placed with binpack on each node, so records are valid."""
    from benchmarks.synthetic import make_cluster
    from binpack import Snapshot, allocate, place
    from scheduler.state.standalone import node_object
    from scheduler.translate.devices import annotations_for
    from scheduler.translate.pod import read_pod

    rng = np.random.default_rng(seed)
    nodes = [dataclasses.replace(n, gpus=tuple(dataclasses.replace(g, uuid=f"GPU-{n.name}-{g.index}")
                                               for g in n.gpus)) for n in make_cluster(n_nodes)]
    weights = np.asarray([w for _, _, w in _ASKS])
    weights = weights / weights.sum()
    per_node = max(n_pods // max(n_nodes, 1), 1)
    order = rng.permutation(n_pods)  # creation times interleave nodes, as arrivals do
    pods: list[Obj] = []
    bound = int(n_pods * 0.97)
    for node in nodes:
        snap = Snapshot.build([node])
        added = 0
        for _ in range(4 * per_node):  # asks that no longer fit the node are skipped
            if added >= per_node or len(pods) >= bound:
                break
            i = len(pods)
            if rng.random() < 0.35:  # CPU-only pods share the GPU nodes
                pods.append(_pod(i, {"cpu": "2"}, {}, node.name, int(order[i])))
                added += 1
                continue
            limits, ann, _ = _ASKS[int(rng.choice(len(_ASKS), p=weights))]
            p = _pod(i, limits, ann, node.name, int(order[i]))
            req = read_pod(p)
            pl = place(snap, req.demand, node.name)
            if pl is None:
                continue
            snap = allocate(snap, pl)
            if rng.random() < 0.9:  # the rest: bound by another scheduler, no devices record
                p["metadata"]["annotations"] = {**ann, **annotations_for(req, pl, node)}
            pods.append(p)
            added += 1
    while len(pods) < n_pods:  # pending GPU pods; every tenth asks for more than any node has
        i = len(pods)
        limits, ann, _ = _ASKS[int(rng.choice(len(_ASKS), p=weights))]
        if i % 10 == 0:
            limits, ann = {"nvidia.com/gpu": "8"}, {"gpupack.io/gpu-model": "T4"}
        pods.append(_pod(i, limits, ann, "", int(order[i % len(order)])))
    return {"apiVersion": "v1", "kind": "List", "metadata": {},
            "items": [node_object(n) for n in nodes] + pods}


def run_report_bench(n_nodes: int = 5000, n_pods: int = 50_000, replay: bool = True, seed: int = 0) -> dict[str, Any]:
    """Generate the dump, then time each stage of `gpupack report` on it (seconds, wall)."""
    from scheduler.report.analyze import pending, per_model, read
    from scheduler.report.bulk import bulk_read
    from scheduler.report.dump import load
    from scheduler.report.replay import POLICIES, start

    t = time.perf_counter()
    doc = make_dump(n_nodes, n_pods, seed)
    out: dict[str, Any] = {"nodes": n_nodes, "pods": n_pods, "generate_s": round(time.perf_counter() - t, 2)}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dump.json"
        path.write_bytes(orjson.dumps(doc))
        out["dump_mib"] = round(path.stat().st_size / 2**20, 1)
        del doc
        stages: dict[str, float] = {}
        t0 = t = time.perf_counter()
        with bulk_read():  # as `gpupack report` reads: the cyclic GC paused meanwhile
            dump = load(path)
            stages["read file"] = time.perf_counter() - t
            t = time.perf_counter()
            running = start(dump, POLICIES) if replay else None  # as `gpupack report` does: some begin now
            pic = read(dump)
            stages["cluster picture"] = time.perf_counter() - t
        t = time.perf_counter()
        models = per_model(pic.snapshot, pic.mix)
        stages["per-model table"] = time.perf_counter() - t
        t = time.perf_counter()
        waiting = pending(pic)
        stages["pending reasons"] = time.perf_counter() - t
        if running is not None:
            t = time.perf_counter()
            rows = running.finish(pic)
            stages["replay (after the pending reasons)"] = time.perf_counter() - t
            for row in rows[1:]:  # in their own processes, each from its own start
                out.setdefault("replay_policy_s", {})[row.policy] = row.seconds
        out["total_s"] = round(time.perf_counter() - t0, 2)
    out["stages_s"] = {k: round(v, 2) for k, v in stages.items()}
    out["gpus"] = sum(m.gpus for m in models)
    out["pending"] = len(waiting)
    out["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine slows every stage
    return out


def register(bench: typer.Typer) -> None:
    @bench.command("report")
    def report(nodes: int = typer.Option(5000, min=1, help="nodes in the generated dump"),
               pods: int = typer.Option(50_000, min=1, help="pods in the generated dump"),
               replay: bool = typer.Option(True, help="time the replay too (three policies)"),
               json: bool = typer.Option(False, "--json", help="print the figures as JSON")) -> None:
        """Time `gpupack report` on a generated dump (default 5,000 nodes, 50,000 pods)."""
        from rich.console import Console
        from rich.table import Table

        r = run_report_bench(nodes, pods, replay)
        if json:
            typer.echo(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
            return
        t = Table(title=f"gpupack report on {r['nodes']:,} nodes, {r['pods']:,} pods ({r['gpus']:,} GPUs, "
                        f"{r['pending']:,} pending; dump {r['dump_mib']} MiB)", title_justify="left")
        t.add_column("stage")
        t.add_column("seconds", justify="right")
        for k, v in r["stages_s"].items():
            t.add_row(k, f"{v:.2f}")
        t.add_section()
        t.add_row("total", f"{r['total_s']:.2f}")
        t.caption = f"{os.cpu_count()} cores, load average {r['load_average']} at the end"
        Console().print(t)
