#!/usr/bin/env bash
# Installs (once, cached by version) a tool the tests or benchmarks use, and prints its path.
#   hack/tools.sh schemathesis | kube-state-metrics | vegeta
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/cluster/lib.sh"
# The Go tools are built into a temporary directory beside their cached one, then moved.
mkdir -p "$WAO_CACHE/bin"

SCHEMATHESIS_VERSION=4.32.5
KSM_VERSION=v2.20.0 # keep in step with bench/ksm/go.mod
VEGETA_VERSION=v12.13.0 # keep in step with bench/vegeta/go.mod

case "${1:-}" in
  schemathesis)
    venv=$WAO_CACHE/tools/schemathesis-$SCHEMATHESIS_VERSION
    if [ ! -x "$venv/bin/st" ]; then
      log "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv"
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    echo "$venv/bin/st"
    ;;
  kube-state-metrics)
    # The peer the benchmarks compare with, built from its Go module.
    dir=$WAO_CACHE/bin/kube-state-metrics-$KSM_VERSION
    if [ ! -x "$dir/kube-state-metrics" ]; then
      log "building kube-state-metrics $KSM_VERSION from its Go module (first time only)"
      tmp=$(mktemp -d "$WAO_CACHE/bin/.tmp-ksm-XXXXXX")
      # A wrapper module (bench/ksm) pins it: `go install pkg@version` asks the proxy for the
      # module's version list, which it does not serve for this module.
      (cd "$here/../bench/ksm" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go build -trimpath -ldflags "-s -w" -o "$tmp/kube-state-metrics" k8s.io/kube-state-metrics/v2)
      rm -rf "$dir" && mv "$tmp" "$dir"
    fi
    echo "$dir/kube-state-metrics"
    ;;
  vegeta)
    # The benchmarks' open-loop HTTP load generator, built from its Go module (as above).
    dir=$WAO_CACHE/bin/vegeta-$VEGETA_VERSION
    if [ ! -x "$dir/vegeta" ]; then
      log "building vegeta $VEGETA_VERSION from its Go module (first time only)"
      tmp=$(mktemp -d "$WAO_CACHE/bin/.tmp-vegeta-XXXXXX")
      (cd "$here/../bench/vegeta" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        go build -trimpath -ldflags "-s -w" -o "$tmp/vegeta" github.com/tsenart/vegeta/v12)
      rm -rf "$dir" && mv "$tmp" "$dir"
    fi
    echo "$dir/vegeta"
    ;;
  *) echo "usage: $0 schemathesis|kube-state-metrics|vegeta" >&2; exit 2 ;;
esac
