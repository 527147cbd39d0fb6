"""Rich tables for `gpupack bench latency` and `gpupack bench webhook-latency` (`--json` prints the dict).

Rendering only: the measuring modules return plain dicts; this turns them into tables that fit an
80-column terminal (short headers, one figure per cell).
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Group
from rich.table import Table

_VERBS = ("filter", "prioritize", "bind")


def _ms(x: float) -> str:
    return f"{x:.2f}"


def extender_tables(r: dict[str, Any], target_p99_ms: float, target_pods_s: float) -> Group:
    """`bench latency`: per phase and verb, p50/p99 over HTTP and inside the handler; pods/s; the cluster."""
    c = r["cluster"]
    head = Table(title="extender over HTTP on 127.0.0.1", title_justify="left")
    head.add_column("cluster")
    head.add_column("value", justify="right")
    head.add_row("nodes x GPUs", f"{c['nodes']:,} x 8")
    head.add_row("bound pods", f"{c['bound_pods']:,}")
    head.add_row("ready in", f"{c['ready_s']} s")
    head.add_row("server RSS (before / after)", f"{c['server_rss_mib']} / {c['server_rss_mib_after']} MiB")
    head.add_row("cores / load average", f"{os.cpu_count()} / {r['load_average']}")
    verbs = Table(title=f"latency, ms (target p99 <= {target_p99_ms:g})", title_justify="left")
    for col in ("phase", "verb", "n", "p50", "p99", "in gpupack p50", "p99"):
        verbs.add_column(col, justify="left" if col in ("phase", "verb") else "right")
    rate = Table(title=f"pods/s (target >= {target_pods_s:g})", title_justify="left")
    for col in ("phase", "pods", "client wall", "HTTP f+p", "in gpupack"):
        rate.add_column(col, justify="left" if col == "phase" else "right")
    for phase in ("steady", "binding", "nodes_mode"):
        p = r[phase]
        label = phase if phase != "nodes_mode" else f"Nodes x{p['nodes_per_request']}"
        for verb in _VERBS:
            if verb in p:
                v = p[verb]
                verbs.add_row(label, verb, str(v["n"]), _ms(v["p50_ms"]), _ms(v["p99_ms"]),
                              _ms(v["handler_p50_ms"]), _ms(v["handler_p99_ms"]))
                label = ""
        rate.add_row(phase, str(p["pods"]), f"{p['pods_per_s']:.0f}", f"{p['pods_per_s_http']:.0f}",
                     f"{p['pods_per_s_handler']:.0f}")
    parts: list[Any] = [head, verbs, rate]
    if r.get("solver_only"):
        parts.append(solver_table(r["solver_only"]))
    return Group(*parts)


def solver_table(s: dict[str, float]) -> Table:
    """benchmarks.solver_latency's per-kind figures as one row per demand kind."""
    kinds = sorted({k.partition(".")[2] for k in s if k.startswith("fit_score_p50_ms.")})
    t = Table(title=f"solver alone, fit+score ms, {s['nodes']:,.0f} nodes", title_justify="left")
    for col in ("kind", "fits", "bind p50", "p99", "full p50", "p99"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for k in kinds:
        t.add_row(k, f"{s[f'fits_nodes.{k}']:.0f}", _ms(s[f"fit_score_p50_ms.{k}"]), _ms(s[f"fit_score_p99_ms.{k}"]),
                  _ms(s[f"fit_score_full_p50_ms.{k}"]), _ms(s[f"fit_score_full_p99_ms.{k}"]))
    return t


def webhook_tables(r: dict[str, Any]) -> Group:
    """`bench webhook-latency`: p50/p99/max per connection kind and pod kind, then the server's side."""
    t = Table(title=f"webhook admission over TLS, {r['body_bytes']} B reviews, ms (target p99 <= "
                    f"{r['target_p99_ms']:g})", title_justify="left")
    for col in ("how", "n", "p50", "p99", "max"):
        t.add_column(col, justify="left" if col == "how" else "right")
    rows = [("keep-alive, all", r["keepalive"])]
    rows += [(f"keep-alive, {k}", v) for k, v in r["keepalive_by_pod"].items()]
    rows += [("new TLS connection", r["new_connection"]), ("admission only", r["in_process"])]
    for name, s in rows:
        t.add_row(name, str(s["n"]), _ms(s["p50_ms"]), _ms(s["p99_ms"]), _ms(s["max_ms"]))
    side = Table(title="webhook process", title_justify="left")
    side.add_column("figure")
    side.add_column("value", justify="right")
    side.add_row("CPU per review (keep-alive)", f"{r['server_cpu_ms_per_review']:.3f} ms")
    side.add_row("reviews/s, one connection", str(r["reviews_per_s_one_connection"]))
    for le, share in r["server_side_share_within_ms"].items():
        side.add_row(f"answered within {le} ms", f"{share:.2%}")
    met = r["keepalive"]["p99_ms"] <= r["target_p99_ms"]
    side.add_row("target p99", "[green]met[/green]" if met else "[red]missed[/red]")
    return Group(t, side)
