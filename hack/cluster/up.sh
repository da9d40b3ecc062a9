#!/usr/bin/env bash
# Starts the local control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok with fake nodes. Idempotent: a healthy plane is left alone, a
# half-started one is stopped and started clean. Every `up` of a stopped plane starts empty.
#   env: WAO_APISERVER_PORT (16443), WAO_ETCD_PORT (12379), WAO_NODES (1),
#        WAO_APISERVER_ARGS (extra kube-apiserver flags)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/cluster/lib.sh
. "$here/lib.sh"

start=$SECONDS
"$here/../deps.sh" plane
"$here/build.sh"

if plane_healthy; then
  log "already up ($(plane_url)); kubeconfig: $WAO_CLUSTER_DIR/kubeconfig"
  exit 0
fi
if any_running; then
  log "found a half-started plane; stopping it first"
  "$here/down.sh"
fi
# Pid files of a plane that was killed without down.sh (a reboot, a killed session) name no
# live process; left in place, wait_until would take them for components that just exited.
rm -f "$WAO_CLUSTER_DIR"/pids/*.pid

k8s=$(k8s_bin_dir)
certs=$WAO_CLUSTER_DIR/certs
mkdir -p "$certs" "$WAO_CLUSTER_DIR/logs" "$WAO_CLUSTER_DIR/pids"

for port in "$WAO_ETCD_PORT" "$((WAO_ETCD_PORT + 1))" "$WAO_APISERVER_PORT" "$WAO_KCM_PORT" "$WAO_SCHEDULER_PORT"; do
  if port_in_use "$port"; then
    die "port $port on 127.0.0.1 is held by another process ($(ss -ltnpH "sport = :$port" | head -1)); free it or set WAO_*_PORT"
  fi
done

gen_certs() {
  [ -f "$certs/admin.crt" ] && return
  log "generating certificates in $certs"
  local o=(-loglevel error)
  (
    cd "$certs"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=wao-local-ca" 2>/dev/null
    cat > apiserver.ext <<EXT
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    echo "extendedKeyUsage=clientAuth" > client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=wao-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
  )
  : "${o[@]}"
}

write_kubeconfig() {
  cat > "$WAO_CLUSTER_DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: wao-local
  cluster:
    server: $(plane_url)
    certificate-authority: $certs/ca.crt
users:
- name: wao-admin
  user:
    client-certificate: $certs/admin.crt
    client-key: $certs/admin.key
contexts:
- name: wao-local
  context: { cluster: wao-local, user: wao-admin }
current-context: wao-local
KC
}

gen_certs
write_kubeconfig
kc=$WAO_CLUSTER_DIR/kubeconfig

rm -rf "$WAO_CLUSTER_DIR/etcd"
launch etcd "$(etcd_bin_dir)/etcd" \
  --name wao --data-dir "$WAO_CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$WAO_ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$WAO_ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((WAO_ETCD_PORT + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((WAO_ETCD_PORT + 1))" \
  --initial-cluster "wao=http://127.0.0.1:$((WAO_ETCD_PORT + 1))" \
  --unsafe-no-fsync --quota-backend-bytes 8589934592 --log-level warn
wait_until etcd 30 curl -sf "http://127.0.0.1:$WAO_ETCD_PORT/health"

# Extra flags, split on spaces (the benchmark's audit log).
read -r -a apiserver_args <<< "${WAO_APISERVER_ARGS:-}"
launch kube-apiserver "$k8s/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$WAO_ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$WAO_APISERVER_PORT" \
  --tls-cert-file "$certs/apiserver.crt" --tls-private-key-file "$certs/apiserver.key" \
  --client-ca-file "$certs/ca.crt" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$certs/sa.pub" --service-account-signing-key-file "$certs/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --allow-privileged=false --max-requests-inflight 1000 --max-mutating-requests-inflight 500 \
  "${apiserver_args[@]}"
wait_until kube-apiserver 60 curl -sf --cacert "$certs/ca.crt" --cert "$certs/admin.crt" --key "$certs/admin.key" "$(plane_url)/readyz"

# Client rate limits raised (defaults: 20 QPS for the controller-manager, 50 for the scheduler),
# as kwokctl does for scale tests: at fleet scale the defaults, not the apiserver, would set the pace.
launch kube-controller-manager "$k8s/kube-controller-manager" \
  --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
  --bind-address 127.0.0.1 --secure-port "$WAO_KCM_PORT" \
  --root-ca-file "$certs/ca.crt" --service-account-private-key-file "$certs/sa.key" \
  --leader-elect=false --use-service-account-credentials=false \
  --enable-hostpath-provisioner --kube-api-qps 500 --kube-api-burst 1000 \
  --concurrent-gc-syncs 50 --concurrent-namespace-syncs 10
launch kube-scheduler "$k8s/kube-scheduler" \
  --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
  --bind-address 127.0.0.1 --secure-port "$WAO_SCHEDULER_PORT" --leader-elect=false \
  --kube-api-qps 500 --kube-api-burst 1000
stage_flags=()
for f in "$(kwok_bin_dir)"/stages/*.yaml; do stage_flags+=(--config "$f"); done
launch kwok "$(kwok_bin_dir)/kwok" \
  --kubeconfig "$kc" --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --server-address "" --node-ip 127.0.0.1 "${stage_flags[@]}"

kubectl_() { "$k8s/kubectl" --kubeconfig "$kc" "$@"; }

# Fake nodes without taints, so plain Pods schedule onto them.
for i in $(seq 0 $((WAO_NODES - 1))); do
  kubectl_ apply --server-side --field-manager wao-cluster -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: { kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0" }
  labels: { type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64 }
status:
  allocatable: { cpu: "1000", memory: 4Ti, pods: "20000" }
  capacity: { cpu: "1000", memory: 4Ti, pods: "20000" }
NODE
done

# The controller-manager's hostPath provisioner binds claims, as a cloud's CSI driver would.
kubectl_ apply --server-side --field-manager wao-cluster -f - >/dev/null <<SC
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: { storageclass.kubernetes.io/is-default-class: "true" }
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
SC

wait_until "nodes Ready" 60 kubectl_ wait --for=condition=Ready node --all --timeout=1s
wait_until "default ServiceAccount" 60 kubectl_ get serviceaccount default -n default
log "up in $((SECONDS - start))s: $(plane_url)"
echo "$kc"
