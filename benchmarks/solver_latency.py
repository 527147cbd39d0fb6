"""Solver latency at cluster scale: fit + score per demand kind, allocate / release, snapshot memory.

The cluster: `nodes` nodes of `gpus_per_node` GPUs, mixed models (HGX H100 and A100 on NVSwitch,
DGX-1 V100 cube-mesh, A100-40GB PCIe in bridged pairs, L4 PCIe-only), about 30% of GPUs in MIG mode
(static layouts and dynamic), about half of the capacity booked. Every timed call reads a fresh
snapshot generation (one allocate or release in between, untimed), as the scheduler does after
each bind, so nothing cached per generation flatters the figures.

    python -m benchmarks.solver_latency            # 5,000 nodes x 8 GPUs
Targets: fit+score p50 <= 1 ms and p99 <= 2 ms per kind, allocate and release <= 50 us, <= 50 MB.
Also printed: the first fit+score after the mix changes, which recomputes what frag.current keeps.
Also: two pod groups through place_group (2 s limit, one worker) against greedy alone.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from binpack import (
    Conflict,
    Demand,
    Gpu,
    GroupStatus,
    MigInstance,
    MigMode,
    MixLearner,
    Node,
    Placement,
    Snapshot,
    Topology,
    allocate,
    fit,
    place,
    place_group,
    release,
    score,
)
from binpack.score import ScorePolicy, forget
from binpack.topology import bridged_pairs, dgx1_v100, nvswitch, pcie_only
from binpack.types import DemandKind, MigSlot

GI = 1024
TARGETS = {"fit_score_p50_ms": 1.0, "fit_score_p99_ms": 2.0, "allocate_us": 50.0, "release_us": 50.0,
           "snapshot_mb": 50.0}
LAYOUTS = {  # stock mig-parted layouts for the 8-slot parts, by 1g profile name
    "all-1g": lambda g1, g2, g4: tuple(MigInstance(g1, s) for s in range(7)),
    "balanced": lambda g1, g2, g4: (MigInstance(g1, 0), MigInstance(g1, 1), MigInstance(g2, 2), MigInstance(g4, 4)),
    "two-3g": lambda g1, g2, g4: (MigInstance(g4, 0), MigInstance(g4, 4)),
    "all-2g": lambda g1, g2, g4: tuple(MigInstance(g2, s) for s in (0, 2, 4)),
}
NAMES = {"H100-SXM5-80GB": ("1g.10gb", "2g.20gb", "3g.40gb"), "A100-SXM4-80GB": ("1g.10gb", "2g.20gb", "3g.40gb"),
         "A100-SXM4-40GB": ("1g.5gb", "2g.10gb", "3g.20gb")}

KINDS: dict[str, Demand] = {
    "whole-1": Demand.whole(1, cpu_milli=4_000, host_memory_mib=32 * GI),
    "whole-2": Demand.whole(2, cpu_milli=8_000, host_memory_mib=64 * GI),
    "whole-4-nvlink": Demand.whole(4, topology=Topology.NVLINK, cpu_milli=16_000, host_memory_mib=128 * GI),
    "whole-8-nvlink": Demand.whole(8, topology=Topology.NVLINK, cpu_milli=32_000, host_memory_mib=256 * GI),
    "whole-2-h100": Demand.whole(2, models=frozenset({"H100-SXM5-80GB"}), cpu_milli=8_000),
    "share-25%": Demand.share(10 * GI, 250, cpu_milli=2_000, host_memory_mib=8 * GI),
    "share-mem-only": Demand.share(20 * GI, 0, cpu_milli=2_000),
    "mig-1g.10gb": Demand.mig("1g.10gb", 1, cpu_milli=2_000),
    "mig-3g.40gb-x2": Demand.mig("3g.40gb", 2, cpu_milli=8_000),
    "mig-1g.5gb-a100-40": Demand.mig("1g.5gb", 1, models=frozenset({"A100-SXM4-40GB"})),
    "cpu-only": Demand.none(cpu_milli=1_000, host_memory_mib=1 * GI),
}


GROUPS: dict[str, list[Demand]] = {  # pod groups for place_group, at most 2 s each
    "32x4-nvlink": [KINDS["whole-4-nvlink"]] * 32,
    "16x2+8share+8mig": [KINDS["whole-2"]] * 16 + [KINDS["share-25%"]] * 8 + [KINDS["mig-1g.10gb"]] * 8,
}


def build_nodes(nodes: int, gpus_per_node: int, rng: np.random.Generator) -> list[Node]:
    """The mixed cluster described in the module docstring."""
    out = []
    n = gpus_per_node
    for i in range(nodes):
        r = rng.random()
        if r < 0.3:
            model, (nv, pc) = "H100-SXM5-80GB", nvswitch(n, 18)
        elif r < 0.6:
            model, (nv, pc) = "A100-SXM4-80GB", nvswitch(n, 12)
        elif r < 0.7 and n == 8:
            model, (nv, pc) = "V100-SXM2-32GB", dgx1_v100()
        elif r < 0.8:
            model, (nv, pc) = "A100-SXM4-40GB", bridged_pairs(tuple((a, a + 1) for a in range(0, n - 1, 2)), n)
        else:
            model, (nv, pc) = "L4", pcie_only(n)
        gpus = []
        for g in range(n):
            mode: MigMode = MigMode.NONE
            layout: tuple[MigInstance, ...] = ()
            if model in NAMES and rng.random() < 0.43:  # 70% of GPUs can do MIG; 30% of all GPUs do
                if rng.random() < 0.75:
                    mode = MigMode.STATIC
                    layout = LAYOUTS[str(rng.choice(list(LAYOUTS)))](*NAMES[model])
                else:
                    mode = MigMode.DYNAMIC
            gpus.append(Gpu(g, model, uuid=f"GPU-{i}-{g}", mig_mode=mode, mig_instances=layout))
        out.append(Node(f"node-{i:05d}", tuple(gpus), 128_000, 1_024 * GI, nv, pc))
    return out


def fill(snap: Snapshot, rng: np.random.Generator) -> Snapshot:
    """Book about half of everything: whole GPUs, shares, MIG instances, CPU and memory, node by node."""
    for node in snap.static.nodes:
        level = rng.random()
        plain = [g for g in node.gpus if g.mig_mode is MigMode.NONE]
        rng.shuffle(plain)
        take = plain[: round(level * len(plain))]
        bookings: list[Placement] = []
        whole = [g.index for g in take if rng.random() < 0.7]
        for a in range(0, len(whole), 2):
            bookings.append(Placement(node.name, tuple(whole[a:a + 2]), cpu_milli=8_000, host_memory_mib=64 * GI))
        for g in take:
            if g.index not in whole:
                mem = int(g.memory_mib * rng.uniform(0.1, 0.6))
                comp = int(rng.integers(100, 600))
                bookings.append(Placement(node.name, (g.index,), memory_mib=mem, compute_milli=comp, cpu_milli=2_000,
                                          kind=DemandKind.SHARE))
        for g in node.gpus:
            if g.mig_mode is MigMode.STATIC:
                for inst in g.mig_instances:
                    if rng.random() < level:
                        bookings.append(Placement(node.name, mig=(MigSlot(g.index, inst.profile, inst.start),),
                                                  kind=DemandKind.MIG))
            elif g.mig_mode is MigMode.DYNAMIC and rng.random() < level:
                slot = MigSlot(g.index, NAMES[g.model][0], int(rng.integers(0, 7)))
                bookings.append(Placement(node.name, mig=(slot,), kind=DemandKind.MIG))
        for p in bookings:
            try:
                snap = allocate(snap, p)
            except Conflict:
                continue  # e.g. out of CPU on a busy node: fine, the cluster is only roughly half full
    return snap


def _mix() -> MixLearner:
    learner = MixLearner()
    for d, w in ((KINDS["whole-1"], 30), (KINDS["whole-2"], 10), (KINDS["whole-4-nvlink"], 5),
                 (KINDS["whole-8-nvlink"], 5), (KINDS["share-25%"], 30), (Demand.share(40 * GI, 500), 20),
                 (KINDS["whole-2-h100"], 5)):  # a model-restricted class: the contention term runs
        for _ in range(w):
            learner.observe(d)
    return learner


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time, and this thread's CPU time (which leaves out time other processes took the core)."""
    t, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t, time.thread_time() - c


