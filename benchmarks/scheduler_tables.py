"""The rich table of `gpupack bench scheduler`."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def scheduler_table(r: dict[str, Any]) -> Group:
    t = Table(title=f"kube-scheduler alone vs with gpupack: {r['nodes']} nodes, {r['pods']} pods "
                    f"(GPUs per pod: {r['gpus_per_pod']})")
    for col in ("phase", "bound", "pods/s", "attempt p50 ms", "attempt p99 ms", "CPU ms/pod"):
        t.add_column(col, justify="left" if col in ("phase", "CPU ms/pod") else "right")
    for mode, p in r["phases"].items():
        cpu = ", ".join(f"{k} {v:g}" for k, v in p["cpu_ms_per_pod"].items())
        t.add_row(mode, f"{p['bound']}/{p['pods']}", _f(p["pods_per_s"]), _f(p["attempt_p50_ms"]),
                  _f(p["attempt_p99_ms"]), cpu)
    parts: list[Any] = [t]
    gp = r["phases"].get("gpupack") or {}
    for mode in ("gpupack", "shortlist"):
        verbs = (r["phases"].get(mode) or {}).get("extender")
        if verbs:
            v = Table(title=f"gpupack's verbs in phase {mode} (time inside gpupack)")
            for col in ("verb", "calls", "p50 ms", "p99 ms"):
                v.add_column(col, justify="right")
            for verb, s in verbs.items():
                v.add_row(verb, str(s["n"]), _f(s["p50_ms"]), _f(s["p99_ms"]))
            parts.append(v)
    lines = []
    if "ratio" in r:
        ok = "met" if r["ratio_met"] else "NOT met"
        lines.append(f"ratio gpupack --shortlist 0 (every fitting node passes) / alone: {r['ratio']:.3f} "
                     f"(target >= {r['ratio_target']}: {ok})")
    if "ratio_shortlist" in r:
        ok = "met" if r["ratio_shortlist_met"] else "NOT met"
        lines.append(f"ratio gpupack --shortlist {r.get('shortlist')} (the default) / alone: "
                     f"{r['ratio_shortlist']:.3f} "
                     f"(target >= {r.get('ratio_target', 0.8)}: {ok}); gpupack CPU per pod "
                     f"{_f(r.get('gpupack_cpu_ms_per_pod_shortlist'))} ms (target <= 5.0: "
                     f"{'met' if r.get('gpupack_cpu_met_shortlist') else 'NOT met'})")
    if "gpupack_cpu_ms_per_pod" in r:
        ok = "met" if r["gpupack_cpu_met"] else "NOT met"
        lines.append(f"gpupack CPU per pod with --shortlist 0: {r['gpupack_cpu_ms_per_pod']} ms (target <= "
                     f"{r['gpupack_cpu_target_ms']} ms: {ok}); RSS {_f(gp.get('gpupack_rss_mib'))} MiB")
    lines.append(f"load average before {r['load_average_before']}, after {r['load_average_after']} "
                 f"on {r['cpus']} CPUs; attempt latency is kube-scheduler's histogram, interpolated")
    prof = r.get("profile_top")
    if prof:
        lines.append(f"gpupack profile ({prof['samples']} samples), top by self time:")
        lines += [f"  {pct:5.1f}%  {name}" for name, pct in prof["self"][:15]]
    parts.append(Text("\n".join(lines)))
    return Group(*parts)
