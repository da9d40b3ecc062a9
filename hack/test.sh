#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, and integration tests against the local control
# plane (started here if it is not running, and stopped again at the end in that case).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
hack/deps.sh test

started_here=0
if ! hack/cluster/status.sh >/dev/null 2>&1; then
  started_here=1
  trap 'hack/cluster/down.sh' EXIT
fi
hack/cluster/up.sh >/dev/null
eval "$(hack/cluster/env.sh)"
export SCHEMATHESIS
SCHEMATHESIS=$(hack/tools.sh schemathesis)
[ "$started_here" = 1 ] || echo "using the running local plane (left running)" >&2

# Every crate of the workspace: the operator, the worker (with the real whatsapp-rust client on
# loopback), the contract they share.
cargo test --workspace "$@"
# Last and alone: it stops the shared apiserver for 30 s.
cargo test -p whatsapp-operator --test plane "$@" -- --ignored