def settle_malloc() -> None:
    """Put glibc's allocator in the state a long-running scheduler reaches on its own.

    glibc hands the top of the heap back to the OS whenever more than a trim threshold is free; the
    threshold starts at 128 KiB and rises for good the first time a large block is freed. A scheduler
    that has rebuilt a snapshot or parsed a big request is past that point; a fresh process is not,
    and every call would pay page faults for its temporaries (about twice the time here). Setting
    MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_THRESHOLD_ in the environment has the same effect."""
    block = np.ones(16 << 20, np.uint8)  # below glibc's 32 MiB cap on the dynamic threshold
    del block


def run_solver_latency(nodes: int = 5000, gpus_per_node: int = 8, repeats: int = 200,
                       seed: int = 0, *, settle: bool = True) -> dict[str, float]:
    """Measure; keys are `<figure>.<kind>` for per-kind figures, plain names otherwise.
    `settle`: call settle_malloc() first (False shows a fresh process's page-fault cost)."""
    if settle:
        settle_malloc()
    rng = np.random.default_rng(seed)
    cluster = build_nodes(nodes, gpus_per_node, rng)
    tracemalloc.start()
    base = Snapshot.build(cluster)
    built, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    snap = fill(base, rng)
    mix = _mix().mix()
    # a long-running scheduler does the same after loading its cluster: the cluster's hundred
    # thousand Python objects leave the garbage collector's scans (otherwise a full scan stalls a call)
    gc.collect()
    gc.freeze()
    out: dict[str, float] = {"nodes": float(nodes), "gpus": float(nodes * gpus_per_node),
                             "snapshot_mb": snap.nbytes() / 1e6, "build_traced_mb": built / 1e6,
                             "build_peak_mb": build_peak / 1e6}
    with snap.read() as v:
        out["gpus_booked_frac"] = 1 - float(v.free_milli().sum()) / (1000 * float(v.s.valid.sum()))
    # a placement to flip between generations: each timed call below reads a new snapshot
    flip = place(snap, KINDS["whole-1"], snap.names[int(np.argmax(fit(snap, KINDS["whole-1"]).fits))])
    assert flip is not None
    # the kinds take turns, call by call: this VM's speed drifts over seconds, and timing one kind
    # after another would hand each kind a different phase of it. Two rounds: as kube-scheduler
    # asks after a bind (score remembers the demand's values and redoes the node that changed), and
    # with nothing remembered (a demand not seen lately: a full pass)
    times: dict[str, list[float]] = {f"{how}.{name}": [] for name in KINDS for how in ("bind", "full")}
    cpu_times: dict[str, list[float]] = {key: [] for key in times}
    cur, booked = snap, False
    for how in ("bind", "full"):
        for _ in range(repeats + 5):
            for name, d in KINDS.items():
                cur = release(cur, flip) if booked else allocate(cur, flip)
                booked = not booked
                if how == "full":
                    forget(cur.static)
                wall, cpu = _timed(lambda c=cur, d=d: score(fit(c, d), mix))  # type: ignore[misc]
                times[f"{how}.{name}"].append(wall)
                cpu_times[f"{how}.{name}"].append(cpu)
    for name, d in KINDS.items():
        for how, prefix in (("bind", "fit_score"), ("full", "fit_score_full")):
            ts = np.asarray(times[f"{how}.{name}"][5:]) * 1e3  # the first calls fill caches
            cs = np.asarray(cpu_times[f"{how}.{name}"][5:]) * 1e3
            out[f"{prefix}_p50_ms.{name}"] = float(np.percentile(ts, 50))
            out[f"{prefix}_p99_ms.{name}"] = float(np.percentile(ts, 99))
            out[f"{prefix}_cpu_p50_ms.{name}"] = float(np.percentile(cs, 50))
            out[f"{prefix}_cpu_p99_ms.{name}"] = float(np.percentile(cs, 99))
        out[f"fits_nodes.{name}"] = float(fit(snap, d).fits.sum())
    # the first score after the mix changes recomputes every node's state before (frag.current keeps
    # it per mix and recomputes only changed nodes after that); the extender refreshes its mix every 2 s by default
    for name in ("whole-1", "share-25%"):
        d = KINDS[name]
        cold = []
        for _ in range(max(repeats // 10, 3)):
            fresh = _mix().mix()  # an equal mix, but a new object: nothing kept for it yet
            cold.append(_timed(lambda f=fresh, d=d: score(fit(snap, d), f))[0])  # type: ignore[misc]
        out[f"fit_score_cold_ms.{name}"] = float(np.median(cold) * 1e3)
    # what gpupack's balance and contention terms cost over FGD's measure alone: interleaved, one run
    fgd_only = ScorePolicy(balance=0.0, contention=0.0)
    for name in ("whole-1", "share-25%", "cpu-only"):
        d = KINDS[name]
        verdict = fit(snap, d)
        ours, theirs = [], []
        for _ in range(repeats):  # full passes: what the terms cost, not what is remembered
            forget(snap.static)
            ours.append(_timed(lambda v=verdict: score(v, mix))[1])  # type: ignore[misc]
            forget(snap.static)
            theirs.append(_timed(lambda v=verdict: score(v, mix, policy=fgd_only))[1])  # type: ignore[misc]
        out[f"terms_cost_ratio.{name}"] = float(np.median(ours) / np.median(theirs))
    for name in ("whole-2", "share-25%", "mig-1g.10gb"):
        d = KINDS[name]
        p = place(snap, d, snap.names[int(np.argmax(fit(snap, d).fits))])
        assert p is not None
        alloc_t, rel_t = [], []
        cur = snap
        for _ in range(repeats * 5):  # as the scheduler does: each step on the newest snapshot
            t = time.perf_counter()
            cur = allocate(cur, p)
            t1 = time.perf_counter()
            cur = release(cur, p)
            alloc_t.append(t1 - t)
            rel_t.append(time.perf_counter() - t1)
        out[f"allocate_us.{name}"] = float(np.percentile(np.asarray(alloc_t) * 1e6, 50))
        out[f"release_us.{name}"] = float(np.percentile(np.asarray(rel_t) * 1e6, 50))
        out[f"allocate_p99_us.{name}"] = float(np.percentile(np.asarray(alloc_t) * 1e6, 99))
    for name, members in GROUPS.items():
        r = place_group(snap, members, mix, time_limit_s=2.0, workers=1, seed=seed)
        out[f"group_s.{name}"] = r.wall_s
        out[f"group_nodes.{name}"] = float(len(r.nodes))
        out[f"group_status.{name}"] = float(list(GroupStatus).index(r.status))
        greedy = place_group(snap, members, mix, time_limit_s=0)
        out[f"group_greedy_nodes.{name}"] = float(len(greedy.nodes))
    gc.unfreeze()  # leave the calling process as it was
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.solver_latency", description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh-malloc", action="store_true", help="skip settle_malloc (see its docstring)")
    args = ap.parse_args(argv)
    res = run_solver_latency(args.nodes, args.gpus_per_node, args.repeats, args.seed, settle=not args.fresh_malloc)
    print(f"cluster: {res['nodes']:.0f} nodes, {res['gpus']:.0f} GPUs, {res['gpus_booked_frac']:.0%} of GPU capacity "
          f"booked; snapshot {res['snapshot_mb']:.1f} MB (nbytes), build traced {res['build_traced_mb']:.1f} MB, "
          f"peak {res['build_peak_mb']:.1f} MB (target <= {TARGETS['snapshot_mb']:.0f} MB)")
    print(f"fit+score, wall ms{'':<14}{'after a bind':>16}{'nothing remembered':>22}   target p50 <= 1 ms, p99 <= 2 ms")
    print(f"{'demand kind':<22}{'fits on':>9}{'p50':>8}{'p99':>8}{'p50':>11}{'p99':>8}")
    for name in KINDS:
        p50, p99 = res[f"fit_score_p50_ms.{name}"], res[f"fit_score_p99_ms.{name}"]
        f50, f99 = res[f"fit_score_full_p50_ms.{name}"], res[f"fit_score_full_p99_ms.{name}"]
        flags = ["ok" if a <= TARGETS["fit_score_p50_ms"] and b <= TARGETS["fit_score_p99_ms"] else "MISS"
                 for a, b in ((p50, p99), (f50, f99))]
        fits = res[f"fits_nodes.{name}"]
        print(f"{name:<22}{fits:>9.0f}{p50:>8.3f}{p99:>8.3f}{f50:>11.3f}{f99:>8.3f}   {flags[0]} / {flags[1]}")
    cold = ", ".join(f"{n} {res[f'fit_score_cold_ms.{n}']:.2f} ms" for n in ("whole-1", "share-25%"))
    print(f"first fit+score after the mix changes (every node's state recomputed), median wall: {cold}")
    ratios = ", ".join(f"{n} {res[f'terms_cost_ratio.{n}']:.2f}x" for n in ("whole-1", "share-25%", "cpu-only"))
    print(f"score with balance + contention over FGD's measure alone (median CPU, same run): {ratios}")
    for name in ("whole-2", "share-25%", "mig-1g.10gb"):
        a50, a99, r50 = res[f"allocate_us.{name}"], res[f"allocate_p99_us.{name}"], res[f"release_us.{name}"]
        print(f"allocate {name:<13} p50 {a50:6.1f} us (p99 {a99:6.1f})   release p50 {r50:6.1f} us   target <= 50 us")
    for name in GROUPS:
        status = list(GroupStatus)[int(res[f"group_status.{name}"])].value
        print(f"place_group {name:<17} {status:<16} {res[f'group_nodes.{name}']:.0f} nodes "
              f"(greedy alone {res[f'group_greedy_nodes.{name}']:.0f}) in {res[f'group_s.{name}']:.2f} s (limit 2 s)")


if __name__ == "__main__":
    main()
