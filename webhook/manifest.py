"""The MutatingWebhookConfiguration that points the apiserver at the webhook, with its CA bundle.

One pure builder, so `gpupack webhook-config --ca-file ca.crt` prints what the cluster needs:
Pod CREATE only, v1 reviews, sideEffects None (dry runs are safe), reinvocationPolicy IfNeeded
(the patch is idempotent), a 5 s timeout, and the webhook's own namespace and kube-system excluded
so a Fail policy can never block the webhook's own pods (Koordinator issue #1844).
"""

from __future__ import annotations

import base64
from typing import Any

WEBHOOK_NAME = "pods.gpupack.io"


def _pem_certificates(ca_pem: bytes) -> bytes:
    text = ca_pem.decode("ascii", errors="replace")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError("CA bundle: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")
    return ca_pem


def webhook_configuration(*, ca_pem: bytes, namespace: str = "gpupack-system", service: str = "gpupack-webhook",
                          url: str = "", port: int = 443, failure_policy: str = "Fail", timeout_s: int = 5,
                          name: str = "gpupack") -> dict[str, Any]:
    """The configuration as a dict (YAML/JSON ready); `url` replaces the in-cluster service when given."""
    if failure_policy not in ("Fail", "Ignore"):
        raise ValueError(f"failurePolicy must be Fail or Ignore, got {failure_policy!r}")
    if not 1 <= timeout_s <= 30:
        raise ValueError(f"timeoutSeconds must be 1..30, got {timeout_s}")
    if url and not url.startswith("https://"):
        raise ValueError("the apiserver calls webhooks over https only")
    bundle = base64.b64encode(_pem_certificates(ca_pem)).decode("ascii")
    client: dict[str, Any] = {"caBundle": bundle}
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
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                                        "values": sorted({"kube-system", namespace})}]},
        }],
    }
