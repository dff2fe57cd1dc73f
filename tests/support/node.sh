#!/usr/bin/env bash
# A node for the rig: containerd, kubelet, kube-scheduler and a kube-controller-manager running the
# workload controllers (deployment, replicaset, node-lifecycle), all under one folder, loopback only.
#
#   tests/support/node.sh up RIG_DIR NODE_DIR   start, print `READY <NODE_DIR>`, stay until SIGTERM /
#                                               SIGINT (or stdin EOF with RIG_EXIT_ON_STDIN_EOF=1),
#                                               then tear everything down and exit
#   tests/support/node.sh images NODE_DIR       (re)build and import the images into a running node
#   tests/support/node.sh leftovers             print what a node leaves behind (nothing when clean)
#
# RIG_DIR is a running rig's folder (ca.crt, node.token, kubeconfig). Binaries from
# $LOCKSTEP_TOOLS/bin (make tools) and Debian's containerd, runc, busybox-static and
# containernetworking-plugins. Images (built by image.sh, imported with ctr, never pulled):
#   rig.local/busybox:1    busybox-static for test workloads
#   rig.local/pause:1      the sandbox image (the same busybox, sleeping)
#   rig.local/lockstep:dev the operator (when LOCKSTEP_BIN names its binary), as the Dockerfile lays it out
# The node is named `rig-node` and authenticates with the rig's node token (user
# system:node:rig-node, group system:nodes; Node authorization). Nothing can call the kubelet's
# API: anonymous and webhook authentication are off and no client certificate is issued.
# Teardown: the kubelet, scheduler and controller-manager, every container (the pod cgroups'
# processes), the shims, containerd; then the mounts under NODE_DIR, the kubepods cgroups, and the
# files the kubelet and containerd keep outside it (device-plugin socket, /var/log/containers
# links, shim sockets).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
TOOLS="${LOCKSTEP_TOOLS:-$root/.tools}"
BIN="$TOOLS/bin"
NODE_NAME=rig-node
SHIM_SOCKETS=/run/containerd/s
DEVICE_PLUGINS=/var/lib/kubelet/device-plugins
CONTAINER_LOGS=/var/log/containers

log() { echo "node: $*" >&2; }

PARENT=$PPID # a test binary (or make dev-up); startup stops when it is gone

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ctr_() { ctr --address "$NODE_DIR/containerd.sock" -n k8s.io "$@"; }

images() {
  bash "$here/image.sh" busybox "$NODE_DIR/images/busybox.tar" rig.local/busybox:1 &&
    bash "$here/image.sh" pause "$NODE_DIR/images/pause.tar" rig.local/pause:1 || return 1
  ctr_ images import --no-unpack=false "$NODE_DIR/images/busybox.tar" >/dev/null &&
    ctr_ images import "$NODE_DIR/images/pause.tar" >/dev/null || return 1
  if [[ -n "${LOCKSTEP_BIN:-}" ]]; then
    bash "$here/image.sh" lockstep "$NODE_DIR/images/lockstep.tar" rig.local/lockstep:dev "$LOCKSTEP_BIN" &&
      ctr_ images import "$NODE_DIR/images/lockstep.tar" >/dev/null || return 1
  fi
}

# Processes whose command line mentions our containerd socket (the shims).
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "containerd-shim.*$NODE_DIR/containerd.sock" && echo "${p#/proc/}"
  done
}

# Every kubepods cgroup directory, deepest first.
pod_cgroups() { find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -depth -type d 2>/dev/null; }

