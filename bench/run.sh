#!/usr/bin/env bash
# The benchmarks, in one command. Each run gets a fresh, empty local control plane (with the
# apiserver's audit log on for the operator's ServiceAccount alone), the operator's release
# build, and, for the fleet runs, kube-state-metrics and vegeta built from their Go modules.
# Each run's figures go to docs/bench-runs/ as JSON; the report (docs/benchmarks.md) is made
# from every run there: the median of the runs at each size, the worst beside it.
#   bench/run.sh                       # 3 fleet runs at 10k, one at 50k, one of 100k suspended
#   BENCH_PLAN="fleet" BENCH_SESSIONS=2000 BENCH_RUNS_DIR=/tmp/runs bench/run.sh
#   BENCH_PLAN=report bench/run.sh     # only the report, from the runs recorded
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/cluster/lib.sh
. hack/cluster/lib.sh
hack/deps.sh bench

plan=${BENCH_PLAN:-fleet fleet fleet scale suspended}
runs_dir=${BENCH_RUNS_DIR:-$root/docs/bench-runs}
out=${BENCH_OUT:-$root/docs/benchmarks.md}
mkdir -p "$runs_dir"

cargo build --release --quiet -p whatsapp-operator
ksm=$(hack/tools.sh kube-state-metrics)
vegeta=$(hack/tools.sh vegeta)
audit_dir=$WAO_CACHE/bench
mkdir -p "$audit_dir"
cat > "$audit_dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: ["system:serviceaccount:bench:whatsapp-operator"]
  - level: None
POLICY
trap 'hack/cluster/down.sh' EXIT

for mode in $plan; do
  case $mode in
    fleet) n=${BENCH_SESSIONS:-10000} ;;
    scale) n=${BENCH_SCALE_SESSIONS:-50000} ;;
    suspended) n=${BENCH_SUSPENDED_SESSIONS:-100000} ;;
    report) continue ;;
    *) echo "unknown run '$mode' in BENCH_PLAN (fleet, scale, suspended, report)" >&2; exit 2 ;;
  esac
  # A fresh, empty plane: every figure starts from nothing.
  hack/cluster/down.sh
  rm -f "$audit_dir/audit.log"
  WAO_NODES=${WAO_NODES:-2} \
  WAO_APISERVER_ARGS="--audit-policy-file=$audit_dir/audit-policy.yaml --audit-log-path=$audit_dir/audit.log --audit-log-maxsize=0" \
    hack/cluster/up.sh >/dev/null
  eval "$(hack/cluster/env.sh)"
  "$KUBECTL" apply --server-side -f crds/ >/dev/null
  "$KUBECTL" wait --for condition=Established crd/whatsappsessions.whatsapp-operator.dev --timeout=30s >/dev/null
  file=$runs_dir/$(date -u +%Y%m%dT%H%M%SZ)-$mode-$n.json
  log "run: $mode, $n sessions -> $file"
  # The operator's source as measured: the last commit that changed it (so runs of one build
  # group together across commits of docs), and whether it had changes not committed.
  build=$(git log -1 --format=%h -- src Cargo.toml Cargo.lock)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo "+uncommitted")
  BENCH_MODE=$mode BENCH_SESSIONS=$n BENCH_RUN_FILE=$file BENCH_BUILD=$build \
  BENCH_PLANE_PIDS=$(for c in kube-apiserver etcd kube-controller-manager kube-scheduler kwok; do printf '%s=%s ' "$c" "$(cat "$(pid_file "$c")")"; done) \
  BENCH_KSM=$ksm BENCH_VEGETA=$vegeta BENCH_AUDIT_LOG=$audit_dir/audit.log \
    cargo bench --quiet --bench fleet
done
hack/cluster/down.sh

cargo bench --quiet --bench fleet -- --report "$runs_dir" "$out" >/dev/null
# The read paths alone, in memory, appended to the same report.
{ echo; BENCH_SESSIONS=${BENCH_SESSIONS:-10000} cargo bench --quiet --bench snapshot; } >> "$out"
cat "$out"
