"""`bench synthetic`: generated clusters and workloads where topology, MIG and gangs matter.

Clusters mix DGX H100 (NVSwitch), DGX-1 V100 (hybrid cube-mesh), HGX A100 with half the GPUs in
dynamic MIG, and PCIe T4/L4 nodes, up to thousands of nodes. Workloads mix multi-GPU jobs (some
requiring NVLink), shares, MIG slices and pod groups (all members or none), drawn with a seed
until the GPU request reaches `load` x capacity. Every policy books through binpack (so every
placement is valid); they differ in the node and device choice:
- gpupack: fit -> score against the learned mix -> place, as the extender does;
- fgd: the same path scored by FGD's rule alone (FGD's bucket width, without gpupack's balance,
  contention and pairing terms) against FGD's typical pods (the mix's frequent classes up to the
  coverage cut, without the multi-GPU classes gpupack keeps past it), members of a pod group one
  by one: FGD where FGD has no rule of its own;
- gpupack-no-contention, gpupack-cut-multi (when named): gpupack with one idea left out;
- first-fit / random / best-fit: the first / a random / the fullest node (least free GPU milli)
  where the demand fits, then the naive devices
  (the lowest free GPU indices, the first GPU a share fits on; MIG and NVLink-required sets use
  binpack's placement, the only valid choice a naive scheduler could make there).
Pod groups: gpupack places them with binpack's place_group (greedy, then CP-SAT within 0.2 s);
the baselines place members one by one and release them all if one does not fit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from binpack import Demand, DemandKind, MixLearner, Placement, Snapshot, Topology, allocate, fit, place, release
from binpack import place_group as gp_place_group
from binpack import score as gp_score
from binpack.score import ScorePolicy
from binpack.topology import all_linked, best_set, dgx1_v100, nvswitch, pcie_only, set_score
from binpack.types import Gpu, MigMode, Node

POLICIES = ("gpupack", "fgd", "first-fit", "random")
OTHERS = ("best-fit",)  # run when named
# gpupack with one idea left out (run when named): contention (by selector, shape and NVLink), and
# the multi-GPU classes kept in the mix past FGD's coverage cut
ABLATIONS = {"gpupack-no-contention": (ScorePolicy(contention=0.0), True),
             "gpupack-cut-multi": (ScorePolicy(), False)}
FGD_RULE = ScorePolicy(bucket_milli=1000.0, balance=0.0, contention=0.0, pairing=0.0)
KINDS = (("dgx-h100", 0.2), ("dgx1-v100", 0.2), ("a100-mig", 0.2), ("t4", 0.2), ("l4", 0.2))


def make_cluster(n: int) -> list[Node]:
    """n nodes split across the five kinds (at least one each when n >= 5)."""
    if n < 1 or n > 20_000:
        raise ValueError(f"nodes: must be 1..20000, got {n}")
    counts = [max(int(n * f), 1 if n >= len(KINDS) else 0) for _, f in KINDS]
    counts[-1] += n - sum(counts)
    out: list[Node] = []
    for (kind, _), c in zip(KINDS, counts, strict=True):
        for i in range(c):
            name = f"{kind}-{i:04d}"
            if kind == "dgx-h100":
                nv, pc = nvswitch(8, 18)
                out.append(Node(name, tuple(Gpu(g, "H100-SXM5-80GB") for g in range(8)), 224_000, 2_000_000, nv, pc))
            elif kind == "dgx1-v100":
                nv, pc = dgx1_v100()
                out.append(Node(name, tuple(Gpu(g, "V100-SXM2-32GB") for g in range(8)), 80_000, 512_000, nv, pc))
            elif kind == "a100-mig":
                nv, pc = nvswitch(8, 12)
                gpus = tuple(Gpu(g, "A100-SXM4-80GB", mig_mode=MigMode.DYNAMIC if g < 4 else MigMode.NONE)
                             for g in range(8))
                out.append(Node(name, gpus, 128_000, 1_000_000, nv, pc))
            else:
                nv, pc = pcie_only(4)
                model = "T4" if kind == "t4" else "L4"
                out.append(Node(name, tuple(Gpu(g, model) for g in range(4)), 48_000, 192_000, nv, pc))
    return out


@dataclass(frozen=True)
class Item:
    """One arrival: a single pod, or a pod group (all members or none)."""

    name: str
    members: tuple[Demand, ...]


def _gib(n: int) -> int:
    return n * 1024


def make_workload(nodes: list[Node], seed: int, load: float = 1.1) -> list[Item]:
    """Arrivals until the GPU request reaches load x the cluster's GPU count (MIG slices by memory)."""
    rng = np.random.default_rng(seed)
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    items: list[Item] = []
    asked = 0.0
    while asked < load * capacity:
        u = rng.random()
        i = len(items)
        if u < 0.25:  # multi-GPU training job
            k = int(rng.choice([2, 4, 8], p=[0.5, 0.35, 0.15]))
            topo = Topology.NVLINK if rng.random() < 0.4 else Topology.BEST_EFFORT
            d = Demand.whole(k, topology=topo, cpu_milli=4_000 * k, host_memory_mib=_gib(32) * k)
            items.append(Item(f"train-{i}", (d,)))
        elif u < 0.45:  # one whole GPU
            items.append(Item(f"gpu-{i}", (Demand.whole(1, cpu_milli=4_000, host_memory_mib=_gib(16)),)))
        elif u < 0.75:  # a share of one GPU
            mem = int(rng.choice([4, 8, 12, 20]))
            comp = int(rng.choice([100, 250, 300, 500]))
            items.append(Item(f"share-{i}", (Demand.share(memory_mib=_gib(mem), compute_milli=comp,
                                                         cpu_milli=2_000, host_memory_mib=_gib(8)),)))
        elif u < 0.9:  # a MIG slice
            prof = str(rng.choice(["1g.10gb", "2g.20gb", "3g.40gb"], p=[0.5, 0.3, 0.2]))
            items.append(Item(f"mig-{i}", (Demand.mig(prof, 1, cpu_milli=2_000, host_memory_mib=_gib(8)),)))
        else:  # a pod group: all members or none
            size = int(rng.integers(2, 5))
            k = int(rng.choice([1, 2, 4]))
            members = tuple(Demand.whole(k, cpu_milli=4_000 * k, host_memory_mib=_gib(16) * k) for _ in range(size))
            items.append(Item(f"group-{i}", members))
        asked += sum(_milli(d) for d in items[-1].members)
    return items


