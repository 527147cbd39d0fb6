"""The pure parts of `gpupack bench scheduler`: the control plane's files, the objects, the
kube-scheduler configurations, Prometheus histograms, per-process CPU, and the figures.

Nothing here starts a process or talks to an API server (benchmarks/scheduler_bench.py does), so
all of it is tested without a cluster.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NAMESPACE = "gpupack-bench"
SCHEDULER_NAME = "gpupack-scheduler"
# the mix: 85% 1 GPU, 7% 2, 5% 4, 3% 8
MIX = ((1, 0.85), (2, 0.07), (4, 0.05), (8, 0.03))
TARGET_RATIO = 0.8
TARGET_CPU_MS = 5.0


class NoControlPlane(Exception):
    """No usable control plane (missing files, or the apiserver did not come up): no figure is made."""


@dataclass(frozen=True)
class ControlPlane:
    """The files of a built control plane (tools/control-plane/rebuild.sh's VERIFY_DIR)."""

    root: Path

    @property
    def start(self) -> Path:
        return self.root / "start-control-plane.sh"

    @property
    def stop(self) -> Path:
        return self.root / "stop-control-plane.sh"

    @property
    def scheduler_bin(self) -> Path:
        return self.root / "bin" / "kube-scheduler"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "pki" / "admin.kubeconfig"

    @property
    def scheduler_kubeconfig(self) -> Path:
        return self.root / "pki" / "scheduler.kubeconfig"

    def pid(self, name: str) -> int | None:
        """The pid the start script recorded for etcd or apiserver, if that process lives."""
        try:
            pid = int((self.root / "run" / f"{name}.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid


def find_control_plane(root: Path | None) -> ControlPlane:
    """The control plane at `root` (default $GPUPACK_VERIFY_DIR, else /tmp/verify), or NoControlPlane
    with a message saying what is missing and how to build one."""
    root = root or Path(os.environ.get("GPUPACK_VERIFY_DIR") or "/tmp/verify")
    cp = ControlPlane(root)
    missing = [p for p in (cp.start, cp.stop, cp.scheduler_bin, cp.admin_kubeconfig, cp.scheduler_kubeconfig)
               if not p.exists()]
    if missing:
        raise NoControlPlane(
            f"no control plane at {root} (missing {', '.join(str(p.relative_to(root)) for p in missing)}): "
            "this benchmark needs a real etcd + kube-apiserver + kube-scheduler, built with "
            "shared/tools/control-plane/rebuild.sh; pass its VERIFY_DIR with --verify-dir. No figures were made.")
    return cp


def pod_sizes(n: int, seed: int = 42) -> list[int]:
    """GPUs per pod for n pods in the issue's mix, exactly (largest remainder), in a seeded order."""
    want = [(g, n * f) for g, f in MIX]
    counts = {g: int(x) for g, x in want}
    for g, _ in sorted(want, key=lambda t: t[1] - int(t[1]), reverse=True)[: n - sum(counts.values())]:
        counts[g] += 1
    sizes = [g for g, c in counts.items() for _ in range(c)]
    np.random.default_rng(seed).shuffle(sizes)
    return sizes


def node_objects(n: int) -> list[dict[str, Any]]:
    """n Ready nodes of 8 A100-SXM4-80GB on NVSwitch, with the inventory annotation the agent writes."""
    from binpack import Gpu, Node
    from binpack.topology import nvswitch
    from scheduler.state.standalone import node_object

    nv, pc = nvswitch(8, 12)
    out = []
    for i in range(n):
        obj = node_object(Node(f"gpu-node-{i:05d}", tuple(Gpu(g, "A100-SXM4-80GB", uuid=f"GPU-{i}-{g}")
                                                            for g in range(8)), 128_000, 1_000_000, nv, pc))
        alloc = obj["status"]["allocatable"]
        obj["status"] = {"capacity": dict(alloc), "allocatable": alloc,
                         "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                         "message": "bench node"}]}
        out.append(obj)
    return out


def pod_object(i: int, gpus: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bench-{i:05d}", "namespace": NAMESPACE, "labels": {"app": "gpupack-bench"}},
            "spec": {"schedulerName": SCHEDULER_NAME, "terminationGracePeriodSeconds": 0,
                     "automountServiceAccountToken": False,
                     "containers": [{"name": "main", "image": "registry.invalid/cuda:12.4-runtime",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                   "limits": {"nvidia.com/gpu": str(gpus)}}}]}}


def scheduler_config(kubeconfig: Path, extender_port: int | None, weight: int = 5) -> str:
    """A KubeSchedulerConfiguration: one profile, every node scored, a fast client; with an extender
    port, gpupack as it is deployed (filter, prioritize, bind, preempt; nodeCacheCapable)."""
    text = f"""apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
  qps: 10000
  burst: 10000
leaderElection:
  leaderElect: false
percentageOfNodesToScore: 100
profiles:
- schedulerName: {SCHEDULER_NAME}
"""
    if extender_port is not None:
        text += f"""extenders:
- urlPrefix: "http://127.0.0.1:{extender_port}"
  filterVerb: filter
  prioritizeVerb: prioritize
  bindVerb: bind
  preemptVerb: preempt
  weight: {weight}
  enableHTTPS: false
  nodeCacheCapable: true
  ignorable: false
  httpTimeout: 30s
  managedResources:
  - name: nvidia.com/gpu
    ignoredByScheduler: false
  - name: gpupack.io/gpu-memory
    ignoredByScheduler: true
  - name: gpupack.io/gpu-compute
    ignoredByScheduler: true
"""
    return text


_BUCKET = re.compile(r'^(\w+)_bucket\{(.*)\} (\S+)$')


def histogram(text: str, name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative (le, count) of one Prometheus histogram in exposition text, summed over the series
    whose labels include `labels`."""
    acc: dict[float, float] = {}
    for line in text.splitlines():
        m = _BUCKET.match(line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if any(got.get(k) != v for k, v in labels.items()):
            continue
        le = float(got["le"])
        acc[le] = acc.get(le, 0.0) + float(m.group(3))
    return sorted(acc.items())


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, linear within a bucket (as Prometheus'
    histogram_quantile); None when empty. A quantile in the +Inf bucket is that bucket's lower edge."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    counts = [c for _, c in buckets]
    i = bisect.bisect_left(counts, rank)
    le, c = buckets[i]
    lo, c0 = (buckets[i - 1] if i > 0 else (0.0, 0.0))
    if le == float("inf"):
        return lo
    return lo + (le - lo) * ((rank - c0) / (c - c0) if c > c0 else 1.0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """CPU seconds spent between t0 and t1, from (time, cumulative CPU) samples, linear between them."""
    if len(samples) < 2:
        return float("nan")
    ts, cs = np.asarray(samples).T
    return float(np.interp(t1, ts, cs) - np.interp(t0, ts, cs))


def throughput(bound_at: list[float]) -> tuple[float, float, float]:
    """(pods/s, first bind, last bind) from the times the pods were seen bound: the rate between the
    first and the last bind, so kube-scheduler's start-up is not counted."""
    ts = sorted(bound_at)
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return float("nan"), ts[0] if ts else float("nan"), ts[-1] if ts else float("nan")
    return (len(ts) - 1) / (ts[-1] - ts[0]), ts[0], ts[-1]


def summary(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratios and the targets' verdicts over the plain phase and each gpupack phase."""
    plain, gp = phases.get("plain"), phases.get("gpupack")
    out: dict[str, Any] = {}
    if plain and gp and plain.get("pods_per_s") and gp.get("pods_per_s"):
        out["ratio"] = round(gp["pods_per_s"] / plain["pods_per_s"], 3)
        out["ratio_target"] = TARGET_RATIO
        out["ratio_met"] = out["ratio"] >= TARGET_RATIO
    short = phases.get("shortlist")
    if plain and short and plain.get("pods_per_s") and short.get("pods_per_s"):
        out["ratio_shortlist"] = round(short["pods_per_s"] / plain["pods_per_s"], 3)
        out["ratio_shortlist_met"] = out["ratio_shortlist"] >= TARGET_RATIO
        if "gpupack" in short.get("cpu_ms_per_pod", {}):
            out["gpupack_cpu_ms_per_pod_shortlist"] = short["cpu_ms_per_pod"]["gpupack"]
            out["gpupack_cpu_met_shortlist"] = out["gpupack_cpu_ms_per_pod_shortlist"] <= TARGET_CPU_MS
    if gp and "cpu_ms_per_pod" in gp and "gpupack" in gp["cpu_ms_per_pod"]:
        out["gpupack_cpu_ms_per_pod"] = gp["cpu_ms_per_pod"]["gpupack"]
        out["gpupack_cpu_target_ms"] = TARGET_CPU_MS
        out["gpupack_cpu_met"] = out["gpupack_cpu_ms_per_pod"] <= TARGET_CPU_MS
    return out
