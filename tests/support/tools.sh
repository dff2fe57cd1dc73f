#!/usr/bin/env bash
# Build/install the local test rig into <repo>/.tools (idempotent; `make tools`).
#
#   .tools/bin/kube-apiserver            etcd + kube-apiserver in one process (cmd/kube-apiserver)
#   .tools/bin/kube-controller-manager   upstream kube-controller-manager (cmd/kube-controller-manager)
#   .tools/bin/kubectl                   upstream kubectl of the same release (cmd/kubectl)
#   .tools/bin/kubelet                   upstream kubelet (cmd/kubelet), for the rig's node
#   .tools/bin/kube-scheduler            upstream kube-scheduler (cmd/kube-scheduler), for the rig's node
#   .tools/bin/helm                      go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION
#   .tools/bin/promtool                  go install github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION
#   .tools/venv                          python venv with tests/support/requirements.txt (moto)
#
# `tools.sh eso` builds only External Secrets Operator, the benchmark's peer (`make bench-eso`;
# never part of `make tools` or `make test`):
#
#   .tools/eso-$ESO_VERSION/external-secrets   the ESO controller (root main.go of the module)
#   .tools/eso-$ESO_VERSION/crds.yaml           its CRD bundle (deploy/crds/bundle.yaml)
#   .tools/eso -> eso-$ESO_VERSION               the one the benchmark runs
#
# Each step is skipped when its output exists and .tools/stamps/<step> holds the
# hash of its inputs (sources, go.mod/go.sum, version pins, build recipe, Go or
# Python version). Uses the default GOMODCACHE/GOCACHE. Env overrides:
#   LOCKSTEP_TOOLS (default <repo>/.tools), SKIP_KCM=1 (do not build the controller-manager),
#   SKIP_NODE=1 (no kubelet, kube-scheduler or node packages), FORCE=1 (ignore stamps).
#
# The node's runtime comes from Debian (apt-get, only when a package is missing):
#   containerd, runc, busybox-static, containernetworking-plugins
set -euo pipefail

HELM_VERSION=v3.22.0 # newest helm v3 on the proxy whose go.mod says go <= local Go (go 1.26.0)
# Prometheus v3.16.0 (its Go module versions are v0.3MM.P for v3.MM.P); go.mod says go 1.26.7 and
# has no replace or exclude directive, so `go install pkg@version` builds it.
PROMETHEUS_VERSION=v0.316.0
# External Secrets Operator for `make bench-eso`. v0.16.2 is the newest release the Go module proxy
# serves that builds: v1.3.2 (the only later one) replaces 56 nested modules (./apis, ./runtime,
# ./providers/v1/*, ...) that a module zip leaves out and the proxy does not serve on their own.
ESO_VERSION=v0.16.2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
TOOLS="${LOCKSTEP_TOOLS:-$root/.tools}"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"
mkdir -p "$BIN" "$STAMPS"

export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=2"

