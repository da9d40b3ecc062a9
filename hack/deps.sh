#!/usr/bin/env bash
# Installs, from Debian's packages, the commands a script needs when any is missing, so
# hack/run.sh, hack/test.sh and bench/run.sh work on a fresh machine. Installs nothing when
# every command is there. Go and Rust are not installed here (the plane is built with the
# local Go toolchain); their absence is reported.
#   hack/deps.sh plane    openssl, curl, ss, setsid: starting the local control plane
#   hack/deps.sh test     the plane's, and promtool, prometheus, node, chromium: the tests
#   hack/deps.sh bench    the plane's: the benchmark (its load generator is built from Go)
#   hack/deps.sh image    umoci, skopeo, musl-gcc, strip: the images (hack/image.sh)
set -euo pipefail

# command:package
plane=(openssl:openssl curl:curl ss:iproute2 setsid:util-linux)
case "${1:-}" in
  plane) wanted=("${plane[@]}") ;;
  image) wanted=(umoci:umoci skopeo:skopeo musl-gcc:musl-tools strip:binutils) ;;
  test) wanted=("${plane[@]}" promtool:prometheus prometheus:prometheus node:nodejs chromium:chromium
    umoci:umoci skopeo:skopeo musl-gcc:musl-tools strip:binutils) ;;
  bench) wanted=("${plane[@]}") ;;
  *) echo "usage: $0 plane|test|bench|image" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "Go (1.26+) is required to build the control plane" >&2; exit 1; }
command -v cargo >/dev/null || { echo "Rust (cargo) is required" >&2; exit 1; }

missing=()
for pair in "${wanted[@]}"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
# One package may bring several commands (prometheus brings promtool).
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "missing commands; install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
