"""The webhook in DRA namespaces (allocate mode, webhook/dra.py): a pod's nvidia.com/gpu / MIG ask becomes a pod
claim from gpupack's templates, which gpupack's allocator then serves on the fixture slices; shares, models and
nvlink are refused with what to write; a ResourceClaim(Template) gpupack cannot allocate is refused with why."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
import yaml
from dra_support import DRA, load, state
from test_webhook_admit import ctr, pod
from typer.testing import CliRunner

from scheduler.cli import app as cli
from scheduler.dra.allocate import allocate_claims, claim_spec
from webhook.admit import Policy, admit
from webhook.dra import claim_problem, templates
from webhook.review import Review, decide

NS = "gpu-team"
POLICY = Policy(dra_namespaces=frozenset({NS}))
TEMPLATES = {t["metadata"]["name"]: t for t in templates(NS, 8)}


def _converted(p: dict[str, Any]) -> dict[str, Any]:
    d = admit(p, POLICY, NS)
    assert d.allowed, d.message
    out = jsonpatch.apply_patch(copy.deepcopy(p), list(d.patch))
    assert admit(out, POLICY, NS).patch == ()  # idempotent (reinvocationPolicy IfNeeded): nothing left to move
    return dict(out)


def _allocated(template: str, node: str) -> list[str]:
    """The devices gpupack's allocator gives a claim made from the template on a fixture node."""
    claim = {"metadata": {"uid": "u", "name": "c", "namespace": NS}, "spec": TEMPLATES[template]["spec"]["spec"]}
    st, dra = state()
    nd = dra.node_devices(node)
    assert nd is not None
    return [d for _, d in allocate_claims(st.view().snapshot, nd, [claim_spec(claim)]).results["u"]]


def test_whole_gpus_become_a_claim_from_the_count_template() -> None:
    out = _converted(pod(ctr("main", {"nvidia.com/gpu": "2"}), ctr("side")))
    main = out["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in main["resources"]["limits"] and "nvidia.com/gpu" not in main["resources"]["requests"]
    assert main["resources"]["claims"] == [{"name": "gpupack-c0"}]
    assert out["spec"]["resourceClaims"] == [{"name": "gpupack-c0", "resourceClaimTemplateName": "gpupack-gpu-2"}]
    assert out["spec"]["schedulerName"] == "gpupack-scheduler"
    assert len(_allocated("gpupack-gpu-2", "dra-a100-node")) == 2


def test_mig_becomes_a_claim_with_the_profile_selector_and_gets_that_profile() -> None:
    out = _converted(pod(ctr("main", {"nvidia.com/mig-1g.10gb": "1"})))
    (rc,) = out["spec"]["resourceClaims"]
    assert rc["resourceClaimTemplateName"] == "gpupack-mig-1g.10gb-1"
    (dev,) = _allocated("gpupack-mig-1g.10gb-1", "dra-h100-node")
    assert "-mig-1g10gb-" in dev


def test_outside_dra_namespaces_nothing_changes() -> None:
    p = pod(ctr("main", {"nvidia.com/gpu": "1"}))
    assert admit(p, POLICY, "other").patch == admit(p, Policy()).patch


@pytest.mark.parametrize(("p", "hint"), [
    (pod(ctr("main", {"gpupack.io/gpu-memory": "20000"})), "not shares"),
    (pod(ctr("main", {"nvidia.com/gpu": "1"}), ann={"gpupack.io/gpu-model": "H100-SXM5-80GB"}), "productName"),
    (pod(ctr("main", {"nvidia.com/gpu": "2"}), ann={"gpupack.io/topology": "nvlink"}), "pcieRoot"),
])
def test_what_the_templates_cannot_carry_is_refused_with_what_to_write(p: dict[str, Any], hint: str) -> None:
    d = admit(p, POLICY, NS)
    assert not d.allowed and hint in d.message


def _review(obj: dict[str, Any], ns: str = NS) -> Review:
    return Review(uid="1", group="resource.k8s.io", kind=obj["kind"], sub_resource="", operation="CREATE",
                  dry_run=False, obj=obj, namespace=ns)


def test_the_fixture_claims_and_every_template_are_served() -> None:
    claims = [load(str(p.relative_to(DRA))) for p in sorted(DRA.glob("claims/scheduled-ncc-true/before/claim-*"))]
    for obj in [*claims, *TEMPLATES.values()]:
        obj = {"kind": "ResourceClaim", **obj} if "kind" not in obj else obj
        assert claim_problem(obj) == "", obj["metadata"]["name"]
        assert decide(_review(obj), POLICY).allowed


@pytest.mark.parametrize(("ex", "why"), [
    ({"deviceClassName": "example.com-gpu"}, "not one gpupack allocates"),
    ({"deviceClassName": "gpu.nvidia.com", "allocationMode": "All"}, "allocationMode All"),
    ({"deviceClassName": "gpu.nvidia.com",
      "selectors": [{"cel": {"expression": "device.attributes['gpu.nvidia.com'].productName.lowerAscii() == 'x'"}}]},
     "calls lowerAscii"),
    ({"deviceClassName": "gpu.nvidia.com", "selectors": [{"cel": {"expression": "device.driver =="}}]},
     "does not parse"),
])
def test_claims_gpupack_cannot_allocate_are_refused_in_dra_namespaces(ex: dict[str, Any], why: str) -> None:
    claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "c", "namespace": NS},
             "spec": {"devices": {"requests": [{"name": "gpu", "exactly": ex}]}}}
    d = decide(_review(claim), POLICY)
    assert not d.allowed and why in d.message and d.message.startswith("gpupack: ")
    assert decide(_review(claim, "other"), POLICY).allowed  # other namespaces: not gpupack's business
    tmpl = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": claim["metadata"],
            "spec": {"spec": claim["spec"]}}
    assert not decide(_review(tmpl), POLICY).allowed


def test_the_cli_prints_the_templates_to_apply() -> None:
    res = CliRunner().invoke(cli, ["webhook-dra-templates", NS, "--max-gpus-per-node", "4"])
    assert res.exit_code == 0, res.output
    docs = list(yaml.safe_load_all(res.output))
    assert [d["metadata"]["name"] for d in docs[:4]] == [f"gpupack-gpu-{n}" for n in range(1, 5)]
    assert all(d["kind"] == "ResourceClaimTemplate" and d["metadata"]["namespace"] == NS for d in docs)


def test_the_dra_namespaces_setting_reaches_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.app import create_app
    from webhook.settings import WebhookSettings

    monkeypatch.setenv("GPUPACK_WEBHOOK_DRA_NAMESPACES", f"{NS}, other-team")
    s = WebhookSettings(insecure_http=True, host="127.0.0.1")
    assert create_app(s).state.policy.dra_namespaces == frozenset({NS, "other-team"})
