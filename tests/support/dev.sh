#!/usr/bin/env bash
# Long-running dev instance of the test rig (make dev-up / dev-down).
#
#   dev.sh up      start kube-apiserver (+ kube-controller-manager if built) and moto in
#                  the background; state, pid files and logs in <repo>/.tools/dev/; with NODE=1
#                  also a node (node.sh: containerd, kubelet, kube-scheduler) in .tools/dev/node
#   dev.sh down    stop them and remove .tools/dev/
#   dev.sh status  show what is running
#
# Env: RIG_PORT (apiserver port, default free), MOTO_PORT (default free),
#      DEV_TIMEOUT (seconds to wait for READY, default 90), LOCKSTEP_TOOLS (default <repo>/.tools).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
TOOLS="${LOCKSTEP_TOOLS:-$root/.tools}"
BIN="$TOOLS/bin"
DEV="$TOOLS/dev"
TIMEOUT="${DEV_TIMEOUT:-90}"
SERVICES=(kube-apiserver moto)

alive() { # alive NAME -> pid file exists and the process is ours
  local f="$DEV/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  # guard against pid reuse: the command line must be what we started
  case "$1" in
    kube-apiserver) grep -qa "kube-apiserver" "/proc/$pid/cmdline" 2>/dev/null ;;
    moto) grep -qa "moto_rig.py" "/proc/$pid/cmdline" 2>/dev/null ;;
    node) grep -qa "node.sh" "/proc/$pid/cmdline" 2>/dev/null ;;
  esac
}

ready_value() { # ready_value NAME -> the value after READY in NAME.out, or nothing
  [[ -f "$DEV/$1.out" ]] && sed -n 's/^READY //p' "$DEV/$1.out" | head -n1 || true
}

stop_one() { # stop_one NAME: SIGTERM, wait up to 30 s, then SIGKILL
  local name="$1" pid
  alive "$name" || return 0
  pid="$(cat "$DEV/$name.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { echo "dev: stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  echo "dev: $name (pid $pid) did not stop in 30 s, killing" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

print_info() {
  local kc ep
  kc="$(ready_value kube-apiserver)"
  ep="$(ready_value moto)"
  local server
  server="$(sed -n 's/^ *server: //p' "$kc" 2>/dev/null | head -n1)"
  cat <<EOF
kubeconfig:    $kc
apiserver:     $server  (kube-controller-manager: $([[ -n "$(pgrep -P "$(cat "$DEV/kube-apiserver.pid")" 2>/dev/null)" ]] && echo running || echo off))
moto endpoint: $ep
admin token:   $DEV/kube/admin.token   nobody token: $DEV/kube/nobody.token
logs:          $DEV/kube-apiserver.log  $DEV/moto.log

  export KUBECONFIG=$kc AWS_ENDPOINT_URL=$ep   # or: source $DEV/env
  KUBECONFIG=$kc $TOOLS/bin/kubectl get ns      # kubectl of the same release, built by make tools
  curl --cacert $DEV/kube/ca.crt -H "Authorization: Bearer \$(cat $DEV/kube/admin.token)" $server/api/v1/namespaces
  curl -X POST $ep/moto-api/reset
EOF
}

up() {
  if alive kube-apiserver && alive moto; then
    echo "dev: already up"
    print_info
    return 0
  fi
  if [[ -d "$DEV" ]]; then
    echo "dev: cleaning up a partial previous instance"
    down >/dev/null
  fi
  [[ -x "$BIN/kube-apiserver" ]] || { echo "dev: $BIN/kube-apiserver missing: run make tools" >&2; exit 1; }
  [[ -x "$TOOLS/venv/bin/python" ]] || { echo "dev: $TOOLS/venv missing: run make tools" >&2; exit 1; }
  mkdir -p "$DEV/kube"

  local kcm=""
  [[ -x "$BIN/kube-controller-manager" ]] && kcm="$BIN/kube-controller-manager"
  # setsid + nohup + stdin from /dev/null: the processes outlive this script and
  # the terminal; RIG_EXIT_ON_STDIN_EOF is deliberately not set.
  (
    cd "$DEV"
    unset RIG_EXIT_ON_STDIN_EOF
    RIG_DIR="$DEV/kube" RIG_PORT="${RIG_PORT:-0}" RIG_CONTROLLER_MANAGER="$kcm" \
      exec setsid nohup "$BIN/kube-apiserver" </dev/null >"$DEV/kube-apiserver.out" 2>"$DEV/kube-apiserver.log"
  ) &
  echo $! >"$DEV/kube-apiserver.pid"
  (
    cd "$DEV"
    unset RIG_EXIT_ON_STDIN_EOF
    exec setsid nohup "$TOOLS/venv/bin/python" "$here/moto_rig.py" "${MOTO_PORT:-0}" </dev/null >"$DEV/moto.out" 2>"$DEV/moto.log"
  ) &
  echo $! >"$DEV/moto.pid"
  echo "dev: starting kube-apiserver (pid $(cat "$DEV/kube-apiserver.pid"))${kcm:+ with kube-controller-manager} and moto (pid $(cat "$DEV/moto.pid"))"

  local t0=$SECONDS
  while :; do
    local pending=()
    for s in "${SERVICES[@]}"; do
      [[ -n "$(ready_value "$s")" ]] && continue
      if ! alive "$s"; then
        echo "dev: $s exited before READY; last log lines:" >&2
        tail -n 20 "$DEV/$s.log" >&2 || true
        down >/dev/null
        exit 1
      fi
      pending+=("$s")
    done
    [[ ${#pending[@]} -eq 0 ]] && break
    if ((SECONDS - t0 >= TIMEOUT)); then
      echo "dev: not READY within ${TIMEOUT}s: ${pending[*]} (logs in $DEV)" >&2
      for s in "${pending[@]}"; do tail -n 20 "$DEV/$s.log" >&2 || true; done
      down >/dev/null
      exit 1
    fi
    sleep 0.2
  done
  printf 'export KUBECONFIG=%q\nexport AWS_ENDPOINT_URL=%q\n' "$(ready_value kube-apiserver)" "$(ready_value moto)" >"$DEV/env"
  if [[ "${NODE:-0}" == 1 ]]; then
    (
      unset RIG_EXIT_ON_STDIN_EOF
      exec setsid nohup bash "$here/node.sh" up "$DEV/kube" "$DEV/node" </dev/null >"$DEV/node.out" 2>"$DEV/node.log"
    ) &
    echo $! >"$DEV/node.pid"
    while [[ -z "$(ready_value node)" ]]; do
      if ! alive node || ((SECONDS - t0 >= TIMEOUT)); then
        echo "dev: the node did not start; last log lines:" >&2
        tail -n 20 "$DEV/node.log" >&2 || true
        down >/dev/null
        exit 1
      fi
      sleep 0.2
    done
    echo "dev: node rig-node ready (pods: hostNetwork: true, image rig.local/busybox:1, imagePullPolicy: Never)"
  fi
  echo "dev: up in $((SECONDS - t0))s"
  print_info
}

down() {
  stop_one node
  for s in "${SERVICES[@]}"; do stop_one "$s"; done
  rm -rf "$DEV"
  echo "dev: down"
}

status() {
  local any=0
  for s in "${SERVICES[@]}"; do
    if alive "$s"; then
      any=1
      echo "dev: $s running (pid $(cat "$DEV/$s.pid")): $(ready_value "$s")"
    else
      echo "dev: $s not running"
    fi
  done
  ((any)) && print_info || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
