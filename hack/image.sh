#!/usr/bin/env bash
# Builds the operator's and the worker's images without a container daemon (umoci + skopeo,
# from Debian's packages), from the same Containerfile stages docker/podman build elsewhere:
# the binaries of hack/build-static.sh, and each stage's labels, user, entrypoint and command.
# Writes OCI archives named for the chart's default images:
#   target/images/whatsapp-operator-<version>.tar  (ghcr.io/whatsapp-operator/whatsapp-operator:<version>)
#   target/images/whatsapp-worker-<version>.tar    (ghcr.io/whatsapp-operator/whatsapp-worker:<version>)
# An archive whose binary and Containerfile did not change is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
hack/deps.sh image

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
registry=${IMAGE_REGISTRY:-ghcr.io/whatsapp-operator}
out=$root/target/images
mkdir -p "$out"
bins=$out/bin
hack/build-static.sh "$bins"

for stage in operator worker; do
  name=whatsapp-$stage
  archive=$out/$name-$version.tar
  stamp=$out/.$name-$version.inputs
  inputs=$(sha256sum "$bins/$name" Containerfile | sha256sum | cut -d' ' -f1)
  if [ -f "$archive" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ]; then
    echo "$archive: unchanged" >&2
    continue
  fi
  # The stage's image config, read from the Containerfile: umoci config arguments, one a line.
  mapfile -t config < <(python3 - "$stage" "$version" <<'PY'
import json, re, sys
stage, version = sys.argv[1], sys.argv[2]
text = open("Containerfile").read().replace("\\\n", " ")
body = re.split(r"^FROM ", text, flags=re.M)
block = next(b for b in body if re.match(rf"scratch AS {stage}\b", b))
for k, v in re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', block):
    print(f"--config.label={k}={v.replace('${VERSION}', version)}")
print("--config.user=" + re.search(r"^USER (\S+)", block, re.M).group(1))
for kind in ("ENTRYPOINT", "CMD"):
    m = re.search(rf"^{kind} (\[.*\])", block, re.M)
    for arg in json.loads(m.group(1)) if m else []:
        print(f"--config.{kind.lower()}={arg}")
PY
)
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/rootfs/usr/local/bin" "$work/rootfs/tmp"
  chmod 1777 "$work/rootfs/tmp"
  cp "$bins/$name" "$work/rootfs/usr/local/bin/$name"
  layout=$work/layout
  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci insert --image "$layout:$version" "$work/rootfs" /
  umoci config --image "$layout:$version" "${config[@]}" --author "whatsapp-operator hack/image.sh"
  rm -f "$archive"
  skopeo copy --quiet "oci:$layout:$version" "oci-archive:$archive:$registry/$name:$version"
  echo "$inputs" > "$stamp"
  rm -rf "$work"
  trap - EXIT
  echo "$archive ($registry/$name:$version): $(du -h "$archive" | cut -f1)" >&2
done
