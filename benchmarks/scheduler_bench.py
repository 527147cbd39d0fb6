"""`gpupack bench scheduler`: a real kube-scheduler alone, then with gpupack, on the same cluster.

Starts etcd + kube-apiserver of a built control plane (shared/tools/control-plane; `--verify-dir`),
creates N Ready GPU nodes (8 x A100, NVSwitch) and, per phase, the same P pending pods (85% 1 GPU,
7% 2, 5% 4, 3% 8), then starts kube-scheduler (percentageOfNodesToScore 100, client QPS/burst
10,000) alone ("plain") or with the gpupack extender in a child process (filter, prioritize, bind,
preempt; weight 5; nodeCacheCapable), either ("gpupack") serving `--shortlist 0` (filter passes every
fitting node) or ("shortlist") serving `--shortlist K` (filter passes only gpupack's K best nodes,
scheduler/extender/shortlist.py; K = 8 is gpupack's default). Pods are created before
kube-scheduler starts and deleted between phases, so every phase sees the same empty cluster and the
same queue. Reported per phase:
pods/s between the first and the last bind (start-up excluded), kube-scheduler's scheduling-attempt
latency p50/p99 (its histogram, interpolated), each process's CPU ms per pod over that window, the
extender's per-verb latency; and the ratio. Without a control plane it stops with a message and
makes no figure. The control plane is always stopped at the end. `--profile DIR` records gpupack
with py-spy (raw stacks of the thread holding the GIL, so where its Python CPU goes, + a top list;
costs a little speed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from benchmarks.scheduler_parts import (
    NAMESPACE,
    ControlPlane,
    NoControlPlane,
    cpu_between,
    cpu_seconds,
    histogram,
    node_objects,
    pod_object,
    pod_sizes,
    quantile,
    scheduler_config,
    summary,
    throughput,
)

Progress = Callable[[str, int, int], None]  # (what, done, total)
MODES = ("plain", "gpupack", "shortlist")
EXTENDED = ("gpupack", "shortlist")  # the phases with the extender registered


class _Sampler:
    """CPU of named processes every `every` seconds, on the monotonic clock the bind times use."""

    def __init__(self, every: float = 0.05) -> None:
        self.pids: dict[str, int] = {}
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cpu-sampler")

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            now = time.monotonic()
            for name, pid in list(self.pids.items()):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    self.samples.setdefault(name, []).append((now, cpu_seconds(pid)))


class _BindWatch:
    """Pods of the bench namespace as the API server sees them: when each was first seen bound."""

    def __init__(self, kubeconfig: Path) -> None:
        from scheduler.state.kubeapi import KubernetesApi

        self.api = KubernetesApi(str(kubeconfig), timeout_s=30)
        self.bound: dict[str, float] = {}
        self.present: set[str] = set()
        self.errors: list[str] = []  # watch failures (each followed by a fresh list)
        self._lock = threading.Lock()
        self._stream: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bind-watch")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items, rv = self.api.list_pods()
                with self._lock:  # a list after a broken watch: what exists now
                    mine = [o for o in items if (o.get("metadata") or {}).get("namespace") == NAMESPACE]
                    self.present = {str(o["metadata"]["name"]) for o in mine}
                    self.bound = {n: t for n, t in self.bound.items() if n in self.present}
                for o in mine:
                    self._see("ADDED", o)
                self._stream = self.api.watch_pods(rv, 3600)
                for ev in self._stream:
                    self._see(ev.type, ev.obj)
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                if self._stop.wait(0.2):
                    return

    def _see(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("namespace") != NAMESPACE:
            return
        name = str(meta.get("name"))
        with self._lock:
            if kind == "DELETED":
                self.present.discard(name)
                self.bound.pop(name, None)
            elif kind in ("ADDED", "MODIFIED"):
                self.present.add(name)
                if (obj.get("spec") or {}).get("nodeName") and name not in self.bound:
                    self.bound[name] = time.monotonic()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.present), len(self.bound)

    def bind_times(self) -> list[float]:
        with self._lock:
            return list(self.bound.values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # kube-scheduler's self-signed serving cert on 127.0.0.1
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), b""
    except OSError:
        return 0, b""


def _wait(what: str, ok: Callable[[], bool], proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if ok():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s")


def _terminate(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def control_plane(cp: ControlPlane) -> Iterator[None]:
    """etcd + kube-apiserver on a wiped etcd; always stopped again. A control plane already running
    there is someone else's run (the start script would stop it): refused, not taken over."""
    busy = [name for name in ("etcd", "apiserver", "scheduler", "kcm") if cp.pid(name) is not None]
    if busy or _listening(6443) or _listening(2379):
        raise NoControlPlane(f"the control plane at {cp.root} is in use ({', '.join(busy) or 'its ports are taken'}): "
                             "another run is using it; try again when it is stopped. No figures were made.")
    try:
        r = subprocess.run(["bash", str(cp.start), "-C", "-N"], capture_output=True, text=True, timeout=240,
                           check=False)
        if r.returncode != 0:
            raise NoControlPlane(f"the control plane at {cp.root} did not start (status {r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip()[-600:]}. No figures were made.")
        yield
    finally:
        subprocess.run(["bash", str(cp.stop)], capture_output=True, timeout=60, check=False)


