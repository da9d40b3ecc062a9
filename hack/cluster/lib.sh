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

# Points kubectl at the local plane unless the caller chose a cluster.
use_local_kubeconfig_if_unset() {
  if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ] && [ -f "$WAO_CLUSTER_DIR/kubeconfig" ]; then
    export KUBECONFIG=$WAO_CLUSTER_DIR/kubeconfig
  fi
}

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

WAO_APISERVER_PORT=${WAO_APISERVER_PORT:-16443}
WAO_ETCD_PORT=${WAO_ETCD_PORT:-12379}
WAO_KCM_PORT=${WAO_KCM_PORT:-10357}
WAO_SCHEDULER_PORT=${WAO_SCHEDULER_PORT:-10359}
WAO_NODES=${WAO_NODES:-1}
COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

die() { log "error: $*"; exit 1; }
plane_url() { echo "https://127.0.0.1:$WAO_APISERVER_PORT"; }
pid_file() { echo "$WAO_CLUSTER_DIR/pids/$1.pid"; }

# pid_of NAME: the recorded pid, if that process still runs.
pid_of() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

any_running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null && return 0; done
  return 1
}

port_in_use() { [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]; }

plane_healthy() {
  local c certs=$WAO_CLUSTER_DIR/certs
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
  curl -sf --max-time 5 --cacert "$certs/ca.crt" --cert "$certs/admin.crt" --key "$certs/admin.key" \
    "$(plane_url)/readyz" >/dev/null
}

# launch NAME CMD...: starts CMD in its own session (so down.sh can end its whole group),
# logging to logs/NAME.log, and records its pid.
launch() {
  local name=$1; shift
  mkdir -p "$WAO_CLUSTER_DIR/cmd"
  # Kept so one component can be stopped and started again alone (fault tests).
  printf '%s\0' "$@" > "$WAO_CLUSTER_DIR/cmd/$name"
  setsid "$@" >>"$WAO_CLUSTER_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pid_file "$name")"
  log "started $name (pid $!)"
}

# stop_component NAME: SIGTERM its process group, SIGKILL after 10 s.
stop_component() {
  local pid
  pid=$(pid_of "$1") || { rm -f "$(pid_file "$1")"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$1 did not stop on SIGTERM; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pid_file "$1")"
}

# wait_until WHAT SECONDS CMD...: retries CMD until it succeeds; on timeout shows why.
wait_until() {
  local what=$1 timeout=$2 deadline; shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    local c
    for c in "${COMPONENTS[@]}"; do
      if [ -f "$(pid_file "$c")" ] && ! pid_of "$c" >/dev/null; then
        tail -n 30 "$WAO_CLUSTER_DIR/logs/$c.log" >&2 || true
        die "$c exited while waiting for $what (log: $WAO_CLUSTER_DIR/logs/$c.log)"
      fi
    done
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for $what"
    sleep 0.5
  done
}