def _milli(d: Demand) -> int:
    """GPU milli a demand asks for; a MIG slice counts its share of the GPU's 7 compute slices."""
    if d.kind is DemandKind.MIG:
        return d.count * int(d.mig_profile[0]) * 1000 // 7
    return d.gpu_milli


@dataclass(frozen=True)
class SyntheticResult:
    """One (policy, seed) run; percentages of the cluster's GPU capacity or of the relevant pods."""

    policy: str
    seed: int
    nodes: int
    allocated_pct: float
    failed_pct: float  # of GPU milli asked
    best_links_pct: float  # multi-GPU placements on the best free link set of their node
    nvlinked_pct: float  # multi-GPU placements whose GPUs are all NVLinked pairwise
    nvlink_placed_pct: float  # jobs that require NVLink (all GPUs pairwise linked): placed, of asked
    group_success_pct: float
    # whole-GPU asks (jobs and pod groups) refused while the cluster had at least that many whole GPUs
    # free: refused for fragmentation (GPUs scattered, or beside no CPU), not for want of capacity
    room_refused_pct: float  # of all GPUs asked by whole-GPU items
    groups_room_refused_pct: float  # of pod groups
    decision_ms: float


class Chooser:
    """Picks node and devices for one demand, by policy."""

    def __init__(self, policy: str, seed: int) -> None:
        self.policy = policy
        self.rng = np.random.default_rng([seed, 3])
        self.gpupack = policy.startswith("gpupack")
        self.scored = self.gpupack or policy == "fgd"
        self.rule, keep_multi = ABLATIONS.get(policy, (ScorePolicy(), True) if self.gpupack else (FGD_RULE, False))
        self.learner = MixLearner(keep_multi=keep_multi)  # FGD: its typical pods, the coverage cut alone

    def group(self, snap: Snapshot, members: tuple[Demand, ...]) -> tuple[Placement, ...] | None:
        """gpupack's plan for a whole pod group (empty: it does not fit); None: place one by one."""
        if not self.gpupack:
            return None
        for d in members:
            self.learner.observe(d)
        result = gp_place_group(snap, members, self.learner.mix(), time_limit_s=0.2)
        return result.placements if result.placed else ()

    def place(self, snap: Snapshot, d: Demand) -> Placement | None:
        verdict = fit(snap, d)
        rows = np.flatnonzero(verdict.fits)
        if not len(rows):
            return None
        if self.scored:
            self.learner.observe(d)
            mix = self.learner.mix()
            best = int(np.argmax(gp_score(verdict, mix, policy=self.rule).value))
            return place(snap, d, snap.names[best], mix)
        if self.policy == "best-fit":  # the fullest node that fits: least free GPU milli, then least free CPU
            with snap.read() as v:
                free = v.milli.take(rows, axis=0).astype(np.int64).sum(axis=1)
                i = int(rows[np.lexsort((v.cpu_free.take(rows), free))[0]])
        else:
            i = int(rows[0] if self.policy == "first-fit" else rows[self.rng.integers(len(rows))])
        p = place(snap, d, snap.names[i])
        if p is None or d.topology is Topology.NVLINK or d.kind not in (DemandKind.WHOLE, DemandKind.SHARE):
            return p
        with snap.read() as v:  # the naive devices: lowest free indices, first GPU the share fits
            if d.kind is DemandKind.WHOLE:
                free = np.flatnonzero(v.whole_free(d.models)[i])[: d.count]
                return Placement(p.node, tuple(int(g) for g in free), cpu_milli=p.cpu_milli,
                                 host_memory_mib=p.host_memory_mib, kind=p.kind)
            fits = (v.mem_free[i] >= d.memory_mib) & (v.compute_free[i] >= d.compute_milli) & (v.s.mig_mode[i] == 0)
            g = int(np.flatnonzero(fits & v.s.valid[i])[0]) if (fits & v.s.valid[i]).any() else p.gpus[0]
        return Placement(p.node, (g,), memory_mib=p.memory_mib, compute_milli=p.compute_milli,
                         cpu_milli=p.cpu_milli, host_memory_mib=p.host_memory_mib, kind=p.kind)


