"""gpupack: binpack's scoring, through the code path the extender uses.

Per task: the MixLearner observes the task's demand first (online, no future knowledge), then
fit -> score against the learned mix -> the first node with the highest float score -> place ->
allocate on a binpack Snapshot built from the same nodes in the same tie-break order. openb's
undisclosed models (G2, G3...) are unknown to binpack's catalog: their GPUs are given 16 GiB
(UNKNOWN_MEMORY_MIB); trace shares ask for compute only, so the figure never decides a fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from benchmarks.cluster import Choice, Task
from benchmarks.policies.base import Context
from benchmarks.trace import FULL, NodeTable
from binpack import Demand, DemandKind, Mix, MixLearner, Snapshot, allocate, fit, lookup, place, score
from binpack.mix import EMPTY_MIX
from binpack.score import DEFAULT_POLICY, ScorePolicy
from binpack.types import Gpu, Node

UNKNOWN_MEMORY_MIB = 16384


def binpack_nodes(nodes: NodeTable, order: np.ndarray) -> list[Node]:
    """The node table as binpack Nodes, in the given order (no NVLink: openb publishes no links)."""
    out = []
    for i in order.tolist():
        model = nodes.models[nodes.model[i]] if nodes.gpus[i] else ""
        mem = 0 if model and lookup(model) else UNKNOWN_MEMORY_MIB
        gpus = tuple(Gpu(g, model, memory_mib=mem) for g in range(int(nodes.gpus[i])))
        out.append(Node(nodes.names[i], gpus, int(nodes.cpu[i]), int(nodes.mem[i])))
    return out


def demand_of(t: Task) -> Demand:
    """The trace task as the demand the extender would build for the same pod."""
    if t.num_gpu == 0:
        return Demand.none(cpu_milli=t.cpu, host_memory_mib=t.mem)
    if t.num_gpu > 1 or t.milli == FULL:
        return Demand.whole(t.num_gpu, models=t.models, cpu_milli=t.cpu, host_memory_mib=t.mem)
    return Demand.share(compute_milli=t.milli, models=t.models, cpu_milli=t.cpu, host_memory_mib=t.mem)


class Gpupack:
    """The production policy (binpack's DEFAULT_POLICY); subclasses are the ablation rows."""

    name = "gpupack"
    policy = DEFAULT_POLICY

    def __init__(self, ctx: Context) -> None:
        self.snap = Snapshot.build(binpack_nodes(ctx.nodes, ctx.state.order))
        self.learner = MixLearner()
        self.demands: dict[int, Demand] = {}  # per pod row: the demand is computed once

    def scoring_mix(self, d: Demand, mix: Mix) -> Mix:
        """The mix a demand is scored against (the learned one; an ablation may change it)."""
        return mix

    def choose(self, t: Task, rows: np.ndarray) -> Choice | None:
        d = self.demands.get(t.row)
        if d is None:
            d = self.demands[t.row] = demand_of(t)
        self.learner.observe(d)
        verdict = fit(self.snap, d)
        if not verdict.fits.any():
            return None
        mix = self.learner.mix()
        scores = score(verdict, self.scoring_mix(d, mix), policy=self.policy)
        best = int(np.argmax(scores.value))
        p = place(self.snap, d, self.snap.names[best], mix)
        if p is None:
            return None
        self.snap = allocate(self.snap, p)
        return Choice(best, tuple(p.gpus))


class GpupackNoBalance(Gpupack):
    """Ablation: without the balance term (GPU stranded for want of CPU or memory)."""

    name = "gpupack-no-balance"
    policy = ScorePolicy(balance=0.0)


class GpupackNoContention(Gpupack):
    """Ablation: without the contention term (restricted pods' claim on scarce models)."""

    name = "gpupack-no-contention"
    policy = ScorePolicy(contention=0.0)


class GpupackNoShapes(Gpupack):
    """Ablation: contention from model selectors only, not from multi-GPU classes that only a few
    nodes are big enough for (mix.shaped)."""

    name = "gpupack-no-shapes"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._flat: tuple[Mix, Mix] | None = None  # (learned, without shapes): scoring caches are per mix

    def scoring_mix(self, d: Demand, mix: Mix) -> Mix:
        if self._flat is None or self._flat[0] is not mix:
            self._flat = (mix, dataclasses.replace(mix, shaped=()))
        return self._flat[1]


class GpupackCutMulti(Gpupack):
    """Ablation: the mix keeps only its frequent classes (FGD's coverage cut), not also every
    multi-GPU class (MixLearner keep_multi)."""

    name = "gpupack-cut-multi"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.learner = MixLearner(keep_multi=False)


class GpupackNoPairing(Gpupack):
    """Ablation: without the pairing term (gaps no pattern of the mix's plan passes through)."""

    name = "gpupack-no-pairing"
    policy = ScorePolicy(pairing=0.0)


class GpupackCpuOnlyUnscored(Gpupack):
    """Ablation: pods asking for no GPU placed on the first node that fits, as when they do not pass
    through the extender (README: how CPU-only pods on GPU nodes opt in)."""

    name = "gpupack-cpu-only-unscored"

    def scoring_mix(self, d: Demand, mix: Mix) -> Mix:
        return EMPTY_MIX if d.kind is DemandKind.NONE else mix


class GpupackFgdBuckets(Gpupack):
    """Ablation: FGD's own bucket width (sigmoid scale 1000 milli), no preference for used nodes."""

    name = "gpupack-fgd-buckets"
    policy = ScorePolicy(bucket_milli=1000.0)


class GpupackPreferUsed(Gpupack):
    """Ablation (an idea not kept): among equal buckets, a node already in use before an empty one."""

    name = "gpupack-prefer-used"
    policy = ScorePolicy(prefer_used=True)


class GpupackExact(Gpupack):
    """Ablation: the exact float growth of fragmentation, no buckets, no consolidation term."""

    name = "gpupack-exact"
    policy = ScorePolicy(bucket_milli=0.0)
