"""DRA on a real control plane, with kube-scheduler and kube-controller-manager (not part of CI).

    python tests/e2e/dra_live.py config observe|allocate|per-class > /tmp/sched.yaml   # kube-scheduler's
    (start etcd, kube-apiserver, kube-scheduler with that configuration, and kube-controller-manager's
     resourceclaim and garbage-collector controllers; tests/e2e/dra_live.sh does it all)
    KUBECONFIG=admin.kubeconfig python tests/e2e/dra_live.py run observe|allocate|per-class

gpupack's extender runs in this process on 127.0.0.1:PORT (the configuration's urlPrefix) in the given DRA mode.
The script makes the NVIDIA chart's DeviceClasses, two Nodes with the fixture A100 and H100 ResourceSlices, a
ResourceClaimTemplate and pods of the gpupack-scheduler profile that use it; the resourceclaim controller makes
their claims, kube-scheduler schedules them and calls gpupack's filter, prioritize and bind.

- observe: the profile keeps DynamicResources, which allocates the claims in PreBind; gpupack chooses the node
  (its prioritize packs the second pod beside the first), adopts the devices at bind, and its ledger books them.
- allocate: the profile disables DynamicResources; gpupack's filter checks the claims and its bind writes the
  finalizer, allocation and reservedFor, then the Binding; a pod group of two 4-GPU members gets its claims
  allocated together at the first member's bind.
- per-class: two profiles, gpupack-allocate (DynamicResources off: gpupack allocates gpu.nvidia.com there) and
  gpupack-scheduler (DynamicResources on: it allocates the MIG claim, gpupack adopts it); a gpu.nvidia.com claim
  in gpupack-scheduler is refused by gpupack's filter with the reason.
Both: the pods are deleted; the resourceclaim controller takes them out of reservedFor and deallocates the claims
(which the finalizer lets it do), the garbage collector deletes them, and gpupack's ledger frees the devices.
The last line is E2E PASSED or E2E FAILED; the exit code matches.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn
from starlette.responses import Response

from scheduler.extender.app import create_app
from scheduler.settings import Settings

DRA = Path(__file__).resolve().parents[1] / "data" / "dra"
NS, SCHED, PORT = "gpupack-dra-live", "gpupack-scheduler", 18931
NODES = {"dra-a100-node": "gpupack-live-a100", "dra-h100-node": "gpupack-live-h100"}
Obj = dict[str, Any]
failures: list[str] = []
SCORES: dict[str, dict[str, int]] = {}  # pod -> gpupack's last prioritize answer

CONFIG = """apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: __KUBECONFIG__
leaderElection:
  leaderElect: false
percentageOfNodesToScore: 100
profiles:
{profiles}extenders:
  - urlPrefix: "http://127.0.0.1:{port}"
    filterVerb: filter
    prioritizeVerb: prioritize
    bindVerb: bind
    weight: 5
    enableHTTPS: false
    nodeCacheCapable: false
    ignorable: false
    httpTimeout: 5s
"""
PROFILE = """  - schedulerName: {name}
{plugins}"""
DISABLED = """    plugins:
      multiPoint:
        disabled:
          - name: DynamicResources