stop_pid() { # stop_pid PID: SIGTERM, up to 5 s, then SIGKILL
  local pid="$1" i
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

teardown() {
  trap '' TERM INT
  log "teardown"
  stop_pid "${KUBELET:-}"; stop_pid "${SCHED:-}"; stop_pid "${KCM:-}"
  local pid cg i
  # Containers: every process in the pod cgroups (the kubelet is gone, nothing restarts them).
  for i in 1 2 3; do
    for cg in $(pod_cgroups); do
      for pid in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    sleep 0.2
  done
  for pid in $(our_shims); do kill -KILL "$pid" 2>/dev/null; done
  stop_pid "${CONTAINERD:-}"
  # Mounts under the node's folder (pod volumes, the kubelet's bind mount of its root), deepest first.
  for i in 1 2 3; do
    awk -v d="$NODE_DIR/" 'index($5, d) == 1 || $5 == substr(d, 1, length(d) - 1) {print $5}' /proc/self/mountinfo |
      sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
  done
  for i in 1 2 3 4 5; do
    for cg in $(pod_cgroups); do rmdir "$cg" 2>/dev/null; done
    [[ -z "$(pod_cgroups)" ]] && break
    sleep 0.2
  done
  rm -f "$DEVICE_PLUGINS/kubelet.sock"
  rmdir "$DEVICE_PLUGINS" /var/lib/kubelet 2>/dev/null
  if [[ -d "$CONTAINER_LOGS" ]]; then
    find "$CONTAINER_LOGS" -maxdepth 1 -type l -lname "$NODE_DIR/*" -delete 2>/dev/null
    rmdir "$CONTAINER_LOGS" 2>/dev/null
  fi
  if [[ -d "$SHIM_SOCKETS" ]]; then
    comm -13 <(sort "$NODE_DIR/shim-sockets.before" 2>/dev/null) <(ls "$SHIM_SOCKETS" | sort) |
      while read -r s; do rm -f "$SHIM_SOCKETS/$s"; done
    rmdir "$SHIM_SOCKETS" /run/containerd 2>/dev/null
  fi
  log "teardown done"
}

leftovers() {
  local found=0 p
  for p in $(pod_cgroups); do echo "cgroup $p"; found=1; done
  [[ -e "$DEVICE_PLUGINS/kubelet.sock" ]] && { echo "socket $DEVICE_PLUGINS/kubelet.sock"; found=1; }
  if [[ -d "$CONTAINER_LOGS" ]]; then
    for p in $(find "$CONTAINER_LOGS" -maxdepth 1 -type l -lname '/tmp/lockstep-rig-*' 2>/dev/null); do
      echo "log link $p"; found=1
    done
  fi
  awk '$5 ~ /^\/tmp\/lockstep-rig-/ {print "mount " $5}' /proc/self/mountinfo | grep . && found=1
  for p in /proc/[0-9]*; do
    tr "\0" " " 2>/dev/null <"$p/cmdline" | grep -qE '^[^ ]*(containerd|kubelet|kube-scheduler)[^ ]* .*/tmp/lockstep-rig-' &&
      { echo "process ${p#/proc/}: $(tr "\0" " " 2>/dev/null <"$p/cmdline" | cut -c1-120)"; found=1; }
  done
  return $found
}

wait_for() { # wait_for SECONDS WHAT COMMAND...: gives up at once when the parent is gone
  local until=$((SECONDS + $1)) what="$2"; shift 2
  while ((SECONDS < until)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$PARENT" 2>/dev/null || { log "the parent ($PARENT) is gone while waiting for $what"; return 1; }
    sleep 0.1
  done
  log "timed out waiting for $what"; return 1
}

up() {
  RIG_DIR="$(cd "$1" && pwd)"; NODE_DIR="$2"
  # The physical path: mountinfo and the shims' command lines name it, not a symlink's.
  mkdir -p "$NODE_DIR"; NODE_DIR="$(cd "$NODE_DIR" && pwd -P)"
  local d="$NODE_DIR" t0=$SECONDS
  trap 'trap - EXIT; teardown; exit 0' TERM INT
  trap 'teardown' EXIT
  mkdir -p "$d"/{cni,containerd,kubelet,kubelet-pki,pod-logs,volume-plugins,images,runc}
  ls "$SHIM_SOCKETS" 2>/dev/null >"$d/shim-sockets.before"
  local server; server="$(awk '/server:/ {print $2; exit}' "$RIG_DIR/kubeconfig")"

  echo '{"cniVersion":"0.4.0","name":"lo-only","plugins":[{"type":"loopback"}]}' >"$d/cni/10-lo-only.conflist"
  cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "rig.local/pause:1"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
EOF
  containerd --config "$d/containerd.toml" >"$d/containerd.log" 2>&1 &
  CONTAINERD=$!
  wait_for 30 containerd ctr --address "$d/containerd.sock" version || return 1
  images || { log "image import failed"; return 1; }

  cat >"$d/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rig
  cluster: {server: "$server", certificate-authority: "$RIG_DIR/ca.crt"}
users:
- name: $NODE_NAME
  user: {token: "$(cat "$RIG_DIR/node.token")"}
contexts:
- name: rig
  context: {cluster: rig, user: $NODE_NAME}
current-context: rig
EOF
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $(free_port)
healthzBindAddress: 127.0.0.1
healthzPort: $(free_port)
readOnlyPort: 0
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$d/containerd.sock
imageServiceEndpoint: unix://$d/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
podLogsDir: $d/pod-logs
volumePluginDir: $d/volume-plugins
syncFrequency: ${RIG_NODE_SYNC_FREQUENCY:-5s}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
EOF
  "$BIN/kubelet" --config="$d/kubelet.yaml" --kubeconfig="$d/kubelet.kubeconfig" --root-dir="$d/kubelet" \
    --cert-dir="$d/kubelet-pki" --hostname-override="$NODE_NAME" -v=0 >"$d/kubelet.log" 2>&1 &
  KUBELET=$!
  "$BIN/kube-scheduler" --kubeconfig="$RIG_DIR/kubeconfig" --bind-address=127.0.0.1 --secure-port=0 \
    --leader-elect=false -v=0 >"$d/kube-scheduler.log" 2>&1 &
  SCHED=$!
  "$BIN/kube-controller-manager" --kubeconfig="$RIG_DIR/kubeconfig" --bind-address=127.0.0.1 --secure-port=0 \
    --leader-elect=false --controllers=deployment-controller,replicaset-controller,node-lifecycle-controller \
    --use-service-account-credentials=false -v=0 >"$d/workload-controllers.log" 2>&1 &
  KCM=$!
  wait_for 60 "node $NODE_NAME Ready" bash -c \
    "'$BIN/kubectl' --kubeconfig='$RIG_DIR/kubeconfig' get node '$NODE_NAME' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" ||
    { tail -20 "$d/kubelet.log" >&2; return 1; }
  wait_for 30 "the not-ready taint to go" bash -c \
    "! '$BIN/kubectl' --kubeconfig='$RIG_DIR/kubeconfig' get node '$NODE_NAME' -o jsonpath='{.spec.taints}' | grep -q not-ready" ||
    return 1
  log "ready in $((SECONDS - t0))s ($d)"
  echo "READY $d"
  if [[ "${RIG_EXIT_ON_STDIN_EOF:-0}" == 1 ]]; then
    while read -r _; do :; done
  else
    while :; do sleep 1; done
  fi
  teardown
  trap - EXIT
  exit 0
}

case "${1:-}" in
  up) shift; up "$@" ;;
  images) NODE_DIR="$2"; images ;;
  leftovers) leftovers ;;
  *) echo "usage: node.sh up RIG_DIR NODE_DIR | images NODE_DIR | leftovers" >&2; exit 2 ;;
esac
