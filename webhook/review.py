"""AdmissionReview v1 on the wire: parse a request body, answer it, and build the response document.

parse_review refuses anything that is not an AdmissionReview with a `request.uid` (BadReview, which
the app answers with HTTP 400). review_response is the one pure, keyword-only builder of the
response envelope (apiVersion/kind, the uid echoed, base64 JSONPatch, 403 Forbidden on denial).
dryRun needs nothing special: admission here has no side effects at all (sideEffects: None).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.admit import PREFIX, Decision, Policy, admit
from webhook.dra import claim_problem

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
_WARNING_MAX = 256  # the apiserver truncates longer warnings


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request gpupack can answer; the message says why."""


@dataclass(frozen=True, slots=True)
class Review:
    """The fields of `request` that the answer depends on."""

    uid: str
    group: str
    kind: str
    sub_resource: str
    operation: str
    dry_run: bool
    obj: Any
    namespace: str = ""


def _str(x: object) -> str:
    return x if isinstance(x, str) else ""


def parse_review(body: bytes) -> Review:
    """The request of an AdmissionReview v1 body; BadReview when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadReview(f"body is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise BadReview(f"body is not an {KIND}: expected kind {KIND!r}")
    if doc.get("apiVersion") != API_VERSION:
        raise BadReview(f"apiVersion {doc.get('apiVersion')!r} is not served; use {API_VERSION} "
                        f"(admissionReviewVersions: [v1])")
    req = doc.get("request")
    if not isinstance(req, dict):
        raise BadReview(f"{KIND} has no request object")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview(f"{KIND} request has no uid")
    kind = req.get("kind")
    kind = kind if isinstance(kind, dict) else {}
    return Review(uid=uid, group=_str(kind.get("group")), kind=_str(kind.get("kind")),
                  sub_resource=_str(req.get("subResource")), operation=_str(req.get("operation")),
                  dry_run=req.get("dryRun") is True, obj=req.get("object"), namespace=_str(req.get("namespace")))


def encode_patch(ops: Sequence[Mapping[str, Any]]) -> str:
    return base64.b64encode(orjson.dumps(list(ops))).decode("ascii")


def review_response(*, uid: str, allowed: bool, patch: Sequence[Mapping[str, Any]] = (), message: str = "",
                    code: int = 403, reason: str = "Forbidden", warnings: Sequence[str] = ()) -> dict[str, Any]:
    """The AdmissionReview response document: uid echoed; JSONPatch only when there is one; status on denial."""
    resp: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        resp["status"] = {"code": code, "reason": reason, "message": message}
    elif patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = encode_patch(patch)
    if warnings:
        resp["warnings"] = [w[:_WARNING_MAX] for w in warnings]
    return {"apiVersion": API_VERSION, "kind": KIND, "response": resp}


def decide(review: Review, policy: Policy) -> Decision:
    """Pod CREATE is looked at, and in DRA namespaces ResourceClaim(Template) CREATE; any other kind, sub-resource
    or operation is allowed unchanged."""
    if review.group == "resource.k8s.io" and review.kind in ("ResourceClaim", "ResourceClaimTemplate") and \
            review.operation == "CREATE" and not review.sub_resource and review.namespace in policy.dra_namespaces:
        problem = claim_problem(review.obj) if isinstance(review.obj, Mapping) else "no object"
        return Decision(False, "denied", message=PREFIX + problem) if problem else Decision(True, "unchanged")
    if review.group or review.kind != "Pod" or review.sub_resource or review.operation != "CREATE":
        return Decision(True, "skipped")
    if not isinstance(review.obj, Mapping):
        raise BadReview("Pod CREATE request has no object")
    return admit(review.obj, policy, review.namespace)


def respond(review: Review, d: Decision) -> dict[str, Any]:
    return review_response(uid=review.uid, allowed=d.allowed, patch=d.patch, message=d.message, warnings=d.warnings)
