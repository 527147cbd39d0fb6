"""DRA allocate mode on a real kube-apiserver (not part of CI: it needs a control plane).

    KUBECONFIG=/tmp/verify/pki/admin.kubeconfig python tests/e2e/dra_allocate_live.py

On the cluster the kubeconfig names, in its own namespace and under names of its own (so a control plane shared
with others is left as it was): the NVIDIA chart's DeviceClasses (if absent), one Node (tainted NoSchedule, so no
other scheduler places pods there) with the fixture H100 ResourceSlice (6 GPUs on their own PCIe roots, 7 MIG
devices), claims and pods that no scheduler serves (schedulerName gpupack-alloc-demo). gpupack's extender runs
in-process in live mode with GPUPACK_DRA_MODE=allocate; the script posts filter and bind as kube-scheduler would,
then reads back what the apiserver stored and checks it field by field. Everything it made is deleted at the
end (KEEP=1 leaves it). The last line is E2E PASSED or E2E FAILED; the exit code matches.

gpupack runs as a ServiceAccount holding exactly the ClusterRoles of manifests/overlays/dra-allocate (renamed
gpupack-alloc-demo-*), not as admin; first with the dra-allocate role cut down to `update resourceclaims` (no
`resourceclaims/binding`): that bind must fail with the apiserver's 422 and leave the claim as it was.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from scheduler.extender.app import create_app
from scheduler.settings import Settings

DRA = Path(__file__).resolve().parents[1] / "data" / "dra"
NS, NODE, SCHED = "gpupack-alloc-demo", "gpupack-alloc-demo-h100", "gpupack-alloc-demo"
REPO = Path(__file__).resolve().parents[2]
FINALIZER = "resource.kubernetes.io/delete-protection"
Obj = dict[str, Any]
failures: list[str] = []


def kubectl(*args: str, body: Obj | None = None, check: bool = True) -> str:
    if args[0] in ("create", "replace") and "--raw" not in args and args[1:2] != ("token",):
        args = (args[0], "--validate=false", *args[1:])  # the apiserver validates; no openapi download needed
    res = subprocess.run(["kubectl", *args], input=json.dumps(body) if body else None, capture_output=True,
                         text=True, timeout=60)
    if check and res.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {res.stderr}")
    return res.stdout


def get(kind: str, name: str, ns: str | None = NS) -> Obj:
    out: Obj = json.loads(kubectl("get", kind, name, "-o", "json", *(["-n", ns] if ns else [])))
    return out


def check(ok: bool, what: str) -> None:
    print(("  ok   " if ok else "  FAIL ") + what)
    if not ok:
        failures.append(what)


def load(rel: str) -> Obj:
    doc: Obj = json.loads((DRA / rel).read_text())
    return doc


def claim(name: str, requests: list[Obj], constraints: list[Obj] | None = None) -> Obj:
    devices: Obj = {"requests": requests}
    if constraints:
        devices["constraints"] = constraints
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": NS}, "spec": {"devices": devices}}


def req(name: str, cls: str, count: int = 1, cel: str = "") -> Obj:
    ex: Obj = {"deviceClassName": cls, "allocationMode": "ExactCount", "count": count}
    if cel:
        ex["selectors"] = [{"cel": {"expression": cel}}]
    return {"name": name, "exactly": ex}


def pod(name: str, claim_name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"schedulerName": SCHED, "terminationGracePeriodSeconds": 0,
                     "resourceClaims": [{"name": "gpu", "resourceClaimName": claim_name}],
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"claims": [{"name": "gpu"}]}}]}}


CLAIMS = {
    "one-gpu": claim("one-gpu", [req("gpu", "gpu.nvidia.com")]),
    "h100-cel": claim("h100-cel", [req("gpu", "gpu.nvidia.com", cel="device.attributes['gpu.nvidia.com']"
                                                                     ".productName == 'NVIDIA H100 80GB HBM3' && "
                                                                     "device.capacity['gpu.nvidia.com'].memory"
                                                                     ".compareTo(quantity('79Gi')) >= 0")]),
    "mig-1g": claim("mig-1g", [req("mig", "mig.nvidia.com", cel="device.attributes['gpu.nvidia.com'].profile == "
                                                                 "'1g.10gb'")]),
    "two-same-root": claim("two-same-root", [req("gpus", "gpu.nvidia.com", 2)],
                           [{"requests": ["gpus"], "matchAttribute": "resource.kubernetes.io/pcieRoot"}]),
    "race-a": claim("race-a", [req("gpus", "gpu.nvidia.com", 3)]),
    "race-b": claim("race-b", [req("gpus", "gpu.nvidia.com", 3)]),
    "unknown-class": claim("unknown-class", [req("gpu", "example.com-gpu")]),
}


def setup(made: list[str]) -> None:
    kubectl("create", "namespace", NS, check=False)
    # no kube-controller-manager may run here: the namespace's default ServiceAccount is ours to make
    kubectl("create", "serviceaccount", "default", "-n", NS, check=False)
    for cls in ("gpu", "mig"):
        name = f"{cls}.nvidia.com"
        if not kubectl("get", "deviceclass", name, "--ignore-not-found", "-o", "name").strip():
            dc = load(f"driver/deviceclass-{name}.json")
            kubectl("create", "-f", "-", body={k: dc[k] for k in ("apiVersion", "kind", "spec")}
                    | {"metadata": {"name": name}})
            made.append(name)
    node = next(n for n in load("driver/nodes.json")["items"] if n["metadata"]["name"] == "dra-h100-node")
    kubectl("create", "-f", "-", body={"apiVersion": "v1", "kind": "Node",
                                       "metadata": {"name": NODE, "labels": {**node["metadata"]["labels"],
                                                                             "kubernetes.io/hostname": NODE}},
                                       "spec": {"taints": [{"key": "gpupack.io/alloc-demo", "effect": "NoSchedule"}]}})
    kubectl("patch", "node", NODE, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"capacity": node["status"]["capacity"],
                                   "allocatable": node["status"]["allocatable"],
                                   "conditions": [{"type": "Ready", "status": "True", "reason": "Demo",
                                                   "lastHeartbeatTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())}]}}))
    sl = copy.deepcopy(load("driver/resourceslice-dra-h100-node.json"))
    sl["metadata"] = {"name": f"{NODE}-gpu.nvidia.com"}
    sl["spec"]["nodeName"] = NODE
    sl["spec"]["pool"]["name"] = NODE
    kubectl("create", "-f", "-", body=sl)
    for c in CLAIMS.values():
        kubectl("create", "-f", "-", body=c, check=False)
    for n in CLAIMS:
        kubectl("create", "-f", "-", body=pod(f"p-{n}", n), check=False)


def rbac(full: bool) -> None:
    """The overlay's ClusterRoles for gpupack's ServiceAccount, renamed; `full` False: no resourceclaims/binding."""
    objs = [o for o in map(json.loads, [json.dumps(d) for d in __import__("yaml").safe_load_all(
        kubectl("kustomize", str(REPO / "manifests/overlays/dra-allocate"))) if d])
            if o["kind"] == "ClusterRole" and o["metadata"]["name"] in ("gpupack-scheduler", "gpupack-dra-allocate")]
    for role in objs:
        name = f"{NS}-{role['metadata']['name']}"
        if role["metadata"]["name"] == "gpupack-dra-allocate" and not full:
            role["rules"] = [{"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["update"]}]
        role["metadata"] = {"name": name}
        kubectl("delete", "clusterrole", name, "--ignore-not-found")
        kubectl("create", "-f", "-", body=role)
        kubectl("create", "clusterrolebinding", name, f"--clusterrole={name}",
                f"--serviceaccount={NS}:gpupack-scheduler", check=False)
    time.sleep(2)  # the authorizer's informers


def sa_kubeconfig() -> str:
    kubectl("create", "serviceaccount", "gpupack-scheduler", "-n", NS, check=False)
    token = kubectl("create", "token", "gpupack-scheduler", "-n", NS, "--duration=1h").strip()
    cfg = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cfg["users"] = [{"name": "gpupack", "user": {"token": token}}]
    cfg["contexts"][0]["context"]["user"] = "gpupack"
    path = Path(f"/tmp/{NS}.kubeconfig")
    path.write_text(json.dumps(cfg))
    return str(path)


def teardown(classes: list[str]) -> None:
    Path(f"/tmp/{NS}.kubeconfig").unlink(missing_ok=True)  # it holds the ServiceAccount's token
    for role in ("gpupack-scheduler", "gpupack-dra-allocate"):
        kubectl("delete", "clusterrolebinding,clusterrole", f"{NS}-{role}", "--ignore-not-found", check=False)
    # no kube-controller-manager may run here: free the claims ourselves (status, then the finalizer), delete
    # what the namespace holds and finalize it (no namespace controller either); pods have no kubelet: force
    kubectl("delete", "pods", "--all", "-n", NS, "--grace-period=0", "--force", check=False)
    for n in CLAIMS:
        try:
            c = get("resourceclaim", n)
        except RuntimeError:
            continue
        if c.get("status"):
            c["status"] = {}
            kubectl("replace", "--subresource=status", "-f", "-", body=c, check=False)
        kubectl("patch", "resourceclaim", n, "-n", NS, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                check=False)
    kubectl("delete", "resourceclaims,serviceaccounts", "--all", "-n", NS, check=False)
    kubectl("delete", "namespace", NS, "--wait=false", check=False)
    try:
        ns = get("namespace", NS, None)
        ns["spec"]["finalizers"] = []
        kubectl("replace", "--raw", f"/api/v1/namespaces/{NS}/finalize", "-f", "-", body=ns, check=False)
    except RuntimeError:
        pass
    kubectl("delete", "resourceslice", f"{NODE}-gpu.nvidia.com", check=False)
    kubectl("delete", "node", NODE, check=False)
    for name in classes:
        kubectl("delete", "deviceclass", name, check=False)


def main() -> int:
    classes: list[str] = []
    try:
        setup(classes)
        rbac(full=False)
        run(sa_kubeconfig())
    finally:
        if not os.environ.get("KEEP"):
            teardown(classes)
    print("E2E PASSED" if not failures else f"E2E FAILED: {failures}")
    return 0 if not failures else 1


def run(kubeconfig: str) -> None:
    app = create_app(Settings(kubeconfig=Path(kubeconfig), dra_mode="allocate"))
    state = app.state.gpupack.state
    dra = app.state.dra
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while not (state.ready and NODE in dra.inventories and
                   all(dra.claim(NS, n) is not None for n in CLAIMS)) and time.monotonic() < deadline:
            time.sleep(0.2)
        check(state.ready and NODE in dra.inventories, f"gpupack listed the cluster and read {NODE}'s slice")

        def filter_bind(name: str) -> tuple[Obj, Obj]:
            p = get("pod", f"p-{name}")
            f = client.post("/filter", json={"Pod": p, "NodeNames": [NODE]}).json()
            if not f.get("NodeNames"):
                return f, {}
            m = p["metadata"]
            b = client.post("/bind", json={"PodName": m["name"], "PodNamespace": NS, "PodUID": m["uid"],
                                           "Node": NODE}).json()
            return f, b

        print("pod p-one-gpu, gpupack without update on resourceclaims/binding:")
        f, b = filter_bind("one-gpu")
        print("    bind:", b.get("Error"))
        c = get("resourceclaim", "one-gpu")
        check("resourceclaims/binding" in b.get("Error", "") and not c.get("status")
              and not c["metadata"].get("finalizers"), "refused by the apiserver (422), claim left as it was")
        rbac(full=True)
        for name in ("one-gpu", "h100-cel", "mig-1g"):
            print(f"pod p-{name}:")
            f, b = filter_bind(name)
            check(f.get("NodeNames") == [NODE] and b == {"Error": ""},
                  f"filter passes {NODE} {f.get('FailedNodes') or ''}, bind answers {b}")
            c, p = get("resourceclaim", name), get("pod", f"p-{name}")
            st = c.get("status") or {}
            alloc = st.get("allocation") or {}
            print("    stored status:", json.dumps(st))
            check(c["metadata"].get("finalizers") == [FINALIZER], f"finalizer {c['metadata'].get('finalizers')}")
            check(set(alloc) == {"devices", "nodeSelector", "allocationTimestamp"}, "allocation fields as V17")
            check(bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alloc.get("allocationTimestamp", ""))),
                  "allocationTimestamp RFC3339 seconds")
            results = (alloc.get("devices") or {}).get("results") or []
            check(len(results) == 1 and set(results[0]) == {"request", "driver", "pool", "device"}
                  and results[0]["pool"] == NODE, f"results {results}")
            check(alloc.get("nodeSelector", {}).get("nodeSelectorTerms", [{}])[0].get("matchFields") ==
                  [{"key": "metadata.name", "operator": "In", "values": [NODE]}], "nodeSelector names the node")
            check(st.get("reservedFor") == [{"resource": "pods", "name": f"p-{name}", "uid": p["metadata"]["uid"]}],
                  "reservedFor the pod")
            check(p["spec"].get("nodeName") == NODE, f"pod bound to {p['spec'].get('nodeName')}")
        mig = get("resourceclaim", "mig-1g")["status"]["allocation"]["devices"]["results"][0]["device"]
        check("-mig-1g10gb-" in mig, f"the MIG claim got a 1g.10gb device ({mig})")

        print("pod p-two-same-root (2 GPUs on one PCIe root; each H100 GPU has its own):")
        f, b = filter_bind("two-same-root")
        why = (f.get("FailedNodes") or {}).get(NODE, "")
        print("    filter:", why)
        check(not f.get("NodeNames") and "constraints" in why, "refused with the reason")
        check(not get("resourceclaim", "two-same-root").get("status"), "its claim untouched")

        print("pod p-unknown-class:")
        f, b = filter_bind("unknown-class")
        why = (f.get("FailedAndUnresolvableNodes") or {}).get(NODE, "")
        print("    filter:", why)
        check("not one gpupack allocates" in why, "refused, unresolvable, with the reason")

        print("pods p-race-a and p-race-b (3 GPUs each, 4 free), bound at once:")
        pods = {n: get("pod", f"p-{n}") for n in ("race-a", "race-b")}
        for n in pods:
            client.post("/filter", json={"Pod": pods[n], "NodeNames": [NODE]})

        def bind(n: str) -> Obj:
            m = pods[n]["metadata"]
            out: Obj = client.post("/bind", json={"PodName": m["name"], "PodNamespace": NS, "PodUID": m["uid"],
                                                  "Node": NODE}).json()
            return out

        with ThreadPoolExecutor(2) as ex:
            answers = dict(zip(pods, ex.map(bind, pods), strict=True))
        print("    answers:", answers)
        check(sorted(bool(a["Error"]) for a in answers.values()) == [False, True], "exactly one of them bound")
        held = [(r["pool"], r["device"]) for n in CLAIMS
                for r in (((get("resourceclaim", n).get("status") or {}).get("allocation") or {}).get("devices")
                          or {}).get("results") or []]
        print("    devices held by claims:", sorted(held))
        check(len(held) == len(set(held)) == 6, "6 devices held, none twice")


if __name__ == "__main__":
    sys.exit(main())