need() { command -v "$1" >/dev/null 2>&1 || { echo "tools.sh: $1 not found" >&2; exit 1; }; }
need go
need python3
need sha256sum

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# step NAME OUTPUT HASH COMMAND...: run COMMAND unless OUTPUT exists and the stamp matches HASH.
step() {
  local name="$1" out="$2" hash="$3"; shift 3
  local stamp="$STAMPS/$name"
  if [[ "${FORCE:-0}" != 1 && -e "$out" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
    echo "tools: $name: up to date ($out)"
    return 0
  fi
  echo "tools: $name: building -> $out"
  rm -f "$stamp"
  local t0=$SECONDS
  "$@"
  echo "tools: $name: done in $(fmt_secs $((SECONDS - t0)))"
  echo "$hash" >"$stamp"
}

hash_of() { # hash_of RECIPE-STRING FILE... -> sha256 of the recipe and the files' contents
  { printf '%s\n' "$1"; shift; for f in "$@"; do printf '== %s\n' "${f#"$here"/}"; cat "$f"; done; } |
    sha256sum | cut -d' ' -f1
}

gover="$(go env GOVERSION)"

# ESO's go.mod has a replace directive, which `go install pkg@version` refuses: build a writable copy
# of the module as the main module instead. Its dependencies come from the proxy (go.sum checked).
build_eso() {
  local out="$TOOLS/eso-$ESO_VERSION" src dir
  dir="$(cd "${TMPDIR:-/tmp}" && go mod download -json "github.com/external-secrets/external-secrets@$ESO_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
  src="$(mktemp -d "${TMPDIR:-/tmp}/eso-src.XXXXXX")"
  # shellcheck disable=SC2064 # $src is expanded now: it is local, and gone when the trap runs
  trap "rm -rf '$src'" EXIT # the copy goes, the build failing or not (the script ends after it)
  cp -r "$dir/." "$src/"
  chmod -R u+w "$src"
  mkdir -p "$out"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/external-secrets.tmp" .)
  cp "$src/deploy/crds/bundle.yaml" "$out/crds.yaml"
  mv -f "$out/external-secrets.tmp" "$out/external-secrets"
}
if [[ "${1:-}" == eso ]]; then
  step "eso-$ESO_VERSION" "$TOOLS/eso-$ESO_VERSION/external-secrets" \
    "$(hash_of "eso $ESO_VERSION go build -trimpath -s -w CGO_ENABLED=0 crds=deploy/crds/bundle.yaml $gover")" build_eso
  ln -sfn "eso-$ESO_VERSION" "$TOOLS/eso" # what the harness runs
  echo "tools: ESO $ESO_VERSION in $TOOLS/eso-$ESO_VERSION ($TOOLS/eso)"
  exit 0
fi
KVER="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2; exit}' "$here/go.mod")"
[[ -n "$KVER" ]] || { echo "tools.sh: no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
KMINOR="$(echo "$KVER" | cut -d. -f2)"

# ldflags so /version reports the real release (helm checks it). buildDate is the
# release's own publication time, which keeps the build reproducible.
k8s_ldflags() {
  local date
  date="$(cd "$here" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)"
  [[ -n "$date" ]] || date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local v=k8s.io/component-base/version
  echo "-s -w -X $v.gitVersion=$KVER -X $v.gitMajor=1 -X $v.gitMinor=$KMINOR -X $v.gitTreeState=clean -X $v.buildDate=$date"
}
K8S_RECIPE="go build -trimpath ldflags(-s -w gitVersion=$KVER gitMajor=1 gitMinor=$KMINOR gitTreeState=clean buildDate=release) CGO_ENABLED=0 $gover"

build_k8s() { # build_k8s NAME
  (cd "$here" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$BIN/$1.tmp" "./cmd/$1")
  mv -f "$BIN/$1.tmp" "$BIN/$1"
}

for bin in kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler; do
  if [[ "$bin" == kube-controller-manager && "${SKIP_KCM:-0}" == 1 ]]; then
    echo "tools: $bin: skipped (SKIP_KCM=1)"
    continue
  fi
  if [[ "$bin" == kubelet || "$bin" == kube-scheduler ]] && [[ "${SKIP_NODE:-0}" == 1 ]]; then
    echo "tools: $bin: skipped (SKIP_NODE=1)"
    continue
  fi
  step "$bin" "$BIN/$bin" \
    "$(hash_of "$K8S_RECIPE" "$here/go.mod" "$here/go.sum" "$here/cmd/$bin/main.go")" \
    build_k8s "$bin"
done

install_helm() {
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}
step helm "$BIN/helm" "$(hash_of "helm $HELM_VERSION -trimpath -s -w version=$HELM_VERSION $gover")" install_helm

install_promtool() {
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=3.16.0" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
}
step promtool "$BIN/promtool" \
  "$(hash_of "promtool $PROMETHEUS_VERSION -trimpath -s -w version=3.16.0 $gover")" install_promtool

install_venv() {
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  "$TOOLS/venv/bin/python" -c 'import moto, moto.server; print("tools: venv: moto", moto.__version__)'
  "$TOOLS/venv/bin/hadolint" --version
}
step venv "$TOOLS/venv/bin/python" \
  "$(hash_of "venv $(python3 --version 2>&1) $(command -v python3)" "$here/requirements.txt")" install_venv

# The node's container runtime and the files its images are built from. dpkg-query first, so a
# machine that has them pays nothing; apt-get only for what is missing.
NODE_PKGS=(containerd runc busybox-static containernetworking-plugins)
if [[ "${SKIP_NODE:-0}" != 1 ]]; then
  missing=()
  for p in "${NODE_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "tools: node packages: installing ${missing[*]}"
    t0=$SECONDS
    sudo_=(); [[ "$(id -u)" == 0 ]] || sudo_=(sudo)
    "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      { "${sudo_[@]}" apt-get update -qq && "${sudo_[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
    echo "tools: node packages: done in $(fmt_secs $((SECONDS - t0)))"
  else
    echo "tools: node packages: installed (${NODE_PKGS[*]})"
  fi
fi

echo "tools: all up to date in $TOOLS"
