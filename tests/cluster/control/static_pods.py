"""kubeadm-style static pod manifests for the control-plane nodes, and the mirror pods built from them.

The manifests follow what `kubeadm init` writes (cmd/kubeadm/app/phases/etcd/local.go and
controlplane/manifests.go): same labels, annotations, probes, hostPath volumes and flags, with the ports
the loopback cluster really uses. The mirror pods follow the kubelet's (pkg/kubelet/pod/mirror_client.go):
named NAME-NODE, annotated with kubernetes.io/config.mirror / config.hash / config.source=file, owned
by the Node.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml

from tests.cluster.control.etcd_members import DATA_DIR, ETCD_IMAGE, PKI_DIR, Member, etcd_command
from tests.cluster.control.layout import Layout

KUBE_VERSION = "v1.33.0"
APISERVER_IMAGE = f"registry.k8s.io/kube-apiserver:{KUBE_VERSION}"


def _http_probe(port: int, path: str, *, failures: int, initial: int) -> dict[str, Any]:
    return {
        "failureThreshold": failures,
        "httpGet": {"host": "127.0.0.1", "path": path, "port": port, "scheme": "HTTP"},
        "initialDelaySeconds": initial, "periodSeconds": 10, "timeoutSeconds": 15,
    }


def _host_path(name: str, path: str, type_: str) -> dict[str, Any]:
    return {"hostPath": {"path": path, "type": type_}, "name": name}


def etcd_manifest(member: Member, members: list[Member]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {"kubeadm.kubernetes.io/etcd.advertise-client-urls": member.client_url},
            "creationTimestamp": None,
            "labels": {"component": "etcd", "tier": "control-plane"},
            "name": "etcd",
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [{
                "command": etcd_command(member, members),
                "image": ETCD_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "livenessProbe": _http_probe(
                    member.metrics_port, "/health?exclude=NOSPACE&serializable=true", failures=8, initial=10),
                "name": "etcd",
                "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}},
                "startupProbe": _http_probe(
                    member.metrics_port, "/health?serializable=false", failures=24, initial=10),
                "volumeMounts": [
                    {"mountPath": DATA_DIR, "name": "etcd-data"},
                    {"mountPath": PKI_DIR, "name": "etcd-certs"},
                ],
            }],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [
                _host_path("etcd-certs", PKI_DIR, "DirectoryOrCreate"),
                _host_path("etcd-data", DATA_DIR, "DirectoryOrCreate"),
            ],
        },
        "status": {},
    }


def apiserver_manifest(node: str, api_port: int, member: Member) -> dict[str, Any]:
    # A stacked kubeadm control plane talks to its local member only.
    flags = {
        "advertise-address": "127.0.0.1",
        "allow-privileged": "true",
        "authorization-mode": "Node,RBAC",
        "client-ca-file": "/etc/kubernetes/pki/ca.crt",
        "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "etcd-cafile": "/etc/kubernetes/pki/etcd/ca.crt",
        "etcd-certfile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "etcd-keyfile": "/etc/kubernetes/pki/apiserver-etcd-client.key",
        "etcd-servers": member.client_url,
        "secure-port": str(api_port),
        "service-account-issuer": "https://kubernetes.default.svc.cluster.local",
        "service-account-key-file": "/etc/kubernetes/pki/sa.pub",
        "service-account-signing-key-file": "/etc/kubernetes/pki/sa.key",
        "service-cluster-ip-range": "10.96.0.0/12",
        "storage-media-type": "application/json",
        "tls-cert-file": "/etc/kubernetes/pki/apiserver.crt",
        "tls-private-key-file": "/etc/kubernetes/pki/apiserver.key",
    }
    probe: dict[str, Any] = {
        "failureThreshold": 8,
        "httpGet": {"host": "127.0.0.1", "path": "/livez", "port": api_port, "scheme": "HTTPS"},
        "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 15,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": {
                "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": f"127.0.0.1:{api_port}",
            },
            "creationTimestamp": None,
            "labels": {"component": "kube-apiserver", "tier": "control-plane"},
            "name": "kube-apiserver",
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [{
                "command": ["kube-apiserver", *(f"--{k}={v}" for k, v in flags.items())],
                "image": APISERVER_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "livenessProbe": probe,
                "name": "kube-apiserver",
                "readinessProbe": {**probe, "httpGet": {**probe["httpGet"], "path": "/readyz"},
                                   "periodSeconds": 1, "failureThreshold": 3},
                "resources": {"requests": {"cpu": "250m"}},
                "volumeMounts": [
                    {"mountPath": "/etc/ssl/certs", "name": "ca-certs", "readOnly": True},
                    {"mountPath": "/etc/kubernetes/pki", "name": "k8s-certs", "readOnly": True},
                ],
            }],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [
                _host_path("ca-certs", "/etc/ssl/certs", "DirectoryOrCreate"),
                _host_path("k8s-certs", "/etc/kubernetes/pki", "DirectoryOrCreate"),
            ],
        },
        "status": {},
    }


def write_manifests(layout: Layout, members: list[Member], api_port: int) -> None:
    for member in members:
        d = layout.manifests(member.name)
        d.mkdir(parents=True, exist_ok=True)
        (d / "etcd.yaml").write_text(yaml.safe_dump(etcd_manifest(member, members), sort_keys=False))
        (d / "kube-apiserver.yaml").write_text(
            yaml.safe_dump(apiserver_manifest(member.name, api_port, member), sort_keys=False))


def read_manifests(layout: Layout, node: str) -> list[dict[str, Any]]:
    d = layout.manifests(node)
    return [yaml.safe_load(p.read_text()) for p in sorted(d.glob("*.yaml"))] if d.is_dir() else []


def mirror_pod(manifest: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The kubelet's mirror pod for a static pod manifest on `node`."""
    pod = copy.deepcopy(manifest)
    node_name = node["metadata"]["name"]
    # The kubelet hashes the pod it read from the file; its source annotations then mark the copy.
    digest = hashlib.md5(json.dumps(manifest, sort_keys=True).encode(), usedforsecurity=False)
    config_hash = digest.hexdigest()
    meta = pod["metadata"]
    meta.pop("creationTimestamp", None)
    meta["name"] = f"{meta['name']}-{node_name}"
    meta["annotations"] = {
        **meta.get("annotations", {}),
        "kubernetes.io/config.hash": config_hash,
        "kubernetes.io/config.mirror": config_hash,
        "kubernetes.io/config.seen": "",
        "kubernetes.io/config.source": "file",
    }
    meta["ownerReferences"] = [{
        "apiVersion": "v1", "controller": True, "kind": "Node",
        "name": node_name, "uid": node["metadata"]["uid"],
    }]
    spec = pod["spec"]
    spec["nodeName"] = node_name
    spec.setdefault("tolerations", [{"effect": "NoExecute", "operator": "Exists"}])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    pod.pop("status", None)
    return pod
