#!/usr/bin/env bash
# Prints the environment for the local plane: eval "$(hack/cluster/env.sh)"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/lib.sh"
printf 'export KUBECONFIG=%q\n' "$WAO_CLUSTER_DIR/kubeconfig"
printf 'export KUBECTL=%q\n' "$(k8s_bin_dir)/kubectl"
printf 'export HELM=%q\n' "$(helm_bin_dir)/helm"
printf 'export PATH=%q:"$PATH"\n' "$(k8s_bin_dir)"
