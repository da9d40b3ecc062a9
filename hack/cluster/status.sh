#!/usr/bin/env bash
# Says which components of the local plane run; exits non-zero unless all run and /readyz is ok.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/lib.sh"
for c in "${COMPONENTS[@]}"; do
  if pid=$(pid_of "$c"); then echo "$c: running (pid $pid)"; else echo "$c: stopped"; fi
done
if plane_healthy; then echo "readyz: ok ($(plane_url))"; else echo "readyz: not ready"; exit 1; fi