class Bench:
    """One run: the cluster, then each phase in turn."""

    def __init__(self, cp: ControlPlane, n_nodes: int, n_pods: int, port: int, profile: Path | None,
                 timeout_s: float, progress: Progress, workdir: Path, keep: int = 8) -> None:
        from kubernetes import client, config

        self.cp, self.n_nodes, self.n_pods = cp, n_nodes, n_pods
        self.port = port or _free_port()
        self.profile, self.timeout_s, self.progress, self.workdir = profile, timeout_s, progress, workdir
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(cp.admin_kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 16
        self.core: Any = client.CoreV1Api(client.ApiClient(cfg))  # plain dicts in, raw bytes out
        self.sizes = pod_sizes(n_pods)
        self.keep = keep

    def _create(self, what: str, objs: list[Any], fn: Callable[[Any], Any]) -> None:
        done = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in pool.map(fn, objs):
                done += 1
                if done % 200 == 0 or done == len(objs):
                    self.progress(what, done, len(objs))

    def cluster(self) -> None:
        self.core.create_namespace({"metadata": {"name": NAMESPACE}}, _preload_content=False)
        # no controller-manager runs: make the service account the admission plugin requires
        self.core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "default"}},
                                                    _preload_content=False)
        self._create("nodes", node_objects(self.n_nodes), lambda o: self.core.create_node(o, _preload_content=False))
        # the API server taints a new node not-ready until a kubelet says otherwise; none will
        untaint = {"spec": {"taints": None}}
        self._create("untaint", [f"gpu-node-{i:05d}" for i in range(self.n_nodes)],
                     lambda name: self.core.patch_node(name, untaint, _preload_content=False))

    def phase(self, mode: str, watch: _BindWatch) -> dict[str, Any]:
        pods = [pod_object(i, g) for i, g in enumerate(self.sizes)]
        self._create(f"{mode}: pods", pods,
                     lambda o: self.core.create_namespaced_pod(NAMESPACE, o, _preload_content=False))
        try:
            _wait("the pods' watch", lambda: watch.counts()[0] >= self.n_pods, None, 120)
        except RuntimeError as e:
            seen = watch.counts()[0]
            raise RuntimeError(f"{e} (saw {seen} of {self.n_pods}; watch errors: {watch.errors[-3:]})") from None
        gp: subprocess.Popen[bytes] | None = None
        spy: subprocess.Popen[bytes] | None = None
        sched: subprocess.Popen[bytes] | None = None
        logs = self.cp.root / "run" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with _Sampler() as sampler:
            for name in ("apiserver", "etcd"):
                pid = self.cp.pid(name)
                if pid is not None:
                    sampler.pids[name] = pid
            try:
                if mode in EXTENDED:
                    gp = subprocess.Popen(
                        [sys.executable, "-m", "scheduler.cli", "serve", "--kubeconfig", str(self.cp.admin_kubeconfig),
                         "--port", str(self.port), "--log-level", "warning",
                         "--shortlist", str(self.keep if mode == "shortlist" else 0)],
                        stdout=open(logs / "bench-gpupack.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
                    _wait("gpupack", lambda: _get(f"http://127.0.0.1:{self.port}/readyz")[0] == 200, gp, 180)
                    sampler.pids["gpupack"] = gp.pid
                    if self.profile is not None:
                        self.profile.mkdir(parents=True, exist_ok=True)
                        spy = subprocess.Popen(["py-spy", "record", "--pid", str(gp.pid), "--rate", "250", "--gil",
                                                "--format", "raw", "-o", str(self.profile / "gpupack.txt")],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                conf = self.workdir / f"scheduler-{mode}.yaml"
                conf.write_text(scheduler_config(self.cp.scheduler_kubeconfig,
                                                 self.port if mode in EXTENDED else None))
                kc = str(self.cp.scheduler_kubeconfig)
                sched = subprocess.Popen(
                    [str(self.cp.scheduler_bin), f"--config={conf}", f"--authentication-kubeconfig={kc}",
                     f"--authorization-kubeconfig={kc}", "--authorization-always-allow-paths=/healthz,/metrics",
                     "--bind-address=127.0.0.1", "--secure-port=10259", "--v=2"],
                    stdout=open(logs / f"bench-scheduler-{mode}.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
                sampler.pids["kube-scheduler"] = sched.pid
                self._wait_bound(mode, watch, sched)
                sched_metrics = _get("https://127.0.0.1:10259/metrics")[1].decode()
                gp_metrics = _get(f"http://127.0.0.1:{self.port}/metrics")[1].decode() if gp is not None else ""
                rss = _rss_mib(gp.pid) if gp is not None else None
            finally:
                _terminate(sched)
                _terminate(spy, signal.SIGINT)
                _terminate(gp)
        out = self._figures(watch.bind_times(), sampler.samples, sched_metrics, gp_metrics)
        if rss is not None:
            out["gpupack_rss_mib"] = rss
        self._delete(watch)
        return out

    def _wait_bound(self, mode: str, watch: _BindWatch, sched: subprocess.Popen[bytes]) -> None:
        end = time.monotonic() + self.timeout_s
        last, last_t = -1, time.monotonic()
        while time.monotonic() < end:
            n = watch.counts()[1]
            self.progress(f"{mode}: bound", n, self.n_pods)
            if n >= self.n_pods:
                return
            if sched.poll() is not None:
                raise RuntimeError(f"kube-scheduler exited with status {sched.returncode}; see its log")
            if n != last:
                last, last_t = n, time.monotonic()
            elif time.monotonic() - last_t > 60:
                return  # nothing bound for a minute: report what was bound
            time.sleep(0.1)

    def _figures(self, bound: list[float], samples: dict[str, list[tuple[float, float]]], sched_metrics: str,
                 gp_metrics: str) -> dict[str, Any]:
        rate, t0, t1 = throughput(bound)
        n = max(len(bound) - 1, 1)
        cpu = {name: round(cpu_between(s, t0, t1) * 1e3 / n, 2) for name, s in samples.items()}
        attempt = histogram(sched_metrics, "scheduler_scheduling_attempt_duration_seconds", result="scheduled")
        out: dict[str, Any] = {
            "pods": self.n_pods, "bound": len(bound), "pods_per_s": round(rate, 1), "window_s": round(t1 - t0, 2),
            "attempt_p50_ms": _ms(quantile(attempt, 0.5)), "attempt_p99_ms": _ms(quantile(attempt, 0.99)),
            "cpu_ms_per_pod": cpu,
        }
        verbs = {}
        for verb in ("filter", "prioritize", "bind", "preempt"):
            h = histogram(gp_metrics, "gpupack_extender_request_seconds", verb=verb)
            if h and h[-1][1] > 0:
                verbs[verb] = {"n": int(h[-1][1]), "p50_ms": _ms(quantile(h, 0.5)), "p99_ms": _ms(quantile(h, 0.99))}
        if verbs:
            out["extender"] = verbs
        return out

    def _delete(self, watch: _BindWatch) -> None:
        self.core.delete_collection_namespaced_pod(NAMESPACE, grace_period_seconds=0, _preload_content=False)
        _wait("the pods' deletion", lambda: watch.counts()[0] == 0, None, 120)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1e3, 2)


def _rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def run_scheduler_bench(cp: ControlPlane, n_nodes: int = 5000, n_pods: int = 1000,
                        modes: tuple[str, ...] = ("plain", "gpupack"), port: int = 0, profile: Path | None = None,
                        timeout_s: float = 900.0, progress: Progress | None = None, keep: int = 8) -> dict[str, Any]:
    """Start the control plane, run the phases, stop it; the figures."""
    progress = progress or (lambda what, done, total: None)
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` and friends: still stop the control plane
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, control_plane(cp):
        bench = Bench(cp, n_nodes, n_pods, port, profile, timeout_s, progress, Path(tmp), keep)
        bench.cluster()
        watch = _BindWatch(cp.admin_kubeconfig)
        watch.start()
        try:
            phases = {mode: bench.phase(mode, watch) for mode in modes}
        finally:
            watch.stop()
    mix = {str(g): c for g, c in sorted(Counter(bench.sizes).items())}
    result: dict[str, Any] = {"nodes": n_nodes, "pods": n_pods, "gpus_per_pod": mix, "shortlist": keep,
                              "phases": phases, **summary(phases),
                              "load_average_before": [round(x, 2) for x in load],
                              "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    if profile is not None and (profile / "gpupack.txt").exists():
        from benchmarks.scheduler_profile import top_frames

        result["profile_top"] = top_frames((profile / "gpupack.txt").read_text(), 25)
    return result


def register(bench: typer.Typer) -> None:
    @bench.command("scheduler")
    def scheduler(
        nodes: Annotated[int, typer.Option(min=1, help="GPU nodes (8 x A100-SXM4-80GB each)")] = 5000,
        pods: Annotated[int, typer.Option(min=2, help="pods per phase (85% 1 GPU, 7% 2, 5% 4, 3% 8)")] = 1000,
        verify_dir: Annotated[Path | None, typer.Option(
            help="the control plane built by shared/tools/control-plane (default $GPUPACK_VERIFY_DIR, "
                 "else /tmp/verify)")] = None,
        modes: Annotated[str, typer.Option(
            help="phases, in order: plain (kube-scheduler alone), gpupack (gpupack --shortlist 0), "
                 "shortlist (gpupack --shortlist K, the default deployment)")]
            = "plain,gpupack,shortlist",
        shortlist: Annotated[int, typer.Option(min=1, help="K of the shortlist phase")] = 8,
        port: Annotated[int, typer.Option(min=0, max=65535, help="gpupack's port on 127.0.0.1 (0: a free one)")] = 0,
        profile: Annotated[Path | None, typer.Option(help="record gpupack with py-spy into this folder")] = None,
        timeout: Annotated[float, typer.Option(help="seconds a phase may take")] = 900.0,
        json_out: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
    ) -> None:
        """A real kube-scheduler alone and with gpupack: pods/s, the ratio, latency and CPU per pod."""
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as Bar

        from benchmarks.scheduler_tables import scheduler_table

        console = Console(stderr=json_out)
        wanted = tuple(m.strip() for m in modes.split(",") if m.strip())
        if not wanted or set(wanted) - set(MODES):
            raise typer.BadParameter(f"--modes: some of {', '.join(MODES)}, got {modes!r}")
        try:
            from benchmarks.scheduler_parts import find_control_plane

            cp = find_control_plane(verify_dir)
            with Bar(TextColumn("{task.description:>18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                     console=console, transient=True) as bar:
                tasks: dict[str, Any] = {}

                def on(what: str, done: int, total: int) -> None:
                    if what not in tasks:
                        tasks[what] = bar.add_task(what, total=total)
                    bar.update(tasks[what], completed=done)

                r = run_scheduler_bench(cp, nodes, pods, wanted, port, profile, timeout, on, shortlist)
        except NoControlPlane as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
        if json_out:
            typer.echo(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
        else:
            console.print(scheduler_table(r))
