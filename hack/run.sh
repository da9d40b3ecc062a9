#!/usr/bin/env bash
# The main job: the operator with example sessions.
#   - With a cluster configured ($KUBECONFIG, or ~/.kube/config), it runs against that cluster.
#   - Otherwise it starts the local control plane (hack/cluster/up.sh) and runs against it.
# It installs the CRD, applies examples/ into namespace $WAO_DEMO_NAMESPACE (whatsapp-demo),
# and runs the operator in the foreground on 127.0.0.1:3000 until Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/cluster/lib.sh
. hack/cluster/lib.sh

if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ]; then
  log "no cluster configured: starting the local control plane"
  hack/cluster/up.sh >/dev/null
  eval "$(hack/cluster/env.sh)"
else
  log "using the configured cluster (${KUBECONFIG:-$HOME/.kube/config})"
fi
kubectl=${KUBECTL:-$(k8s_bin_dir)/kubectl}
[ -x "$kubectl" ] || kubectl=kubectl

ns=${WAO_DEMO_NAMESPACE:-whatsapp-demo}
cargo build --quiet
"$kubectl" apply --server-side --field-manager whatsapp-operator-demo -f crds/
"$kubectl" wait --for condition=Established crd/whatsappsessions.whatsapp-operator.dev --timeout=30s >/dev/null
"$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply --server-side -f - >/dev/null
"$kubectl" label namespace "$ns" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
"$kubectl" apply --server-side --field-manager whatsapp-operator-demo -n "$ns" -f examples/sessions/

# A random key per machine, kept so the printed curl keeps working across runs.
key_file=$WAO_CACHE/dev-api-keys
if [ ! -s "$key_file" ]; then
  mkdir -p "$WAO_CACHE"
  (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$key_file")
fi
key=$(head -n 1 "$key_file")

cat >&2 <<MSG

  whatsapp-operator on http://127.0.0.1:3000 (Ctrl-C stops it)
    curl -H "Authorization: Bearer $key" http://127.0.0.1:3000/sessions/all
    curl -H "Authorization: Bearer $key" http://127.0.0.1:3000/sessions/connected
    curl http://127.0.0.1:3000/metrics
    $kubectl get whatsappsessions -n $ns
  Act as a worker (what a real worker reports through its Pod):
    hack/worker-report.sh $ns whatsapp-connection Connected

MSG
exec ./target/debug/whatsapp-operator run --listen 127.0.0.1:3000 --api-key-file "$key_file" \
  --operator-namespace "$ns" --namespace "$ns" "$@"
