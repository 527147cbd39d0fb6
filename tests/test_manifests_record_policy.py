"""The ValidatingAdmissionPolicy that lets only gpupack change a pod's gpupack.io/devices record, rendered
as deployed and its CEL evaluated with cel-python (the harness of test_manifests_agent_policy): the
extender and the agent may write it, a user may neither set it on CREATE nor change or remove it later,
and everything else about a pod stays theirs to change."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_manifests_agent_policy import admit
from test_manifests_render import render

Obj = dict[str, Any]
RECORD = "gpupack.io/devices"
EXTENDER = {"username": "system:serviceaccount:gpupack-system:gpupack-scheduler"}
AGENT = {"username": "system:serviceaccount:gpupack-node:gpupack-agent"}
USER = {"username": "alice", "groups": ["system:authenticated"]}
DENIED = "gpupack.io/devices is written by gpupack only"


def _policy() -> Obj:
    objs = render("base")
    (policy,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"
                 and o["metadata"]["name"] == "gpupack-record-writers"]
    return policy


def pod(record: str | None = None, **labels: str) -> Obj:
    ann = {"team": "ml"} if record is None else {"team": "ml", RECORD: record}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml", "labels": labels,
                                                           "annotations": ann}, "spec": {"containers": []}}


@pytest.mark.parametrize("who", [EXTENDER, AGENT])
def test_gpupack_may_write_and_correct_the_record(who: Obj) -> None:
    assert admit(_policy(), who, pod('{"v":1,"b":2}'), pod('{"v":1,"a":1}')) == "allowed"
    assert admit(_policy(), who, pod('{"v":1}'), pod(None)) == "allowed"


def test_a_user_may_not_change_remove_or_forge_the_record() -> None:
    p = _policy()
    assert admit(p, USER, pod('{"v":1,"forged":1}'), pod('{"v":1}')).startswith(DENIED)
    assert admit(p, USER, pod(None), pod('{"v":1}')).startswith(DENIED)  # removed
    assert admit(p, USER, pod('{"v":1}'), pod(None)).startswith(DENIED)  # added later
    assert admit(p, USER, pod('{"v":1}'), {}, operation="CREATE").startswith(DENIED)


def test_everything_else_about_a_pod_stays_the_users() -> None:
    p = _policy()
    old = pod('{"v":1}')
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["tier"] = "gold"
    new["metadata"]["annotations"]["team"] = "infra"
    assert admit(p, USER, new, old) == "allowed"
    assert admit(p, USER, pod(None), {}, operation="CREATE") == "allowed"
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    assert admit(p, USER, bare, copy.deepcopy(bare)) == "allowed"  # no annotations at all