def book(chooser: Chooser, snap: Snapshot, item: Item
         ) -> tuple[Snapshot, list[tuple[Demand, Placement]], list[tuple[bool, bool]]]:
    """Place an item's members one by one; if one does not fit, release them all (all or nothing).

    Returns the new snapshot, the bookings, and per multi-GPU placement whether it took the best
    free link set of its node and whether its GPUs are all NVLinked pairwise."""
    booked: list[tuple[Demand, Placement]] = []
    links: list[tuple[bool, bool]] = []
    planned = chooser.group(snap, item.members) if len(item.members) > 1 else None
    for n, d in enumerate(item.members):
        p = chooser.place(snap, d) if planned is None else (planned[n] if planned else None)
        if p is None:
            break
        if d.kind is DemandKind.WHOLE and d.count > 1:
            i = snap.node_index(p.node)
            with snap.read() as v:
                free = np.flatnonzero(v.whole_free(d.models)[i]).tolist()
                pair, nv = v.s.pair[i], v.s.nvlink[i]
            top = best_set(pair, nv, free, d.count, False)
            links.append((top is None or set_score(pair, p.gpus) >= set_score(pair, top), all_linked(nv, p.gpus)))
        snap = allocate(snap, p)
        booked.append((d, p))
    if len(booked) < len(item.members):
        for _, p in booked:
            snap = release(snap, p)
        return snap, [], []
    return snap, booked, links


def run_synthetic(policy: str, nodes: list[Node], seed: int, load: float = 1.1) -> SyntheticResult:
    """Place the seeded workload with one policy; measure allocation, links, gang success and the
    whole-GPU asks refused although enough whole GPUs were free (fragmentation's own refusals: at
    load > 1 some refusals are capacity's, and which arrivals they hit says nothing of the policy)."""
    if policy not in POLICIES and policy not in ABLATIONS and policy not in OTHERS:
        raise ValueError(f"policy {policy!r}: known {', '.join((*POLICIES, *ABLATIONS, *OTHERS))}")
    snap = Snapshot.build(nodes)
    chooser = Chooser(policy, seed)
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    got = asked = failed = multi = best_links = linked = groups = groups_ok = decisions = 0
    whole_asked = room_refused = groups_room_refused = nvlink_asked = nvlink_placed = 0
    seconds = 0.0
    for item in make_workload(nodes, seed, load):
        whole = sum(d.count for d in item.members) if all(d.kind is DemandKind.WHOLE for d in item.members) else 0
        if whole:
            with snap.read() as v:
                free = int(np.bitwise_count(v.whole_bits).sum())  # whole GPUs free, any model
        start = time.perf_counter()
        snap, booked, links = book(chooser, snap, item)
        seconds += time.perf_counter() - start
        if any(d.topology is Topology.NVLINK for d in item.members):
            nvlink_asked += 1
            nvlink_placed += bool(booked)
        if whole:
            whole_asked += whole
            refused_with_room = not booked and free >= whole
            room_refused += whole * refused_with_room
            groups_room_refused += refused_with_room and len(item.members) > 1
        decisions += len(item.members)
        multi += len(links)
        best_links += sum(best for best, _ in links)
        linked += sum(nv for _, nv in links)
        ask = sum(_milli(d) for d in item.members)
        asked += ask
        failed += 0 if booked else ask
        got += sum(_milli(d) for d, _ in booked)
        if len(item.members) > 1:
            groups += 1
            groups_ok += int(bool(booked))
    return SyntheticResult(
        policy, seed, len(nodes), round(100 * got / capacity, 2), round(100 * failed / max(asked, 1), 2),
        round(100 * best_links / max(multi, 1), 1), round(100 * linked / max(multi, 1), 1),
        round(100 * nvlink_placed / max(nvlink_asked, 1), 1), round(100 * groups_ok / max(groups, 1), 1),
        round(100 * room_refused / max(whole_asked, 1), 2),
        round(100 * groups_room_refused / max(groups, 1), 1), round(1000 * seconds / max(decisions, 1), 2))
