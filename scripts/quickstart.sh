#!/usr/bin/env bash
# One command for a newcomer: install kubectl-dr and what the sandbox needs, start the local sandbox
# cluster when no cluster is configured, and run kubectl dr against it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "--- installing the sandbox's Debian packages (etcd, bubblewrap, busybox)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    etcd-server etcd-client bubblewrap busybox-static util-linux >/dev/null
fi

echo "--- installing kubectl-dr into .venv"
python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[test]'

if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ]; then
  echo "--- no cluster configured: starting the local sandbox cluster in .cluster"
  python -m tests.cluster up --dir .cluster
  export KUBECONFIG="$PWD/.cluster/kubeconfig"
fi

echo "--- kubectl dr version"
kubectl-dr version
echo
echo "Next: . .venv/bin/activate; export KUBECONFIG=${KUBECONFIG:-~/.kube/config}; kubectl-dr --help"
