#!/usr/bin/env bash
# The main job: the operator with example sessions, each holding a real WhatsApp connection.
#   - With a cluster configured ($KUBECONFIG, or ~/.kube/config), it runs against that cluster,
#     whose kubelets run the worker image in the session Pods.
#   - Otherwise it starts the local control plane (hack/cluster/up.sh), whose kwok Pods run no
#     containers, and runs a whatsapp-worker host process for each session Pod (host-kubelet).
# It installs the CRD, applies examples/sessions/ into namespace $WAO_DEMO_NAMESPACE
# (whatsapp-demo), and runs the operator in the foreground on 127.0.0.1:3000 until Ctrl-C,
# which stops the workers too (they report Closing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=hack/cluster/lib.sh
. hack/cluster/lib.sh

local_plane=0
if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ]; then
  local_plane=1
  log "no cluster configured: starting the local control plane"
  hack/cluster/up.sh >/dev/null
  eval "$(hack/cluster/env.sh)"
else
  log "using the configured cluster (${KUBECONFIG:-$HOME/.kube/config})"
fi
kubectl=${KUBECTL:-$(k8s_bin_dir)/kubectl}
[ -x "$kubectl" ] || kubectl=kubectl

ns=${WAO_DEMO_NAMESPACE:-whatsapp-demo}
# The operator, the worker and host-kubelet. The first build compiles whatsapp-rust (several
# minutes on 2 cores); later ones take seconds.
log "building (cargo build --workspace --bins)"
cargo build --quiet --workspace --bins
bin=${CARGO_TARGET_DIR:-$root/target}/debug
"$kubectl" apply --server-side --field-manager whatsapp-operator-demo -f crds/
"$kubectl" wait --for condition=Established crd/whatsappsessions.whatsapp-operator.dev --timeout=30s >/dev/null
"$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply --server-side -f - >/dev/null
"$kubectl" label namespace "$ns" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
# The workers' ServiceAccount, its Role (patch pods/status, nothing else) and the admission
# policy that keeps each worker to its own Pod's conditions: the chart's, as a one-namespace
# install has them. host-kubelet gives each worker a token of that account bound to its Pod.
helm=${HELM:-$(command -v helm || true)}
worker_account=()
if [ -n "$helm" ] && [ -x "$helm" ]; then
  "$helm" template demo charts/whatsapp-operator --namespace "$ns" --set 'apiKeys.keys={unused}' \
    --set watchNamespace="$ns" --show-only templates/worker-rbac.yaml \
    --show-only templates/worker-admission-policy.yaml |
    "$kubectl" apply --server-side --field-manager whatsapp-operator-demo -f - >/dev/null
  worker_account=(--worker-service-account whatsapp-session-worker)
else
  log "helm not found: the workers use the namespace's default account, without the admission policy"
fi
"$kubectl" apply --server-side --field-manager whatsapp-operator-demo -n "$ns" -f examples/sessions/

# A random key per machine, kept so the printed curl keeps working across runs.
key_file=$WAO_CACHE/dev-api-keys
if [ ! -s "$key_file" ]; then
  mkdir -p "$WAO_CACHE"
  (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$key_file")
fi
key=$(head -n 1 "$key_file")

if [ "$local_plane" = 1 ]; then
  # Each claim's pairing data lives here, so a session stays paired across Pods and runs.
  "$bin/host-kubelet" --namespace "$ns" --kubeconfig "$KUBECONFIG" --worker "$bin/whatsapp-worker" \
    --auth-root "$WAO_CACHE/demo-auth" &
  host_kubelet=$!
  trap 'kill -TERM "$host_kubelet" 2>/dev/null; wait "$host_kubelet" 2>/dev/null' EXIT
  workers="whatsapp-worker host processes run the session Pods; their QR codes print below"
else
  workers="the cluster's kubelets run the worker image in the session Pods"
fi

cat >&2 <<MSG

  whatsapp-operator on http://127.0.0.1:3000 (Ctrl-C stops it); $workers
  Console: open http://127.0.0.1:3000/ in a browser and enter the API key $key
  Changes as they happen (Server-Sent Events):
    curl -N -H "Authorization: Bearer $key" http://127.0.0.1:3000/sessions/events
    curl -H "Authorization: Bearer $key" http://127.0.0.1:3000/sessions/all
    curl -H "Authorization: Bearer $key" http://127.0.0.1:3000/sessions/connected
    curl http://127.0.0.1:3000/metrics
    $kubectl get whatsappsessions -n $ns
  Pair a phone: scan a session's QR code with WhatsApp > Linked devices > Link a device, as the
  workers print it below, or from the API (while the session waits for a scan):
    curl -H "Authorization: Bearer $key" "http://127.0.0.1:3000/sessions/support-line/qr?format=text"
    curl -H "Authorization: Bearer $key" -o qr.png http://127.0.0.1:3000/sessions/whatsapp_connection/qr
  Without internet the sessions show DISCONNECTED with the reason.

MSG
"$bin/whatsapp-operator" run --listen 127.0.0.1:3000 --api-key-file "$key_file" \
  --operator-namespace "$ns" --namespace "$ns" "${worker_account[@]}" "$@"
