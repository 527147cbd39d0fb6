#!/usr/bin/env bash
# gpupack's device hand-off end to end, with a real kubelet v1.36 and containerd v2.3 (CDI on) on a
# GPU-less machine. Not part of CI (it needs root, a built kubelet-lab and a built control plane).
#
#   KUBELET_LAB=/path/to/kubelet-lab/lab.sh bash tests/e2e/kubelet_lab.sh
#
# Inputs (environment):
#   KUBELET_LAB   kubelet-lab's lab.sh (builds/runs kubelet + containerd + runc in a private mount namespace)
#   LAB_DIR       the lab's folder (default ${TMPDIR:-/tmp}/kubelet-lab, built with `lab.sh build`)
#   VERIFY_DIR    a control plane built by the control-plane tool's rebuild.sh (default ${TMPDIR:-/tmp}/verify)
#   BOARD         the fake NVML board the agent reads (default dgx1-v100: 8 GPUs)
#   PYTHON        a Python with gpupack installed (default python3); KEEP=1 leaves everything running
#
# What it shows, and checks (the last line is E2E PASSED or E2E FAILED; the exit code matches):
#   1. gpupack's agent (fake board, `--handoff cdi-cri`) registers with kubelet as the device plugin of
#      nvidia.com/gpu and gpupack.io/gpu-share; the Node's allocatable shows them.
#   2. gpupack's extender (live mode on the control plane) binds pods: it books devices, writes the
#      record gpupack.io/devices and the Binding.
#   3. kubelet admits each pod through the agent's Allocate, containerd injects the CDI devices of a
#      fake CDI spec (each device adds an env var and a file mount): every container shows exactly the
#      devices its record names, and kubelet's PodResources reports the same IDs.
#   4. A pod whose record names a GPU the node lacks fails admission with gpupack's message.
#   5. Whether a pod-level cdi.k8s.io/* annotation reaches containerd's CDI injection (reported).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
LAB_SH=${KUBELET_LAB:?set KUBELET_LAB to the kubelet-lab lab.sh}
L=${LAB_DIR:-${TMPDIR:-/tmp}/kubelet-lab}
VERIFY_DIR=${VERIFY_DIR:-${TMPDIR:-/tmp}/verify}
BOARD=${BOARD:-dgx1-v100}
PY=${PYTHON:-python3}
KC=$VERIFY_DIR/pki/admin.kubeconfig
OUT=$L/gpupack-e2e
NS=kubelet-lab
PORT=18888
export LAB_DIR=$L VERIFY_DIR
mkdir -p "$OUT"
log() { echo "[e2e $(date +%H:%M:%S)] $*"; }
k() { kubectl --kubeconfig "$KC" "$@"; }
gp() { (cd "$REPO" && "$PY" -c 'from scheduler.cli import main; main()' "$@"); }
cp_up() { curl -sk -m 3 -o /dev/null https://127.0.0.1:6443/healthz; }
# the log of the pod's current incarnation (by UID: an earlier run's pod of the same name leaves its own folder)
podlog() {
  local uid; uid=$(kubectl --kubeconfig "$KC" -n "$NS" get pod "$1" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)
  cat "$L"/ovl/var/upper/log/pods/${NS}_$1_${uid:-none}/$2/0.log 2>/dev/null | sed 's/^[^ ]* [^ ]* [^ ]* //' || true
}
FAILED=0
check() { if eval "$2"; then log "ok: $1"; else log "FAILED: $1"; FAILED=1; fi; }

cleanup() {
  [ "${KEEP:-}" = 1 ] && { log "KEEP=1: agent, extender, lab and control plane left running"; return; }
  for p in agent serve; do [ -s "$OUT/$p.pid" ] && kill "$(cat "$OUT/$p.pid")" 2>/dev/null || true; done
  k -n $NS delete pod -l gpupack-e2e=1 --grace-period=0 --force --ignore-not-found >/dev/null 2>&1 || true
  bash "$LAB_SH" down >/dev/null 2>&1 || true
  [ -e "$OUT/started-cp" ] && bash "$VERIFY_DIR/stop-control-plane.sh" >/dev/null 2>&1 || true
  rm -f "$OUT/started-cp"
}
trap cleanup EXIT

# --- 0. control plane, fake CDI spec, lab in API mode --------------------------------------------------------
if ! cp_up; then
  log "control plane: start (no kube-scheduler: gpupack's extender binds)"
  bash "$VERIFY_DIR/start-control-plane.sh" -C -N >/dev/null; touch "$OUT/started-cp"
fi
log "fake CDI spec for the $BOARD board's GPU UUIDs in $L/cdi (each device: an env var and a mounted file)"
mkdir -p "$L/cdi" "$L/fakegpu"
(cd "$REPO" && "$PY" - "$BOARD" "$L" <<'EOF'
import sys, yaml
from scheduler.agent.discover import discover
from scheduler.agent.fake_nvml import board
b, lab = sys.argv[1], sys.argv[2]
devices = []
for g in discover(board(b)).gpus:
    path = f"{lab}/fakegpu/nvidia-{g.uuid}.txt"
    open(path, "w").write(f"fake NVIDIA GPU {g.index} {g.uuid}\n")
    devices.append({"name": g.uuid, "containerEdits": {
        "env": [f"FAKE_NVIDIA_GPU_{g.index}={g.uuid}"],
        "mounts": [{"hostPath": path, "containerPath": f"/fake-nvidia/{g.uuid}.txt", "options": ["ro", "bind"]}]}})
spec = {"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": devices,
        "containerEdits": {"env": ["FAKE_NVIDIA_SPEC=applied", "NVIDIA_VISIBLE_DEVICES=void"]}}
open(f"{lab}/cdi/nvidia-fake.yaml", "w").write(yaml.safe_dump(spec, sort_keys=False))
EOF
)
log "kubelet-lab in API mode (its own example.com/gpu plugin and test pod run too)"
LAB_API_OK=1 bash "$LAB_SH" api > "$OUT/lab-api.log" 2>&1 || { tail -20 "$OUT/lab-api.log"; log "lab api failed"; }
grep -E "API TEST (PASSED|FAILED)" "$OUT/lab-api.log" | tail -1

# --- 1. the agent registers as the device plugin --------------------------------------------------------------
log "gpupack agent --fake $BOARD as kubelet's device plugin (plugin dir $L/kubelet/device-plugins)"
(KUBECONFIG=$KC NODE_NAME=kubelet-lab setsid bash -c "cd '$REPO' && exec '$PY' -c 'from scheduler.cli import main; main()' \
   agent --fake $BOARD --interval 5 --health-interval 2 --reconcile-interval 3 --share-slots 4 \
   --plugin-dir '$L/kubelet/device-plugins' --pod-resources '$L/kubelet/pod-resources/kubelet.sock' --cdi-dir '$L/cdi'" \
   > "$OUT/agent.log" 2>&1 & echo $! > "$OUT/agent.pid")
alloc=""
for _ in $(seq 60); do
  alloc=$(k get node kubelet-lab -o jsonpath='{.status.allocatable.nvidia\.com/gpu}' 2>/dev/null || true)
  [ "$alloc" = 8 ] && break; sleep 1
done
k get node kubelet-lab -o jsonpath='  allocatable={.status.allocatable}{"\n"}'
check "kubelet's Node shows the agent's 8 nvidia.com/gpu" '[ "$alloc" = 8 ]'
grep -E "registered|CDI" "$OUT/agent.log" | sed 's/^/    /' | head -8

# --- 2. the extender books and binds ---------------------------------------------------------------------------
log "gpupack serve --kubeconfig (live mode) on 127.0.0.1:$PORT"
(setsid bash -c "cd '$REPO' && exec '$PY' -c 'from scheduler.cli import main; main()' serve --kubeconfig '$KC' --port $PORT" \
   > "$OUT/serve.log" 2>&1 & echo $! > "$OUT/serve.pid")
for _ in $(seq 60); do curl -sf -m 2 "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 1; done
pod_yaml() {  # NAME RESOURCES_JSON ANNOTATIONS_JSON NODE
  cat <<EOF
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "$1", "namespace": "$NS", "labels": {"gpupack-e2e": "1"},
 "annotations": $3},
 "spec": {"schedulerName": "gpupack-scheduler", "automountServiceAccountToken": false, "hostNetwork": true,
  "restartPolicy": "Never", "tolerations": [{"operator": "Exists"}], $4
  "containers": [{"name": "main", "image": "registry.local/lab/busybox:1.0", "imagePullPolicy": "Never",
   "command": ["/bin/sh", "-c", "env | grep -E '^(FAKE_NVIDIA|GPUPACK|CUDA_MPS|NVIDIA_VISIBLE)' | sort; cat /fake-nvidia/* 2>/dev/null; while true; do sleep 3600; done"],
   "resources": {"limits": $2, "requests": $2}}]}}
