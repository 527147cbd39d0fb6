#!/usr/bin/env bash
# DRA observe and allocate mode on a real control plane (not CI): for each mode, start etcd, kube-apiserver,
# kube-scheduler (tests/e2e/dra_live.py's configuration for the mode) and kube-controller-manager's resourceclaim
# and garbage-collector controllers from VERIFY_DIR (the control-plane tool's build: start-control-plane.sh
# -C -K -c), run tests/e2e/dra_live.py, stop it all. Usage: tests/e2e/dra_live.sh VERIFY_DIR [observe] [allocate]
set -euo pipefail
V=${1:?usage: dra_live.sh VERIFY_DIR [MODE...]}; shift
cd "$(dirname "$0")/../.."
modes=${*:-observe allocate per-class}
rc=0
for m in $modes; do
  cfg=$(mktemp)
  PYTHONPATH=$PWD python tests/e2e/dra_live.py config "$m" > "$cfg"
  bash "$V/start-control-plane.sh" -C -K -c "$cfg" > /dev/null
  KUBECONFIG="$V/pki/admin.kubeconfig" PYTHONPATH=$PWD timeout 300 python tests/e2e/dra_live.py run "$m" || rc=1
  bash "$V/stop-control-plane.sh" > /dev/null
  rm -f "$cfg"
done
exit $rc
