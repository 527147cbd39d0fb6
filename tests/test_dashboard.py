"""The Grafana dashboard (manifests/components/monitoring/gpupack-dashboard.json): every query names only
metrics that gpupack's code exports, under the names Prometheus stores (counters with _total, histograms
with _bucket/_sum/_count), and the dashboard shows what the issue asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "manifests" / "components" / "monitoring" / "gpupack-dashboard.json"
# PromQL words that are not metric names (functions, aggregations, modifiers)
PROMQL = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "delta", "histogram_quantile", "by",
          "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
          "clamp_min", "clamp_max", "topk", "bottomk", "abs", "time", "vector", "scalar", "max_over_time",
          "min_over_time", "avg_over_time", "label_replace", "absent"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
            "gauge": ("",), "info": ("_info",), "unknown": ("",)}


def _names(registry: CollectorRegistry) -> set[str]:
    return {f.name + sfx for f in registry.collect() for sfx in SUFFIXES.get(f.type, ("",))}


def exported() -> set[str]:
    """What the extender (with pod groups), the webhook and the agent serve on their metrics ports."""
    import scheduler.agent.metrics  # noqa: F401  (the agent's metrics live in the default registry)
    from scheduler.extender.metrics import Metrics
    from scheduler.groups import PodGroups
    from scheduler.state.cluster import ClusterState
    from webhook.app import Metrics as WebhookMetrics

    state = ClusterState()
    extender = Metrics(state)
    PodGroups(state, extender.registry)
    return _names(extender.registry) | _names(WebhookMetrics.create().registry) | _names(REGISTRY)


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    e = re.sub(r"\[[^\]]*\]", "", e)  # range durations
    e = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?\b", "", e)  # numbers
    return {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e) if t not in PROMQL}


def queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in _panels(doc) for t in p.get("targets", [])]


def test_exported_names_are_the_stored_ones(exported_names: set[str]) -> None:
    assert {"gpupack_binds_total", "gpupack_extender_request_seconds_bucket", "gpupack_gpus"} <= exported_names
    assert not {"gpupack_binds", "gpupack_extender_request_seconds", "gpupack_no_such_metric"} & exported_names


def test_the_name_reader_on_known_queries() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, verb) (rate(a_bucket{verb="bind"}[5m])))') == {
        "a_bucket"}
    assert metric_names("sum(max by (model) (x)) / sum(max by (model) (y_total))") == {"x", "y_total"}
    assert metric_names('sum by (node) (1 - up{job="a b"})') == {"up"}


@pytest.mark.parametrize(("title", "expr"), queries())
def test_every_query_names_metrics_the_code_exports(title: str, expr: str, exported_names: set[str]) -> None:
    names = metric_names(expr)
    assert names, f"{title}: {expr} reads no metric"
    assert names <= exported_names, f"{title}: {sorted(names - exported_names)} are exported by no component"


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    return exported()


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    read = {n for _, e in queries() for n in metric_names(e)}
    wanted = {
        "cluster GPU allocation per model": "gpupack_gpus_allocated",
        "stranded GPUs per model": "gpupack_gpus_stranded",
        "MIG slots": "gpupack_mig_slices_free",
        "pending pods by reason": "gpupack_pending_pods",
        "verb latency": "gpupack_extender_request_seconds_bucket",
        "bind outcomes": "gpupack_binds_total",
        "pod groups": "gpupack_pod_groups",
        "inventory age": "gpupack_agent_inventory_age_seconds",
        "NVML errors": "gpupack_agent_nvml_errors_total",
        "device health": "gpupack_agent_gpus",
        "webhook": "gpupack_webhook_admissions_total",
    }
    missing = {what: m for what, m in wanted.items() if m not in read}
    assert not missing, missing
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "gpupack" and {v["name"] for v in doc["templating"]["list"]} == {"datasource"}
    ids = [p["id"] for p in _panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
