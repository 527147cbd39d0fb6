"""The ValidatingAdmissionPolicy that holds each node agent to its own Node: rendered with kubectl
kustomize as deployed, its CEL evaluated with cel-python on the requests the API server would admit
(the agent's PATCH of its own inventory) and those it must deny (another node, a token bound to no
node, any change beside gpupack.io/ annotations); other users are not matched at all."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest
from celpy import celtypes
from test_manifests_render import render

AGENT = "system:serviceaccount:gpupack-node:gpupack-agent"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
Obj = dict[str, Any]


def _policy(overlay: str) -> Obj:
    objs = render(overlay)
    (policy,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy" and "own-node" in o["metadata"]["name"]]
    (binding,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicyBinding"
                  and o["spec"]["policyName"] == policy["metadata"]["name"]]
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}]
    return policy


def admit(policy: Obj, user: Obj, new: Obj, old: Obj, operation: str = "UPDATE") -> str:
    """What the API server decides: "not matched", "allowed", or the first denial's message."""
    env = celpy.Environment()

    def run(expr: str, act: dict[str, Any]) -> Any:
        return env.program(env.compile(expr)).evaluate(act)

    act: dict[str, Any] = {"request": celpy.json_to_cel({"userInfo": user, "operation": operation}),
                           "object": celpy.json_to_cel(new), "oldObject": celpy.json_to_cel(old)}
    spec = policy["spec"]
    if not all(run(m["expression"], act) for m in spec.get("matchConditions", [])):
        return "not matched"
    variables = celtypes.MapType()
    act["variables"] = variables
    for v in spec.get("variables", []):
        variables[celtypes.StringType(v["name"])] = run(v["expression"], act)
    for rule in spec["validations"]:
        if not run(rule["expression"], act):
            return str(run(rule["messageExpression"], act)) if "messageExpression" in rule else rule["message"]
    return "allowed"


def node(name: str, inventory: str = "v1", **extra_annotations: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true"},
                         "annotations": {"gpupack.io/gpu-inventory": inventory, "node.alpha.kubernetes.io/ttl": "0",
                                         **extra_annotations}},
            "spec": {"podCIDR": "10.0.0.0/24"}}


def agent_on(node_name: str | None) -> Obj:
    user: Obj = {"username": AGENT, "uid": "u", "groups": ["system:serviceaccounts", "system:authenticated"]}
    if node_name is not None:
        user["extra"] = {NODE_NAME_KEY: [node_name], "authentication.kubernetes.io/pod-name": ["gpupack-agent-x"]}
    return user


@pytest.mark.parametrize("overlay", ["base", "overlays/dynamic-mig"])
def test_the_agent_may_update_its_own_inventory(overlay: str) -> None:
    assert admit(_policy(overlay), agent_on("gpu-a"), node("gpu-a", "v2"), node("gpu-a", "v1")) == "allowed"


def test_the_agent_may_not_touch_another_node() -> None:
    why = admit(_policy("base"), agent_on("gpu-a"), node("gpu-b", "v2"), node("gpu-b", "v1"))
    assert why == "the gpupack agent may change only its own Node; its token is bound to gpu-a, not gpu-b"


def test_a_token_bound_to_no_node_is_denied() -> None:
    why = admit(_policy("base"), agent_on(None), node("gpu-a", "v2"), node("gpu-a", "v1"))
    assert why.startswith("the gpupack agent may change only its own Node; its token is bound to no node")


@pytest.mark.parametrize("change", ["label", "taint", "other annotation", "removed annotation"])
def test_only_gpupack_annotations_of_its_own_node(change: str) -> None:
    old = node("gpu-a")
    new = copy.deepcopy(old)
    if change == "label":
        new["metadata"]["labels"]["nvidia.com/gpu.product"] = "H100"
    elif change == "taint":
        new["spec"]["taints"] = [{"key": "x", "effect": "NoSchedule"}]
    elif change == "other annotation":
        new["metadata"]["annotations"]["example.com/owner"] = "agent"
    else:
        del new["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"]
    assert admit(_policy("base"), agent_on("gpu-a"), new, old) != "allowed"


def test_other_users_are_not_matched() -> None:
    admin = {"username": "kubernetes-admin", "groups": ["system:masters"]}
    assert admit(_policy("base"), admin, node("gpu-b", "v2"), node("gpu-b", "v1")) == "not matched"
