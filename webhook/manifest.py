"""The MutatingWebhookConfiguration that points the apiserver at the webhook, with its CA bundle.

One pure builder, so `gpupack webhook-config --ca-file ca.crt` prints what the cluster needs:
Pod CREATE only, v1 reviews, sideEffects None (dry runs are safe), reinvocationPolicy IfNeeded
(the patch is idempotent), a 5 s timeout, and the webhook's own namespace and kube-system excluded
so a Fail policy can never block the webhook's own pods (Koordinator issue #1844), and only
namespaces labelled `gpupack.io/webhook=enabled` (the opt-in the README and deploy guide use).

It is the one source of that object: `manifests/base/webhook/mutatingwebhook.yaml` is this
builder's output without a CA (`gpupack webhook-config > ...`; the overlays fill the caBundle in),
and a test checks the file is exactly `manifest_text()`.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

WEBHOOK_NAME = "pods.gpupack.io"
OPT_IN_LABEL = "gpupack.io/webhook"
MANIFEST_PATH = "manifests/base/webhook/mutatingwebhook.yaml"

_HEADER = f"""\
# Generated from webhook/manifest.py, the one source of this object, by
#   gpupack webhook-config > {MANIFEST_PATH}
# (a test checks the file is its output): edit the builder, not this file.
# Pod CREATE in namespaces that opt in (label {OPT_IN_LABEL}=enabled). Fail closed: a GPU pod
# must not slip past to the default scheduler. gpupack's own namespace and kube-system are excluded
# even if labelled, so the webhook can never block its own pods.
# caBundle is filled in by the overlay (cert-manager's CA injector, or the certgen Job).
"""


def _pem_certificates(ca_pem: bytes) -> bytes:
    text = ca_pem.decode("ascii", errors="replace")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError("CA bundle: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")
    return ca_pem


def webhook_configuration(*, ca_pem: bytes | None, namespace: str = "gpupack-system", service: str = "gpupack-webhook",
                          url: str = "", port: int = 443, failure_policy: str = "Fail", timeout_s: int = 5,
                          name: str = "gpupack") -> dict[str, Any]:
    """The configuration as a dict (YAML/JSON ready); `url` replaces the in-cluster service when given.

    Without `ca_pem` there is no caBundle: the form the manifests ship, for an overlay to fill in.
    """
    if failure_policy not in ("Fail", "Ignore"):
        raise ValueError(f"failurePolicy must be Fail or Ignore, got {failure_policy!r}")
    if not 1 <= timeout_s <= 30:
        raise ValueError(f"timeoutSeconds must be 1..30, got {timeout_s}")
    if url and not url.startswith("https://"):
        raise ValueError("the apiserver calls webhooks over https only")
    client: dict[str, Any] = {}
    if ca_pem is not None:
        client["caBundle"] = base64.b64encode(_pem_certificates(ca_pem)).decode("ascii")
    if url:
        client["url"] = url
    else:
        client["service"] = {"namespace": namespace, "name": service, "path": "/mutate", "port": port}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": failure_policy,
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": timeout_s,
            "matchPolicy": "Equivalent",
            "clientConfig": client,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                       "scope": "Namespaced"}],
            "namespaceSelector": {
                "matchLabels": {OPT_IN_LABEL: "enabled"},
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                      "values": sorted({"kube-system", namespace})}],
            },
        }],
    }


def manifest_text(doc: dict[str, Any]) -> str:
    """The YAML the command prints; a configuration without a CA gets the manifest's header."""
    body = yaml.safe_dump(doc, sort_keys=False)
    has_ca = any("caBundle" in h["clientConfig"] for h in doc["webhooks"])
    return body if has_ca else _HEADER + body