EOF
}
k -n $NS delete pod -l gpupack-e2e=1 --grace-period=0 --force --ignore-not-found >/dev/null 2>&1 || true
pod_yaml e2e-whole2 '{"nvidia.com/gpu": "2"}' '{}' '' | k apply --validate=false -f - >/dev/null
pod_yaml e2e-nvlink4 '{"nvidia.com/gpu": "4"}' '{"gpupack.io/topology": "nvlink"}' '' | k apply --validate=false -f - >/dev/null
# a share pod as the webhook leaves it: its share resources and one gpupack.io/gpu-share slot
pod_yaml e2e-share '{"gpupack.io/gpu-memory": "4000", "gpupack.io/gpu-compute": "25", "gpupack.io/gpu-share": "1"}' '{}' '' \
  | k apply --validate=false -f - >/dev/null
for p in e2e-whole2 e2e-nvlink4 e2e-share; do
  uid=$(k -n $NS get pod $p -o jsonpath='{.metadata.uid}')
  ans=""
  for _ in $(seq 30); do
    ans=$(curl -s -m 10 -XPOST "http://127.0.0.1:$PORT/bind" -H 'Content-Type: application/json' \
      -d "{\"PodName\": \"$p\", \"PodNamespace\": \"$NS\", \"PodUID\": \"$uid\", \"Node\": \"kubelet-lab\"}" || true)
    [ "$ans" = '{"Error":""}' ] && break; sleep 1
  done
  check "extender bound $p ($ans)" '[ "$ans" = "{\"Error\":\"\"}" ]'
