"""DRA namespaces (allocate mode, docs/dra.md): a pod's `nvidia.com/gpu` / MIG ask becomes a claim from one of
gpupack's ResourceClaimTemplates, and claims gpupack cannot allocate are refused with a message. Pure.

The webhook has no API access (it creates nothing): the templates have fixed names, one per ask
(`gpupack-gpu-<N>`, `gpupack-mig-<profile>-<N>`), and are applied once to each namespace that opts in
(`gpupack webhook-dra-templates NAMESPACE | kubectl apply -f -`); the webhook is told the namespaces
(GPUPACK_WEBHOOK_DRA_NAMESPACES). There a pod's GPU resources are removed from its containers and each such
container gets a pod claim from the matching template. Shares, a model annotation and `topology: nvlink` are
refused with what to write instead (NVIDIA's DRA driver publishes no NVLink; gpupack's templates carry no
model selector). A ResourceClaim or ResourceClaimTemplate created there is refused when gpupack's allocator
would refuse it (scheduler/dra/allocate.py: unknown class, firstAvailable, All, non-CEL selectors) or when a
selector does not parse or calls a function gpupack's CEL does not evaluate (scheduler/dra/cel.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from binpack import DemandKind, Topology
from binpack.catalog import mig_profile_names
from scheduler.dra.allocate import Unallocatable, claim_spec
from scheduler.dra.cel import FUNCTIONS, CelRefused, compile_selector
from scheduler.translate.pod import A_MODEL, A_TOPOLOGY, GPU, MIG_PREFIX, PodRequest, gpu_resource_names, mig_profile_of
from webhook.patch import Op, pointer

TEMPLATE_LABEL = "gpupack.io/template"
# CEL's own functions and macros (cel-python evaluates them), beside gpupack's Kubernetes ones
_STANDARD = {"has", "all", "exists", "exists_one", "map", "filter", "size", "contains", "startsWith", "endsWith",
             "matches", "int", "uint", "double", "string", "bool", "bytes", "duration", "timestamp", "type", "dyn"}
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_STRING = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")


def template_name(profile: str, count: int) -> str:
    """The template for `count` whole GPUs (profile "") or MIG devices of a profile; a DNS subdomain."""
    return f"gpupack-gpu-{count}" if not profile else f"gpupack-mig-{profile.replace('+', '-')}-{count}"


def template(namespace: str, profile: str, count: int) -> dict[str, Any]:
    ex: dict[str, Any] = {"deviceClassName": "mig.nvidia.com" if profile else "gpu.nvidia.com",
                          "allocationMode": "ExactCount", "count": count}
    if profile:
        ex["selectors"] = [{"cel": {"expression": f"device.attributes['gpu.nvidia.com'].profile == '{profile}'"}}]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": template_name(profile, count), "namespace": namespace,
                         "labels": {TEMPLATE_LABEL: "true"}},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": ex}]}}}}


def templates(namespace: str, max_gpus: int) -> list[dict[str, Any]]:
    """Every template the webhook may name: 1..max_gpus whole GPUs, 1..7 devices of each catalog MIG profile."""
    out = [template(namespace, "", n) for n in range(1, max_gpus + 1)]
    out += [template(namespace, p, n) for p in sorted(mig_profile_names()) for n in range(1, 8)]
    return out


def selector_problem(expr: str) -> str:
    """Why gpupack cannot evaluate this CEL selector ("" if it can, as far as can be told without a device)."""
    try:
        compile_selector(expr)
    except CelRefused as e:
        return str(e)
    unknown = sorted({f for f in _CALL.findall(_STRING.sub("''", expr)) if f not in FUNCTIONS and f not in _STANDARD})
    if unknown:
        return (f"CEL selector {expr!r} calls {', '.join(unknown)}, which gpupack does not evaluate (it has standard "
                f"CEL plus quantity/semver comparisons; docs/dra.md)")
    return ""


def _map(x: object) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def claim_problem(obj: Mapping[str, Any]) -> str:
    """Why gpupack's allocator cannot serve a ResourceClaim or ResourceClaimTemplate ("" when it can)."""
    kind = obj.get("kind")
    meta = _map(obj.get("metadata"))
    spec = _map(obj.get("spec"))
    if kind == "ResourceClaimTemplate":
        spec = _map(spec.get("spec"))
    try:
        cs = claim_spec({"metadata": meta, "spec": spec})
    except Unallocatable as e:
        return str(e)
    except (TypeError, ValueError, AttributeError) as e:
        return f"{kind} cannot be read ({type(e).__name__}: {e})"
    for r in cs.requests:
        for expr in r.selectors:
            why = selector_problem(expr)
            if why:
                return f"request {r.name}: {why}"
    return ""


def convert(pod: Mapping[str, Any], req: PodRequest) -> tuple[tuple[Op, ...], str]:
    """The JSONPatch that moves the pod's GPU resources into claims from gpupack's templates, or why it cannot."""
    d = req.demand
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    if d.kind is DemandKind.SHARE:
        return (), ("this namespace gets GPUs through DRA, where gpupack allocates whole GPUs and MIG devices, not "
                    f"shares: ask for {GPU}: N or {MIG_PREFIX}<profile>: N")
    if d.models or A_MODEL in ann:
        return (), (f"{A_MODEL} cannot be carried into this DRA namespace's claims: remove it and ask with a "
                    "ResourceClaim whose selector is device.attributes['gpu.nvidia.com'].productName == '<name>'")
    if d.topology is Topology.NVLINK or str(ann.get(A_TOPOLOGY, "")) == "nvlink":
        return (), (f"{A_TOPOLOGY}: nvlink is not carried into gpupack's claim templates (NVIDIA's DRA driver "
                    "publishes no NVLink); write best-effort, or a ResourceClaim with a matchAttribute constraint "
                    f"on resource.kubernetes.io/pcieRoot, or, in allocate mode on nodes where gpupack's agent runs, "
                    f"a ResourceClaim annotated {A_TOPOLOGY}: nvlink")
    spec = pod.get("spec") or {}
    ops: list[Op] = []
    claims: list[dict[str, str]] = []
    for key, short in (("initContainers", "i"), ("containers", "c")):
        for i, c in enumerate(spec.get(key) or []):
            res = c.get("resources") or {}
            names = sorted(set(gpu_resource_names(res.get("limits") or {})) |
                           set(gpu_resource_names(res.get("requests") or {})))
            if not names:
                continue
            (name,) = names  # read_pod allows one GPU resource per container
            ask = next((a for a in req.containers if a.name == c.get("name")), None)
            if ask is None or ask.count < 1:
                continue
            profile = mig_profile_of(name) if name.startswith(MIG_PREFIX) else ""
            claim = f"gpupack-{short}{i}"
            claims.append({"name": claim, "resourceClaimTemplateName": template_name(profile, ask.count)})
            for section in ("limits", "requests"):
                if name in (res.get(section) or {}):
                    ops.append({"op": "remove", "path": pointer("spec", key, i, "resources", section, name)})
            if res.get("claims"):
                ops.append({"op": "add", "path": pointer("spec", key, i, "resources", "claims", "-"),
                            "value": {"name": claim}})
            else:
                ops.append({"op": "add", "path": pointer("spec", key, i, "resources", "claims"),
                            "value": [{"name": claim}]})
    if not claims:
        return (), ""
    if spec.get("resourceClaims"):
        ops += [{"op": "add", "path": "/spec/resourceClaims/-", "value": c} for c in claims]
    else:
        ops.append({"op": "add", "path": "/spec/resourceClaims", "value": claims})
    return tuple(ops), ""
