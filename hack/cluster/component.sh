#!/usr/bin/env bash
# Stops or starts one component of the running local plane, with the flags `up` gave it.
# For fault tests: hack/cluster/component.sh stop kube-apiserver; ...; start kube-apiserver
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/lib.sh"
[ $# -eq 2 ] || { echo "usage: $0 stop|start COMPONENT" >&2; exit 2; }
action=$1 name=$2
case "$action" in
  stop) stop_component "$name"; log "stopped $name" ;;
  start)
    pid_of "$name" >/dev/null && { log "$name already runs"; exit 0; }
    [ -f "$WAO_CLUSTER_DIR/cmd/$name" ] || die "no recorded command for $name; run up.sh first"
    mapfile -d '' -t cmd < "$WAO_CLUSTER_DIR/cmd/$name"
    launch "$name" "${cmd[@]}"
    ;;
  *) echo "usage: $0 stop|start COMPONENT" >&2; exit 2 ;;
esac
