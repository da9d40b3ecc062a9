# Shared settings of the local control plane scripts (sourced, not run).
# shellcheck shell=bash
cluster_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/cluster/versions.env
. "$cluster_dir/versions.env"

# Binaries are kept outside the work tree so a fresh clone on the same machine reuses them.
WAO_CACHE=${WAO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whatsapp-operator}
# Runtime state (certs, etcd data, logs, pids, kubeconfig) of the one local plane.
WAO_CLUSTER_DIR=${WAO_CLUSTER_DIR:-$WAO_CACHE/cluster}

k8s_bin_dir() { echo "$WAO_CACHE/bin/kubernetes-$KUBERNETES_VERSION"; }
etcd_bin_dir() { echo "$WAO_CACHE/bin/etcd-$ETCD_VERSION"; }
kwok_bin_dir() { echo "$WAO_CACHE/bin/kwok-$KWOK_VERSION"; }
helm_bin_dir() { echo "$WAO_CACHE/bin/helm-$HELM_VERSION"; }

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