"""


def kubectl(*args: str, body: Obj | None = None, check: bool = True) -> str:
    if args[0] == "create" and "-f" in args:
        args = (args[0], "--validate=false", *args[1:])
    res = subprocess.run(["kubectl", *args], input=json.dumps(body) if body else None, capture_output=True,
                         text=True, timeout=60)
    if check and res.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {res.stderr}")
    return res.stdout


def get(kind: str, name: str, ns: str | None = NS) -> Obj | None:
    out = kubectl("get", kind, name, "-o", "json", "--ignore-not-found", *(["-n", ns] if ns else []))
    return json.loads(out) if out.strip() else None


def check(ok: bool, what: str) -> None:
    print(("  ok   " if ok else "  FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def until(cond: Any, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.5)
    return False


def load(rel: str) -> Obj:
    doc: Obj = json.loads((DRA / rel).read_text())
    return doc


def setup() -> None:
    kubectl("create", "namespace", NS, check=False)
    kubectl("create", "serviceaccount", "default", "-n", NS, check=False)  # no serviceaccount controller runs
    for cls in ("gpu", "mig"):
        name = f"{cls}.nvidia.com"
        if get("deviceclass", name, None) is None:
            dc = load(f"driver/deviceclass-{name}.json")
            kubectl("create", "-f", "-", body={k: dc[k] for k in ("apiVersion", "kind", "spec")}
                    | {"metadata": {"name": name}})
    fixture = {n["metadata"]["name"]: n for n in load("driver/nodes.json")["items"]}
    for src, name in NODES.items():
        node = fixture[src]
        kubectl("create", "-f", "-", body={"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {**node["metadata"]["labels"], "kubernetes.io/hostname": name}}})
        kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": {
            "capacity": node["status"]["capacity"], "allocatable": node["status"]["allocatable"],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Live",
                            "lastHeartbeatTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]}}))
        # the apiserver taints a new Node not-ready; no node lifecycle controller runs here to lift it
        kubectl("patch", "node", name, "--type=merge", "-p", '{"spec": {"taints": null}}')
        sl = copy.deepcopy(load(f"driver/resourceslice-{src}.json"))
        sl["metadata"] = {"name": f"{name}-gpu.nvidia.com"}
        sl["spec"]["nodeName"] = name
        sl["spec"]["pool"]["name"] = name
        kubectl("create", "-f", "-", body=sl)
    for name, (cls, count, cel) in TEMPLATES.items():
        ex: Obj = {"deviceClassName": cls, "allocationMode": "ExactCount", "count": count}
        if cel:
            ex["selectors"] = [{"cel": {"expression": cel}}]
        kubectl("create", "-f", "-", body={
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": ex}]}}}})


TEMPLATES = {"one-gpu": ("gpu.nvidia.com", 1, ""), "four-gpu": ("gpu.nvidia.com", 4, ""),
             "mig-1g": ("mig.nvidia.com", 1, "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'")}
# per mode: (pod, template, schedulerName, pod group), in the order they are made; a pod whose name starts with
# x must be refused by gpupack's filter (it stays pending with gpupack's reason)
PODS = {
    "observe": [("p1", "one-gpu", SCHED, ""), ("p2", "one-gpu", SCHED, "")],
    "allocate": [("p1", "one-gpu", SCHED, ""), ("p2", "one-gpu", SCHED, ""),
                 ("g0", "four-gpu", SCHED, "job"), ("g1", "four-gpu", SCHED, "job")],
    # GPUPACK_DRA_ALLOCATE_CLASSES=gpu.nvidia.com, GPUPACK_DRA_ALLOCATE_PROFILES=gpupack-allocate
    "per-class": [("p1", "one-gpu", "gpupack-allocate", ""), ("m1", "mig-1g", SCHED, ""),
                  ("x1", "one-gpu", SCHED, "")],
}


def pod(name: str, template: str = "one-gpu", sched: str = SCHED, group: str = "") -> Obj:
    ann = {"gpupack.io/pod-group": group, "gpupack.io/pod-group-min": "2"} if group else {}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "annotations": ann},
            "spec": {"schedulerName": sched, "terminationGracePeriodSeconds": 0,
                     "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"claims": [{"name": "gpu"}]}}]}}


def claim_of(p: Obj) -> str:
    for s in (p.get("status") or {}).get("resourceClaimStatuses") or []:
        if s.get("name") == "gpu" and s.get("resourceClaimName"):
            return str(s["resourceClaimName"])
    return ""


def serve(mode: str) -> tuple[Any, uvicorn.Server]:
    import os

    extra = {"dra_allocate_classes": "gpu.nvidia.com", "dra_allocate_profiles": "gpupack-allocate"} \
        if mode == "per-class" else {}
    app = create_app(Settings(kubeconfig=Path(os.environ["KUBECONFIG"]), dra_mode="observe" if mode == "observe"
                              else "allocate", **extra))
    @app.middleware("http")
    async def record(request: Any, call_next: Any) -> Any:  # gpupack's prioritize answers, per pod
        if not request.url.path.endswith("/prioritize"):
            return await call_next(request)
        pod_name = json.loads(await request.body()).get("Pod", {}).get("metadata", {}).get("name", "")
        resp = await call_next(request)
        body = b"".join([c async for c in resp.body_iterator])
        SCORES[pod_name] = {h["Host"]: h["Score"] for h in json.loads(body) or []}
        return Response(body, status_code=resp.status_code, media_type="application/json")

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    return app, server


def metric(name: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as r:
        text = r.read().decode()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def run(mode: str) -> None:
    app, server = serve(mode)
    try:
        _run(mode, app)
    finally:
        server.should_exit = True


def _run(mode: str, app: Any) -> None:
    state, dra = app.state.gpupack.state, app.state.dra
    check(until(lambda: state.ready and all(n in dra.inventories for n in NODES.values())),
          f"gpupack ({mode} mode) listed the cluster and read both nodes' slices")

    def claim_keys() -> dict[str, Any]:
        return {k: p for k, p in state.ledger.recorded().items() if k.startswith("claim:")}

    bound: dict[str, str] = {}
    claims: dict[str, str] = {}
    made: set[str] = set()
    for name, template, sched, group in PODS[mode]:
        # one pod after the other (so the second single pod sees the first), a pod group's members all at once
        for other in PODS[mode]:
            if other[0] not in made and (other[0] == name or (group and other[3] == group)):
                kubectl("create", "-f", "-", body=pod(*other))
                made.add(other[0])
        count = TEMPLATES[template][1]
        what = f"pod {name} ({template} claim, profile {sched}{', pod group ' + group if group else ''})"
        print(what + ":", flush=True)
        if name.startswith("x"):
            ok = until(lambda n=name: "gpupack" in _unschedulable(n), 30)  # type: ignore[misc]
            print("    PodScheduled:", _unschedulable(name), flush=True)
            p = get("pod", name) or {}
            c = get("resourceclaim", claim_of(p)) or {}
            check(ok and not p["spec"].get("nodeName") and not (c.get("status") or {}).get("allocation"),
                  "refused by gpupack's filter with the reason, nothing allocated")
            claims[name] = claim_of(p)
            continue
        ok = until(lambda n=name: bool((get("pod", n) or {}).get("spec", {}).get("nodeName")))  # type: ignore[misc]
        p = get("pod", name) or {}
        node = str(p.get("spec", {}).get("nodeName") or "")
        bound[name], claims[name] = node, claim_of(p)
        check(ok and node in NODES.values(), f"bound to {node or 'nothing'} by kube-scheduler with gpupack's bind")
        c = get("resourceclaim", claims[name]) or {}
        st = c.get("status") or {}
        print("    claim", claims[name], "status:", json.dumps(st), flush=True)
        print("    finalizers:", c.get("metadata", {}).get("finalizers"), flush=True)
        results = ((st.get("allocation") or {}).get("devices") or {}).get("results") or []
        check(len(results) == count and all(r["pool"] == node for r in results),
              f"claim allocated on {node}: {[r['device'] for r in results]}")
        check(bool((st.get("allocation") or {}).get("allocationTimestamp")), "allocationTimestamp set")
        check(st.get("reservedFor") == [{"resource": "pods", "name": name, "uid": p["metadata"]["uid"]}],
              "reservedFor the pod")
        check(c.get("metadata", {}).get("finalizers") == ["resource.kubernetes.io/delete-protection"],
              "delete-protection finalizer")
        uid = c.get("metadata", {}).get("uid", "?")
        ok = until(lambda u=uid: any(k.startswith(f"claim:{u}:") for k in claim_keys()), 15)  # type: ignore[misc]
        mine = [p for k, p in claim_keys().items() if k.startswith(f"claim:{uid}:")]
        check(ok and all(m.node == node for m in mine) and sum(len(m.gpus) + len(m.mig) for m in mine) == count,
              f"gpupack's ledger books the claim's devices: "
              f"{[(m.node, m.gpus, [s.profile for s in m.mig]) for m in mine]}")
        check("gpupack.io/devices" not in (p["metadata"].get("annotations") or {}), "no gpupack.io/devices: "
              "the claim is the record")
    grouped = {p[0] for p in PODS[mode] if p[3]}  # their node is the group's plan (filter pins them to it)
    for name, node in bound.items():  # gpupack's packing chose the node, among those DRA left
        if name in grouped or name not in SCORES:
            continue
        top = max(SCORES[name].values())
        check(SCORES[name].get(node) == top and len(set(SCORES[name].values())) > 1,
              f"{name} bound to {node}, a node gpupack's prioritize scored highest ({SCORES.get(name)})")
    held = [(r["pool"], r["device"]) for c in claims.values()
            for r in ((((get("resourceclaim", c) or {}).get("status") or {}).get("allocation") or {}).get("devices")
                      or {}).get("results") or []]
    check(len(held) == len(set(held)), f"no device in two claims ({len(held)} held)")
    binds = metric("gpupack_binds_total")
    print("   ", binds, flush=True)
    n = len(bound)
    check(f'result="ok"}} {n}.0' in binds, f"all {n} binds went through gpupack's extender")
    print("    deleting the pods (kube-controller-manager's resourceclaim controller runs):", flush=True)
    for name, *_ in PODS[mode]:
        kubectl("delete", "pod", name, "-n", NS, "--grace-period=0", "--force", "--wait=false", check=False)
    gone = until(lambda: all(get("resourceclaim", c) is None for c in claims.values()), 60)
    check(gone, f"the controller deallocated and the garbage collector deleted the claims {sorted(claims.values())}")
    check(until(lambda: not claim_keys(), 15), f"gpupack's ledger freed the devices (claim bookings left: "
                                               f"{claim_keys()})")


def _unschedulable(name: str) -> str:
    for c in ((get("pod", name) or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return str(c.get("message") or "")
    return ""


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "config" and sys.argv[2] in PODS:
        profiles = PROFILE.format(name=SCHED, plugins=DISABLED if sys.argv[2] == "allocate" else "")
        if sys.argv[2] == "per-class":  # DynamicResources stays in gpupack-scheduler, off in gpupack-allocate
            profiles += PROFILE.format(name="gpupack-allocate", plugins=DISABLED)
        print(CONFIG.replace("{profiles}", profiles).replace("{port}", str(PORT)), end="")
        return 0
    if len(sys.argv) != 3 or sys.argv[1] != "run" or sys.argv[2] not in PODS:
        print(__doc__)
        return 2
    print(f"== DRA {sys.argv[2]} mode, {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}, kube-apiserver "
          f"{json.loads(kubectl('version', '-o', 'json')).get('serverVersion', {}).get('gitVersion')}", flush=True)
    setup()
    run(sys.argv[2])
    print("E2E PASSED" if not failures else f"E2E FAILED: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
