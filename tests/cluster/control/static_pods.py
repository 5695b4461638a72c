"""kubeadm-style static pod manifests for the control-plane nodes, and the mirror pods built from them.

The manifests follow what `kubeadm init` writes (cmd/kubeadm/app/phases/etcd/local.go and
controlplane/manifests.go): same labels, annotations, probes, hostPath volumes and flags, with the ports
the loopback cluster really uses. The kubelet runs them (node/static_pods.py): etcd.yaml is the real etcd
member; kube-apiserver, kube-controller-manager and kube-scheduler gate the server process's parts. The
mirror pods follow the kubelet's (pkg/kubelet/pod/mirror_client.go): named NAME-NODE, annotated with
kubernetes.io/config.mirror / config.hash / config.source=file, owned by the Node.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml

from tests.cluster import etcd_versions
from tests.cluster.control.etcd_members import DATA_DIR, PKI_DIR, Member, etcd_command
from tests.cluster.control.layout import Layout

KUBE_VERSION = "v1.33.0"
APISERVER_IMAGE = f"registry.k8s.io/kube-apiserver:{KUBE_VERSION}"
CONTROLLER_MANAGER_IMAGE = f"registry.k8s.io/kube-controller-manager:{KUBE_VERSION}"
SCHEDULER_IMAGE = f"registry.k8s.io/kube-scheduler:{KUBE_VERSION}"


def _http_probe(port: int, path: str, *, failures: int, initial: int) -> dict[str, Any]:
    return {
        "failureThreshold": failures,
        "httpGet": {"host": "127.0.0.1", "path": path, "port": port, "scheme": "HTTP"},
        "initialDelaySeconds": initial, "periodSeconds": 10, "timeoutSeconds": 15,
    }


def _host_path(name: str, path: str, type_: str) -> dict[str, Any]:
    return {"hostPath": {"path": path, "type": type_}, "name": name}


def etcd_manifest(member: Member, members: list[Member], etcd_version: str = etcd_versions.DEFAULT
                  ) -> dict[str, Any]:
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
                "image": etcd_versions.VERSIONS[etcd_version].image,
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


def apiserver_manifest(node: str, api_port: int, etcd_servers: str) -> dict[str, Any]:
    # A stacked kubeadm control plane talks to its local member only; with an external etcd, to every member.
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
        "etcd-servers": etcd_servers,
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


def _component_manifest(component: str, image: str, port: int, flags: dict[str, str], kubeconfig: str
                        ) -> dict[str, Any]:
    """kube-controller-manager / kube-scheduler as kubeadm writes them (controlplane/manifests.go)."""
    probe: dict[str, Any] = {
        "failureThreshold": 8,
        "httpGet": {"host": "127.0.0.1", "path": "/healthz", "port": port, "scheme": "HTTPS"},
        "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 15,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"creationTimestamp": None, "labels": {"component": component, "tier": "control-plane"},
                     "name": component, "namespace": "kube-system"},
        "spec": {
            "containers": [{
                "command": [component, *(f"--{k}={v}" for k, v in flags.items())],
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "livenessProbe": probe,
                "name": component,
                "resources": {"requests": {"cpu": "200m" if component == "kube-controller-manager" else "100m"}},
                "startupProbe": {**probe, "failureThreshold": 24},
                "volumeMounts": [{"mountPath": kubeconfig, "name": "kubeconfig", "readOnly": True}],
            }],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"hostPath": {"path": kubeconfig, "type": "FileOrCreate"}, "name": "kubeconfig"}],
        },
        "status": {},
    }


def controller_manager_manifest() -> dict[str, Any]:
    conf = "/etc/kubernetes/controller-manager.conf"
    return _component_manifest("kube-controller-manager", CONTROLLER_MANAGER_IMAGE, 10257, {
        "authentication-kubeconfig": conf, "authorization-kubeconfig": conf, "bind-address": "127.0.0.1",
        "client-ca-file": "/etc/kubernetes/pki/ca.crt", "cluster-name": "kubernetes",
        "cluster-signing-cert-file": "/etc/kubernetes/pki/ca.crt",
        "cluster-signing-key-file": "/etc/kubernetes/pki/ca.key", "controllers": "*,bootstrapsigner,tokencleaner",
        "kubeconfig": conf, "leader-elect": "true", "root-ca-file": "/etc/kubernetes/pki/ca.crt",
        "service-account-private-key-file": "/etc/kubernetes/pki/sa.key", "use-service-account-credentials": "true",
    }, conf)


def scheduler_manifest() -> dict[str, Any]:
    conf = "/etc/kubernetes/scheduler.conf"
    return _component_manifest("kube-scheduler", SCHEDULER_IMAGE, 10259, {
        "authentication-kubeconfig": conf, "authorization-kubeconfig": conf, "bind-address": "127.0.0.1",
        "kubeconfig": conf, "leader-elect": "true",
    }, conf)


MANIFEST_FILES = ("etcd.yaml", "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml")


def write_manifests(layout: Layout, members: list[Member], api_port: int,
                    etcd_version: str = etcd_versions.DEFAULT, *, external_on: list[str] | None = None) -> None:
    """kubeadm's manifests on each control-plane node: stacked (a member per node, named as the node), or,
    with ``external_on`` (the control-plane nodes), no etcd.yaml and API servers that use every member."""
    if external_on is not None:
        every = ",".join(m.client_url for m in members)
        for node in external_on:
            _write(layout, node, {"kube-apiserver.yaml": apiserver_manifest(node, api_port, every),
                                  "kube-controller-manager.yaml": controller_manager_manifest(),
                                  "kube-scheduler.yaml": scheduler_manifest()})
        return
    for m in members:
        _write(layout, m.name, {"etcd.yaml": etcd_manifest(m, members, etcd_version),
                                "kube-apiserver.yaml": apiserver_manifest(m.name, api_port, m.client_url),
                                "kube-controller-manager.yaml": controller_manager_manifest(),
                                "kube-scheduler.yaml": scheduler_manifest()})


def _write(layout: Layout, node: str, docs: dict[str, dict[str, Any]]) -> None:
    d = layout.manifests(node)
    d.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (d / name).write_text(yaml.safe_dump(doc, sort_keys=False))


def read_manifests(layout: Layout, node: str) -> list[dict[str, Any]]:
    d = layout.manifests(node)
    return [yaml.safe_load(p.read_text()) for p in sorted(d.glob("*.yaml"))] if d.is_dir() else []


def mirror_pod(manifest: dict[str, Any], node: dict[str, Any], *, config_hash: str | None = None
               ) -> dict[str, Any]:
    """The kubelet's mirror pod for a static pod manifest on `node`."""
    pod = copy.deepcopy(manifest)
    node_name = node["metadata"]["name"]
    # The kubelet hashes the pod it read from the file; its source annotations then mark the copy.
    if config_hash is None:
        config_hash = hashlib.md5(json.dumps(manifest, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
    meta = pod["metadata"]
    meta.pop("creationTimestamp", None)
    meta["name"] = f"{meta['name']}-{node_name}"
    meta["namespace"] = meta.get("namespace") or "default"
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
