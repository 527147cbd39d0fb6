"""A pending claim pod asks what its claims ask in every view gpupack keeps of it: its claims made from templates
are found by owner before its status names them (without DynamicResources nothing waits for that), and a claim
that arrives after its pod re-translates the watch's entry, so pod groups plan the member with its demand."""

from __future__ import annotations

from typing import Any

from dra_support import state as dra_state

from binpack import DemandKind
from scheduler.dra.state import CLAIMS
from scheduler.state.kubeapi import WatchEvent

Obj = dict[str, Any]
NS = "ns"


def _pod() -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": NS, "uid": "pod-uid", "resourceVersion": "1",
                         "annotations": {"gpupack.io/pod-group": "job", "gpupack.io/pod-group-min": "2"}},
            "spec": {"schedulerName": "gpupack-scheduler",
                     "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "four"}],
                     "containers": [{"name": "c", "image": "x", "resources": {"claims": [{"name": "gpu"}]}}]},
            "status": {"phase": "Pending"}}


def _made_claim() -> Obj:
    """The claim the resourceclaim controller makes from the template: owned by the pod, annotated."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "p-gpu-x7k2d", "namespace": NS, "uid": "claim-uid", "resourceVersion": "2",
                         "annotations": {"resource.kubernetes.io/pod-claim-name": "gpu"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "pod-uid",
                                              "controller": True}]},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 4}}]}},
            "status": {}}


def test_a_claim_made_from_a_template_is_found_by_owner_before_the_pods_status_names_it() -> None:
    st, _ = dra_state(claims=[_made_claim()])
    req = st.request(_pod())  # what filter and prioritize read
    assert req.demand.kind is DemandKind.WHOLE and req.demand.count == 4


def test_a_claim_arriving_after_its_pod_re_translates_the_watchs_entry_and_its_group_member() -> None:
    st, _ = dra_state(pods=[_pod()])
    entry = st.pod("pod-uid")
    assert entry is not None and entry.request is not None and not entry.request.managed  # no claim seen yet
    st.push(CLAIMS, WatchEvent("ADDED", _made_claim()))
    entry = st.pod("pod-uid")
    assert entry is not None and entry.request is not None
    assert entry.request.demand.count == 4 and entry.request.group == "job"
    member = st.group_members((NS, "job"))["pod-uid"]
    assert member.request is not None and member.request.demand.count == 4  # pod groups plan it with this
    before = st.pod("pod-uid")
    st.push(CLAIMS, WatchEvent("MODIFIED", {**_made_claim(), "metadata": {**_made_claim()["metadata"],
                                                                          "resourceVersion": "3"}}))
    assert st.pod("pod-uid") is before  # the same demand: the entry is left as it was


def test_an_unrelated_claim_leaves_the_pod_as_it_was_and_a_bound_pod_is_not_re_translated() -> None:
    other = _made_claim()
    other["metadata"] = {**other["metadata"], "name": "q-gpu", "uid": "other", "ownerReferences": []}
    st, _ = dra_state(pods=[_pod()])
    before = st.pod("pod-uid")
    st.push(CLAIMS, WatchEvent("ADDED", other))
    assert st.pod("pod-uid") is before
    bound = _pod()
    bound["spec"]["nodeName"] = "dra-a100-node"
    bound["metadata"]["resourceVersion"] = "5"
    st.push("pods", WatchEvent("MODIFIED", bound))
    was = st.pod("pod-uid")
    st.push(CLAIMS, WatchEvent("ADDED", _made_claim()))
    assert st.pod("pod-uid") is was  # a bound pod's claims are bookings, not its demand
    assert was is not None and was.request is not None and not was.request.managed