done

# --- 4. a forged record and 5. a CDI annotation, created bound (nodeName) ------------------------------------------
forged='{"gpupack.io/devices": "{\"v\":1,\"node\":\"kubelet-lab\",\"kind\":\"whole\",\"gpus\":[0],\"containers\":{\"main\":{\"devices\":[\"GPU-deadbeef-0000-4000-8000-000000000000\"]}}}"}'
pod_yaml e2e-forged '{"nvidia.com/gpu": "1"}' "$forged" '"nodeName": "kubelet-lab",' | k apply --validate=false -f - >/dev/null
last=$(cd "$REPO" && "$PY" -c "from scheduler.agent.discover import discover; from scheduler.agent.fake_nvml import board; print(discover(board('$BOARD')).gpus[-1].uuid)")
pod_yaml e2e-cdi-annotation '{}' "{\"cdi.k8s.io/e2e\": \"nvidia.com/gpu=$last\"}" '"nodeName": "kubelet-lab",' \
  | k apply --validate=false -f - >/dev/null

log "waiting for the pods to run (or fail admission)"
for _ in $(seq 90); do
  phases=$(k -n $NS get pod -l gpupack-e2e=1 -o jsonpath='{range .items[*]}{.status.phase} {end}')
  [[ "$phases" != *Pending* ]] && [ -n "$phases" ] && break; sleep 1
done
k -n $NS get pod -l gpupack-e2e=1 -o wide | sed 's/^/    /'
for _ in $(seq 20); do podlog e2e-share main | grep -q FAKE_NVIDIA && break; sleep 1; done

# --- 3. record == container == PodResources ----------------------------------------------------------------------
"$PY" -c "
import sys; sys.path.insert(0, '$REPO')
from scheduler.agent.podresources import list_allocated
import orjson
a = list_allocated('$L/kubelet/pod-resources/kubelet.sock')
print(orjson.dumps({'/'.join(k): v for k, v in a.items() if k[0] == '$NS'}).decode())" > "$OUT/podresources.json"
for p in e2e-whole2 e2e-nvlink4 e2e-share; do
  rec=$(k -n $NS get pod $p -o jsonpath='{.metadata.annotations.gpupack\.io/devices}')
  booked=$("$PY" -c "import json,sys; print(' '.join(sorted(json.loads(sys.argv[1])['containers']['main']['devices'])))" "$rec")
  seen=$(podlog $p main | sed -n 's/^FAKE_NVIDIA_GPU_[0-9]*=//p' | sort | tr '\n' ' ' | sed 's/ $//')
  kubelet=$("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])).get('$NS/$p/main', {}); print(' '.join(sorted({i.split('::')[0] for ids in d.values() for i in ids})))" "$OUT/podresources.json")
  echo "  $p: phase=$(k -n $NS get pod $p -o jsonpath='{.status.phase}')"
  echo "    record (gpupack.io/devices): $booked"
  echo "    container (CDI edits seen):  $seen"
  echo "    kubelet PodResources:        $kubelet"
  echo "    container log:"; podlog $p main | sed 's/^/      /'
  check "$p: the container sees exactly the booked devices" '[ -n "$booked" ] && [ "$booked" = "$seen" ]'
  check "$p: kubelet's PodResources names the same devices" '[ "$booked" = "$kubelet" ]'
done
reason=$(k -n $NS get pod e2e-forged -o jsonpath='{.status.reason}: {.status.message}')
echo "  e2e-forged: $reason"
check "a record naming a GPU the node lacks fails admission with gpupack's message" \
  '[[ "$reason" == *"gpupack:"* && "$reason" == *"GPU-deadbeef"* ]]'
if podlog e2e-cdi-annotation main | grep -q FAKE_NVIDIA_GPU; then
  log "REPORT: a pod-level cdi.k8s.io/* annotation DOES reach containerd's CDI injection (the webhook refuses it)"
else
  log "REPORT: a pod-level cdi.k8s.io/* annotation does not reach containerd's CDI injection (the webhook refuses it anyway)"
fi
echo "  agent log (Allocate and registration):"; grep -E "registered|Allocate|refused|corrected" "$OUT/agent.log" | tail -8 | sed 's/^/    /'
if [ $FAILED = 0 ]; then log "E2E PASSED"; else log "E2E FAILED"; exit 1; fi
