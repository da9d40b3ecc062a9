#!/usr/bin/env bash
# Fleet benchmark: a fresh local control plane, N sessions (default 10000), the operator's
# release build and, side by side, kube-state-metrics built from its Go module. Prints the
# figures and writes docs/benchmarks.md, then appends the in-memory read-path figures.
#   BENCH_SESSIONS=2000 BENCH_CHANGES=200 bench/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/cluster/lib.sh
. hack/cluster/lib.sh
hack/deps.sh bench

cargo build --release --quiet -p whatsapp-operator
ksm=$(hack/tools.sh kube-state-metrics)
# A fresh, empty plane: every figure starts from nothing.
hack/cluster/down.sh
WAO_NODES=${WAO_NODES:-2} hack/cluster/up.sh >/dev/null
trap 'hack/cluster/down.sh' EXIT
eval "$(hack/cluster/env.sh)"
"$KUBECTL" apply --server-side -f crds/ >/dev/null
"$KUBECTL" wait --for condition=Established crd/whatsappsessions.whatsapp-operator.dev --timeout=30s >/dev/null

BENCH_OPERATOR=${CARGO_TARGET_DIR:-$root/target}/release/whatsapp-operator \
BENCH_PLANE_PIDS=$(for c in kube-apiserver etcd kube-controller-manager kube-scheduler kwok; do printf '%s=%s ' "$c" "$(cat "$(pid_file "$c")")"; done) \
BENCH_KSM=$ksm \
BENCH_OUT=${BENCH_OUT:-$root/docs/benchmarks.md} \
  cargo bench --bench fleet
# The read paths alone, in memory, appended to the same report.
out=${BENCH_OUT:-$root/docs/benchmarks.md}
{ echo; BENCH_SESSIONS=${BENCH_SESSIONS:-10000} cargo bench --quiet --bench snapshot; } | tee -a "$out"
