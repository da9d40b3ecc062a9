#!/usr/bin/env bash
# Reports a session's connection the way a worker does: by setting its own Pod's conditions.
#   hack/worker-report.sh NAMESPACE SESSION REASON [MESSAGE]
#   REASON: Connecting | Connected | Authenticated | Disconnected | Closing | LoggedOut
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/cluster/lib.sh"
[ $# -ge 3 ] || { echo "usage: $0 NAMESPACE SESSION REASON [MESSAGE]" >&2; exit 2; }
ns=$1 session=$2 reason=$3 message=${4:-}
use_local_kubeconfig_if_unset
kubectl=${KUBECTL:-$(k8s_bin_dir)/kubectl}
[ -x "$kubectl" ] || kubectl=kubectl
case "$reason" in
  Connected|Authenticated) status=True ;;
  Connecting|Disconnected|Closing|LoggedOut) status=False ;;
  *) echo "unknown reason $reason" >&2; exit 2 ;;
esac
auth=False
[ "$reason" = Authenticated ] && auth=True
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
patch=$(cat <<JSON
{"status":{"conditions":[
 {"type":"whatsapp-operator.dev/Connection","status":"$status","reason":"$reason","message":"$message","lastTransitionTime":"$now"},
 {"type":"whatsapp-operator.dev/Authenticated","status":"$auth","reason":"Reported","lastTransitionTime":"$now"}]}}
JSON
)
"$kubectl" patch pod "wa-$session" -n "$ns" --subresource status --type strategic -p "$patch"
