"""The cluster's kubeconfig (contexts loopback-admin and loopback-limited) and default RBAC policy."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.control.layout import Layout
from tests.cluster.control.pki import LIMITED_USER

CLUSTER = "loopback"
ADMIN_CONTEXT = "loopback-admin"
LIMITED_CONTEXT = "loopback-limited"

# Read-only on the usual workload and storage objects of `default`; no secrets, no exec, nothing
# cluster-scoped. Tests that need other rules write their own policy (the server re-reads the file).
DEFAULT_POLICY: dict[str, Any] = {
    "users": {
        LIMITED_USER: [
            {"apiGroups": [""], "namespaces": ["default"], "verbs": ["get", "list", "watch"],
             "resources": ["pods", "pods/log", "persistentvolumeclaims", "configmaps", "services",
                           "endpoints", "events", "serviceaccounts", "replicationcontrollers"]},
            {"apiGroups": ["apps"], "namespaces": ["default"], "verbs": ["get", "list", "watch"],
             "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"]},
            {"apiGroups": ["batch"], "namespaces": ["default"], "verbs": ["get", "list", "watch"],
             "resources": ["jobs", "cronjobs"]},
        ],
    },
}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(layout: Layout, api_port: int) -> dict[str, Any]:
    pki = layout.pki

    def user(name: str, stem: str) -> dict[str, Any]:
        return {"name": name, "user": {"client-certificate-data": _b64(pki / f"{stem}.crt"),
                                       "client-key-data": _b64(pki / f"{stem}.key")}}

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {
            "certificate-authority-data": _b64(pki / "ca.crt"),
            "server": f"https://127.0.0.1:{api_port}"}}],
        "users": [user(ADMIN_CONTEXT, "admin"), user(LIMITED_CONTEXT, "limited")],
        "contexts": [
            {"name": ADMIN_CONTEXT, "context": {"cluster": CLUSTER, "user": ADMIN_CONTEXT}},
            {"name": LIMITED_CONTEXT, "context": {"cluster": CLUSTER, "user": LIMITED_CONTEXT,
                                                  "namespace": "default"}},
        ],
        "current-context": ADMIN_CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(layout: Layout, api_port: int) -> None:
    layout.kubeconfig.write_text(yaml.safe_dump(kubeconfig(layout, api_port), sort_keys=False))
    layout.kubeconfig.chmod(0o600)


def write_policy(layout: Layout, policy: dict[str, Any]) -> None:
    tmp = layout.rbac_policy.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(policy, sort_keys=False))
    tmp.replace(layout.rbac_policy)


def ensure_default_policy(layout: Layout) -> None:
    if not layout.rbac_policy.exists():
        write_policy(layout, DEFAULT_POLICY)
