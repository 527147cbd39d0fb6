"""docs/dra.md's kube-scheduler configuration is what the fixtures README says a DRA cluster needs, and
agrees with the shipped configuration everywhere else."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _doc_config() -> dict:  # type: ignore[type-arg]
    text = (ROOT / "docs" / "dra.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "KubeSchedulerConfiguration" in b]
    doc: dict = yaml.safe_load(block)  # type: ignore[type-arg]
    return doc


def test_claim_only_pods_reach_the_extender_and_shares_still_fit() -> None:
    cfg = _doc_config()
    (ext,) = cfg["extenders"]
    assert "managedResources" not in ext  # README item 1: with nvidia.com/gpu managed, claim pods skip gpupack
    (profile,) = cfg["profiles"]
    (fit,) = [p for p in profile["pluginConfig"] if p["name"] == "NodeResourcesFit"]
    assert set(fit["args"]["ignoredResources"]) == {"gpupack.io/gpu-memory", "gpupack.io/gpu-compute"}
    assert not profile.get("plugins")  # DynamicResources stays on: it allocates in observe mode


def test_the_rest_matches_the_shipped_configuration() -> None:
    shipped = yaml.safe_load((ROOT / "manifests/base/scheduler/scheduler-config.yaml").read_text())
    cfg = _doc_config()
    (mine,) = cfg["extenders"]
    (base,) = shipped["extenders"]
    for key in ("urlPrefix", "filterVerb", "prioritizeVerb", "bindVerb", "preemptVerb", "weight", "ignorable",
                "httpTimeout", "nodeCacheCapable"):
        assert mine[key] == base[key], key
    assert cfg["percentageOfNodesToScore"] == shipped["percentageOfNodesToScore"] == 100
    assert cfg["profiles"][0]["schedulerName"] == shipped["profiles"][0]["schedulerName"]
