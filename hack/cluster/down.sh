#!/usr/bin/env bash
# Stops every process of the local control plane (SIGTERM, then SIGKILL after 10 s).
# Safe when nothing, or only part, is running.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/lib.sh"

stopped=0
for c in "${COMPONENTS[@]}"; do
  f=$(pid_file "$c")
  [ -f "$f" ] || continue
  if pid=$(pid_of "$c"); then
    # Each component leads its own process group (setsid), so this ends its children too.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$c did not stop on SIGTERM; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    stopped=$((stopped + 1))
  fi
  rm -f "$f"
done
log "down (stopped $stopped processes)"
