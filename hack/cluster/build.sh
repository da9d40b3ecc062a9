#!/usr/bin/env bash
# Builds the local control plane from upstream Go modules and caches the binaries by version:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes, wrapper in k8s/)
#   etcd                                                              (go.etcd.io/etcd/server/v3, wrapper in etcd/)
#   kwok                                                              (sigs.k8s.io/kwok/cmd/kwok)
#   helm                                                              (helm.sh/helm/v3/cmd/helm, for the chart tests)
# Prints the bin directory of each component. A cached component is not rebuilt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/lib.sh"

export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

# build_into NAME DIR CMD...: runs CMD with $out set to a temp dir, then moves it into place
# atomically, so an interrupted build never leaves a half-filled cache entry.
build_into() {
  local name=$1 dest=$2; shift 2
  if [ -f "$dest/.complete" ]; then log "$name: cached in $dest"; return; fi
  local start=$SECONDS
  out=$(mktemp -d "$(dirname "$dest")/.tmp-$name-XXXXXX")
  log "$name: building (first time on this machine; cached afterwards)"
  "$@"
  touch "$out/.complete"
  rm -rf "$dest"
  mv "$out" "$dest"
  log "$name: built in $((SECONDS - start))s -> $dest"
}

k8s_build() {
  local v=$KUBERNETES_VERSION minor
  minor=${v#v1.}; minor=${minor%%.*}
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # One go build for all four commands: their shared packages compile once.
  (cd "$here/k8s" && go build -trimpath -ldflags "-s -w $ld" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
}

etcd_build() {
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

kwok_build() {
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # kwok needs stage definitions (how fake nodes and pods progress); they ship in its module.
  local mod
  mod=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION
  mkdir -p "$out/stages"
  local dir f
  for dir in node/fast node/heartbeat-with-lease pod/fast; do
    for f in "$mod/kustomize/stage/$dir"/*.yaml; do
      [ "$(basename "$f")" = kustomization.yaml ] && continue
      cp "$f" "$out/stages/${dir//\//-}-$(basename "$f")"
    done
  done
  chmod -R u+w "$out/stages"
}

helm_build() {
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

mkdir -p "$WAO_CACHE/bin"
build_into kubernetes "$(k8s_bin_dir)" k8s_build
build_into etcd "$(etcd_bin_dir)" etcd_build
build_into kwok "$(kwok_bin_dir)" kwok_build
build_into helm "$(helm_bin_dir)" helm_build
