#!/usr/bin/env bash
# Stops every process of the local control plane (SIGTERM, then SIGKILL after 10 s).
# Safe when nothing, or only part, is running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/lib.sh"

stopped=0
for c in "${COMPONENTS[@]}"; do
  if pid_of "$c" >/dev/null; then stopped=$((stopped + 1)); fi
  stop_component "$c"
done
log "down (stopped $stopped processes)"
