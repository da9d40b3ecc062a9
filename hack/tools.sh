#!/usr/bin/env bash
# Installs (once, cached by version) a tool the tests use, and prints its path.
#   hack/tools.sh schemathesis
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/cluster/lib.sh"

SCHEMATHESIS_VERSION=4.32.5

case "${1:-}" in
  schemathesis)
    venv=$WAO_CACHE/tools/schemathesis-$SCHEMATHESIS_VERSION
    if [ ! -x "$venv/bin/st" ]; then
      log "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv"
      rm -rf "$venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    echo "$venv/bin/st"
    ;;
  *) echo "usage: $0 schemathesis" >&2; exit 2 ;;
esac
