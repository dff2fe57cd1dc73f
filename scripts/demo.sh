#!/usr/bin/env bash
# make demo: a secret syncing and rotating on a local control plane.
# Starts its own kube-apiserver (+etcd) and moto on free loopback ports in a temporary folder,
# installs the CRDs, applies examples/demo/, runs the operator, rotates the AWS secret with
# PutSecretValue, shows the Secret follow, and cleans everything up. When make tools built the
# rig's node (kubelet), a pod mounting the Secret shows the rotated value from its file too
# (DEMO_POD=0 skips it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${LOCKSTEP_TOOLS:-$root/.tools}"
work="$(mktemp -d -t lockstep-demo-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_line() { # wait_line FILE PREFIX SECONDS -> prints the rest of the first line starting with PREFIX
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if grep -q "^$2" "$1" 2>/dev/null; then grep -m1 "^$2" "$1" | cut -d' ' -f2-; return 0; fi
    sleep 0.1
  done
  echo "demo: timed out waiting for $2 in $1" >&2; return 1
}

say "Starting kube-apiserver (with etcd) and the moto Secrets Manager emulator on loopback"
RIG_DIR="$work/kube" RIG_CONTROLLER_MANAGER="$tools/bin/kube-controller-manager" \
  "$tools/bin/kube-apiserver" >"$work/kube.out" 2>"$work/kube.log" &
pids+=($!)
"$tools/venv/bin/python" "$root/tests/support/moto_rig.py" 0 >"$work/moto.out" 2>"$work/moto.log" &
pids+=($!)
mkdir -p "$work/kube"
export KUBECONFIG; KUBECONFIG="$(wait_line "$work/kube.out" READY 120)"
MOTO_ENDPOINT="$(wait_line "$work/moto.out" READY 60)"
echo "kubeconfig: $KUBECONFIG"; echo "emulator:   $MOTO_ENDPOINT"
kubectl() { "$tools/bin/kubectl" "$@"; }
aws_sm() { # aws_sm OPERATION NAME VALUE
  "$tools/venv/bin/python" - "$MOTO_ENDPOINT" "$@" <<'PY'
import sys, boto3
endpoint, op, name, value = sys.argv[1:5]
sm = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
if op == "create":
    sm.create_secret(Name=name, SecretString=value)
else:
    sm.put_secret_value(SecretId=name, SecretString=value)
print(f"{op}: {name}")
PY
}

pod=0
if [[ "${DEMO_POD:-1}" == 1 && -x "$tools/bin/kubelet" ]]; then
  pod=1
  say "Starting a node: containerd + kubelet + kube-scheduler on loopback (tests/support/node.sh)"
  bash "$root/tests/support/node.sh" up "$work/kube" "$work/node" >"$work/node.out" 2>"$work/node.log" &
  pids+=($!)
  wait_line "$work/node.out" READY 120 >/dev/null
fi

say "kubectl apply --server-side -f crds/"
kubectl apply --server-side -f "$root/crds/"
kubectl wait --for=condition=Established crd/externalsecrets.lockstep.dev --timeout=30s

say "Creating the AWS secret demo/db in the emulator"
aws_sm create demo/db '{"username":"app","password":"first-password"}'

say "Applying examples/demo/ (SecretStore + ExternalSecret) in namespace demo"
kubectl create namespace demo
sed "s#MOTO_ENDPOINT#$MOTO_ENDPOINT#" "$root/examples/demo/secretstore.yaml" | kubectl -n demo apply -f -
kubectl -n demo apply -f "$root/examples/demo/externalsecret.yaml"

say "Running the operator: lockstep run"
"$root/target/debug/lockstep" run --metrics-addr 127.0.0.1:0 >"$work/operator.log" 2>&1 &
pids+=($!)

show() {
  kubectl -n demo get externalsecrets.lockstep.dev,secretstores.lockstep.dev
  echo "password in Secret db-creds: $(kubectl -n demo get secret db-creds -o jsonpath='{.data.password}' | base64 -d)"
}
wait_value() {
  local i
  for ((i = 0; i < 300; i++)); do
    [[ "$(kubectl -n demo get secret db-creds -o jsonpath='{.data.password}' 2>/dev/null | base64 -d)" == "$1" ]] && return 0
    sleep 0.1
  done
  echo "demo: the Secret did not get the expected value; operator log:" >&2; cat "$work/operator.log" >&2; return 1
}
wait_value first-password
say "Synced"
show
kubectl -n demo get secret db-creds -o jsonpath='{.metadata.annotations}'; echo

say "Rotating: PutSecretValue on demo/db"
start=$(date +%s%N)
aws_sm put demo/db '{"username":"app","password":"rotated-password"}'
wait_value rotated-password
echo "rotation reached the Secret in $(( ($(date +%s%N) - start) / 1000000 )) ms"
show

if ((pod)); then
  pod_file() { # the last password the reader pod printed (from the kubelet's log file)
    cat "$work"/node/pod-logs/demo_reader_*/c/*.log 2>/dev/null | tail -n1 | cut -d' ' -f4-
  }
  say "A pod mounting Secret db-creds (hostNetwork, image rig.local/busybox:1) prints its password file"
  kubectl -n demo apply -f - <<'POD'
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: rig.local/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do cat /db/password; echo; sleep 1; done"]
    volumeMounts: [{name: db, mountPath: /db, readOnly: true}]
  volumes: [{name: db, secret: {secretName: db-creds}}]
POD
  for ((i = 0; i < 600; i++)); do [[ -n "$(pod_file)" ]] && break; sleep 0.1; done
  echo "the pod reads: $(pod_file)"
  say "Rotating again; the kubelet refreshes the pod's file at its next sync (syncFrequency 5s here)"
  start=$(date +%s%N)
  aws_sm put demo/db '{"username":"app","password":"rotated-again"}'
  for ((i = 0; i < 900; i++)); do [[ "$(pod_file)" == rotated-again ]] && break; sleep 0.1; done
  echo "the pod reads: $(pod_file) ($(( ($(date +%s%N) - start) / 1000000 )) ms after the rotation)"
fi

say "Done; stopping everything"
