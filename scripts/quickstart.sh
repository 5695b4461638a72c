#!/usr/bin/env bash
# One command for a newcomer: install kubectl-dr and what the sandbox needs, start the local sandbox
# cluster when no cluster is configured, and run kubectl dr against it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "--- installing the sandbox's Debian packages (etcd 3.4 and 3.5, bubblewrap, busybox, bash-static, age)"
  # The same packages as .ci/run: busybox and etcd 3.5 from Debian 13 through a low-priority source.
  if ! grep -qs trixie /etc/apt/sources.list.d/debian-13-busybox.sources; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
      /usr/share/keyrings/debian-archive-keyring.gpg > /etc/apt/sources.list.d/debian-13-busybox.sources
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/debian-13-busybox
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    etcd-server etcd-client bubblewrap util-linux bash-static age systemd e2fsprogs openssl \
    ceph-mon ceph-common python3-prettytable python3-rados >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static/trixie restic/trixie restic-rest-server/trixie >/dev/null
  if ! /opt/etcd-3.5/usr/bin/etcdutl version 2>/dev/null | grep -q "^etcdutl version: 3\.5\."; then
    etcd35=$(mktemp -d)
    (cd "$etcd35" && apt-get download -qq etcd-server/trixie etcd-client/trixie 2>/dev/null)
    rm -rf /opt/etcd-3.5 && mkdir -p /opt/etcd-3.5
    for deb in "$etcd35"/*.deb; do dpkg-deb -x "$deb" /opt/etcd-3.5; done
    rm -rf "$etcd35"
  fi
  # Azurite (the Azure Storage emulator, from npm) for the Azure Blob tests, as .ci/run installs it.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  AZURITE_VERSION=3.35.0  # as .ci/run pins it: the last Azurite that runs on Debian 12's Node.js 18
  if [ "$(azurite-blob --version 2>/dev/null || true)" != "$AZURITE_VERSION" ]; then
    npm install -g --silent --no-audit --no-fund "azurite@$AZURITE_VERSION" >/dev/null
  fi
fi

echo "--- installing kubectl-dr into .venv"
python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'

kubectl_bin=$(command -v kubectl || true)
[ -n "$kubectl_bin" ] || kubectl_bin=/usr/lib/google-cloud-sdk/bin/kubectl.1.33

if [ -n "${KUBECONFIG:-}" ] || [ -f "$HOME/.kube/config" ]; then
  # A real cluster is configured: look, change nothing.
  echo "--- your cluster"
  kubectl-dr version
  kubectl-dr backups list
  echo
  echo "Next: kubectl dr pvc backup CLAIM -n NAMESPACE; kubectl dr etcd snapshot; kubectl dr --help"
  exit 0
fi

echo "--- no cluster configured: starting the local sandbox cluster in .cluster"
python -m tests.cluster up --dir .cluster
export KUBECONFIG="$PWD/.cluster/kubeconfig"
export KUBECTL_DR_REPO="$PWD/.cluster/backups"

echo "--- a demo app: a StatefulSet with a volume, and some data in it"
"$kubectl_bin" apply -f - <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: demo}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      securityContext: {fsGroup: 2000}
      containers:
      - name: db
        image: busybox
        command: [sh, -c, "echo hello > /data/greeting; seq 1 100000 > /data/numbers; sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
YAML
"$kubectl_bin" -n demo rollout status statefulset/db --timeout=60s

echo "--- kubectl dr pvc backup data-db-0 -n demo"
kubectl-dr pvc backup data-db-0 -n demo
echo "--- kubectl dr pvc restore data-db-0 -n demo --from latest --yes"
kubectl-dr pvc restore data-db-0 -n demo --from latest --yes
echo "--- kubectl dr etcd snapshot"
kubectl-dr etcd snapshot
echo "--- kubectl dr backups list"
kubectl-dr backups list

echo
echo "The sandbox keeps running. To explore:"
echo "  . .venv/bin/activate; export KUBECONFIG=$KUBECONFIG KUBECTL_DR_REPO=$KUBECTL_DR_REPO; kubectl-dr --help"
echo "Stop it with: python -m tests.cluster down --dir .cluster"
