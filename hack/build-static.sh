#!/usr/bin/env bash
# Builds the static (musl) release binaries the images hold, exactly as Cargo.lock pins them,
# and copies them, stripped, into OUT_DIR. The Containerfile's build stage and hack/image.sh
# both call this, so an image built with docker/podman and one built here hold the same build.
#   hack/build-static.sh OUT_DIR   -> OUT_DIR/whatsapp-operator, OUT_DIR/whatsapp-worker
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
out=$1
target=x86_64-unknown-linux-musl
command -v musl-gcc >/dev/null || { echo "musl-gcc is missing (Debian: musl-tools)" >&2; exit 1; }
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
# C code (jemalloc, ring, the bundled SQLite) is compiled for musl too.
export CC_x86_64_unknown_linux_musl=musl-gcc
cargo build --release --locked --target "$target" \
  -p whatsapp-operator -p whatsapp-worker --bin whatsapp-operator --bin whatsapp-worker
mkdir -p "$out"
dir=${CARGO_TARGET_DIR:-$root/target}/$target/release
for bin in whatsapp-operator whatsapp-worker; do
  strip -o "$out/$bin" "$dir/$bin"
done
