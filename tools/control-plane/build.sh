#!/usr/bin/env bash
# Builds the real Kubernetes control plane (and the real peers the tests drive) from the Go module
# proxy, into a cache folder keyed by the pinned Kubernetes release (DESIGN.md §9.3):
#
#   target/control-plane/<k8s version>/{kube-apiserver,kube-controller-manager,kubectl,etcd,helm,okms}
#
# Usage: tools/control-plane/build.sh [all|kube|helm|okms]...   (default: kube helm)
#
# A binary already in the cache, built from the same module version (its `<name>.version` stamp),
# is not rebuilt. Prints the cache folder on its last line of stdout, so
#   export OKMS_CONTROL_PLANE_BIN="$(tools/control-plane/build.sh | tail -n1)"
# points the tests at it.
#
# Environment: OKMS_CONTROL_PLANE_CACHE (default <repo>/target/control-plane).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

log() { echo "control-plane: $*" >&2; }

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }

# The Go module versions, read from the go.mod files (the single source of truth).
modver() { # modver <dir> <module>
  (cd "$1" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' "$2")
}
k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")"
[ -n "$k8s_version" ] || { log "no k8s.io/kubernetes in $here/go.mod"; exit 1; }

cache="${OKMS_CONTROL_PLANE_CACHE:-$root/target/control-plane}/$k8s_version"
mkdir -p "$cache"

export CGO_ENABLED=0
# -mod=mod: go.sum may lack lines for a Go toolchain newer than the one that tidied it.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod -trimpath"

# needs <name> <stamp>: true when the cache lacks <name> built from <stamp>.
needs() {
  [ -x "$cache/$1" ] && [ "$(cat "$cache/$1.version" 2>/dev/null)" = "$2" ] && return 1
  return 0
}
stamp() { echo "$2" >"$cache/$1.version"; }

timed() { # timed <what> <command>...
  local start=$SECONDS rc=0
  log "building $1"
  "${@:2}" || rc=$?
  if [ "$rc" -ne 0 ]; then log "FAILED to build $1 (exit $rc)"; return "$rc"; fi
  log "built $1 in $((SECONDS - start)) s"
}

build_kube() {
  local v="$k8s_version" etcd_v minor want=() pkgs=() n
  etcd_v="$(modver "$here" go.etcd.io/etcd/server/v3)"
  minor="${v#v1.}"; minor="${minor%%.*}"
  declare -A pkg=(
    [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
    [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
    [kubectl]=k8s.io/kubernetes/cmd/kubectl
  )
  for n in kube-apiserver kube-controller-manager kubectl; do
    if needs "$n" "$v"; then want+=("$n"); pkgs+=("${pkg[$n]}"); else log "$n $v: cached"; fi
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    # The version the binaries report (/version, `kubectl version`), as hack/lib/version.sh sets it:
    # Helm and kubectl compare it with charts' kubeVersion and their own.
    local x="" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      x+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      x+=" -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    # One `go build` for all of them: the shared packages compile once.
    timed "${want[*]} $v" bash -c 'cd "$1" && shift && go build -ldflags="-s -w $0" -o "$@"' \
      "$x" "$here" "$cache/" "${pkgs[@]}"
    for n in "${want[@]}"; do stamp "$n" "$v"; done
  fi
  if needs etcd "$etcd_v"; then
    timed "etcd $etcd_v" bash -c 'cd "$0" && go build -ldflags="-s -w" -o "$1" go.etcd.io/etcd/server/v3' \
      "$here" "$cache/etcd"
    stamp etcd "$etcd_v"
  else
    log "etcd $etcd_v: cached"
  fi
}

build_helm() {
  local dir="$here/helm" v cv major minor
  v="$(modver "$dir" helm.sh/helm/v3)"
  if ! needs helm "$v"; then log "helm $v: cached"; return; fi
  # As helm's Makefile does: its version, and the Kubernetes version `helm template` assumes.
  cv="$(modver "$dir" k8s.io/client-go)"; cv="${cv#v}"
  major=$(( ${cv%%.*} + 1 )); minor="${cv#*.}"; minor="${minor%%.*}"
  local x="-X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  x+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  x+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  timed "helm $v" bash -c 'cd "$0" && go build -ldflags="-s -w $1" -o "$2" helm.sh/helm/v3/cmd/helm' \
    "$dir" "$x" "$cache/helm"
  stamp helm "$v"
}

build_okms() {
  local dir="$here/okms-cli" v
  v="$(awk '$1 == "require" && $2 == "github.com/ovh/okms-cli" { print $3; exit }' "$dir/go.mod")"
  if ! needs okms "$v"; then log "okms $v: cached"; return; fi
  if ! timed "okms $v" bash -c 'cd "$0" && go build -ldflags="-s -w" -o "$1" github.com/ovh/okms-cli/cmd/okms' \
    "$dir" "$cache/okms"; then
    log "the module proxy did not serve github.com/ovh/okms-cli $v"
    return 1
  fi
  stamp okms "$v"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kube helm)
log "go $(go env GOVERSION), cache $cache"
start=$SECONDS
for t in "${targets[@]}"; do
  case "$t" in
    all) build_kube; build_helm; build_okms ;;
    kube) build_kube ;;
    helm) build_helm ;;
    okms) build_okms ;;
    *) log "unknown target $t (all|kube|helm|okms)"; exit 2 ;;
  esac
done
log "done in $((SECONDS - start)) s"
echo "$cache"
