"""What a restore needs to know about each control-plane node, read from its static (mirror) pods.

kubeadm writes everything on the etcd and kube-apiserver command lines and probes: the member's name and
peer URL (for the new --initial-cluster), its data dir (a hostPath), the metrics listener whose /health and
/metrics the node script can reach without certificates, and the API server's /readyz.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from kubectl_dr.etcd.errors import TopologyError
from kubectl_dr.etcd.model import MemberInfo
from kubectl_dr.etcd.topology import ETCD_NAMESPACE, ETCD_SELECTOR, StaticMember, member_from_pod, parse_flags
from kubectl_dr.kube.client import Kube

APISERVER_SELECTOR = "component=kube-apiserver,tier=control-plane"
# kubeadm's static pod directory and the directory that holds it and the PKI.
KUBERNETES_DIR = "/etc/kubernetes"
DR_DIR = "/var/lib/kubectl-dr/restore"  # our directory on every control-plane node: records, status, snapshot
MANIFESTS_DIR = "/etc/kubernetes/manifests"


@dataclass(frozen=True)
class Target:
    member: StaticMember
    peer_urls: tuple[str, ...]
    data_dir: str  # on the node
    data_dir_in_pod: str
    metrics_url: str  # http://HOST:PORT of --listen-metrics-urls
    readyz_url: str
    initial_cluster: str  # what the member was started with (for the runbook and checks)

    @property
    def node(self) -> str:
        return self.member.node

    @property
    def name(self) -> str:
        return self.member.name

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "name": self.name, "image": self.member.image, "peerURLs": list(self.peer_urls),
                "dataDir": self.data_dir, "metricsURL": self.metrics_url, "readyzURL": self.readyz_url}


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    found = next((c for c in containers if c.get("name") == name), containers[0] if containers else None)
    if found is None:
        raise TopologyError(f"pod {ETCD_NAMESPACE}/{pod['metadata']['name']} has no containers")
    return dict(found)


def host_path_of(pod: dict[str, Any], container: dict[str, Any], path: str) -> str | None:
    """The node path of a container path, through the pod's hostPath volumes (longest mount wins)."""
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    best: tuple[int, str] | None = None
    for mount in container.get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", "")).rstrip("/") or "/"
        volume = volumes.get(mount.get("name")) or {}
        if "hostPath" not in volume:
            continue
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            rest = path[len(mount_path):].lstrip("/")
            host = str(volume["hostPath"]["path"]).rstrip("/") or "/"
            candidate = posixpath.join(host, rest) if rest else host
            if best is None or len(mount_path) > best[0]:
                best = (len(mount_path), candidate)
    return best[1] if best else None


def readyz(pod: dict[str, Any] | None, node: str) -> str:
    if pod is None:
        raise TopologyError(f"node {node} runs an etcd member but no kube-apiserver static pod",
                            hint="kubectl dr etcd restore works on kubeadm's stacked control planes, where every "
                                 "control-plane node runs both.")
    container = _container(pod, "kube-apiserver")
    probe = (container.get("readinessProbe") or container.get("livenessProbe") or {}).get("httpGet") or {}
    flags = parse_flags(list(container.get("command") or []) + list(container.get("args") or []))
    host = probe.get("host") or flags.get("advertise-address") or "127.0.0.1"
    port = probe.get("port") or flags.get("secure-port") or 6443
    scheme = str(probe.get("scheme") or "HTTPS").lower()
    host = f"[{host}]" if ":" in str(host) else host
    return f"{scheme}://{host}:{port}/readyz"


def targets(kube: Kube) -> list[Target]:
    """Every etcd member with its node's API server, in node order."""
    etcd_pods = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods", labelSelector=ETCD_SELECTOR).get("items") or []
    api_pods = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods",
                        labelSelector=APISERVER_SELECTOR).get("items") or []
    api_by_node = {str((p.get("spec") or {}).get("nodeName")): p for p in api_pods
                   if not (p.get("metadata") or {}).get("deletionTimestamp")}
    found = []
    for pod in etcd_pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        member = member_from_pod(pod)
        container = _container(pod, "etcd")
        flags = parse_flags(list(container.get("command") or []) + list(container.get("args") or []))
        where = f"etcd pod {ETCD_NAMESPACE}/{pod['metadata']['name']}"
        peers = tuple(u.strip() for u in flags.get("initial-advertise-peer-urls", "").split(",") if u.strip())
        if not peers:
            raise TopologyError(f"{where} has no --initial-advertise-peer-urls: cannot build the new cluster")
        data_in_pod = flags.get("data-dir") or f"/var/lib/etcd/{member.name}.etcd"
        data = host_path_of(pod, container, data_in_pod)
        if data is None or data.rstrip("/") in ("", "/"):
            raise TopologyError(f"{where}: its data dir {data_in_pod} is not on a hostPath volume",
                                hint="The restore swaps the data dir on the node; it must be a host directory.")
        metrics = [u.strip() for u in flags.get("listen-metrics-urls", "").split(",")
                   if u.strip().startswith("http://")]
        if not metrics:
            raise TopologyError(
                f"{where} has no plain-HTTP --listen-metrics-urls",
                hint="kubeadm sets --listen-metrics-urls=http://127.0.0.1:2381; the restore pod on the node checks "
                     "the new member's /health and /metrics there (it holds no etcd certificate).")
        parsed = urlparse(metrics[0])
        host = parsed.hostname or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        found.append(Target(
            member=member, peer_urls=peers, data_dir=data.rstrip("/"), data_dir_in_pod=data_in_pod,
            metrics_url=f"http://{host}:{parsed.port or 2381}", readyz_url=readyz(api_by_node.get(member.node),
                                                                                  member.node),
            initial_cluster=flags.get("initial-cluster", "")))
    if not found:
        raise TopologyError(f"no etcd static pods in {ETCD_NAMESPACE} ({ETCD_SELECTOR}): nothing to restore here",
                            hint="Without --endpoints, a restore (and its status, finalize, rollback) works through "
                                 "the etcd static pods of a kubeadm-style control plane. For an external etcd, "
                                 "`kubectl dr etcd restore --from ID --endpoints URL,… --cacert … --cert … --key …` "
                                 "restores through etcd's client API; to undo one, restore --from the safety "
                                 "snapshot it saved.")
    names = [t.name for t in found]
    if len(set(names)) != len(names):
        raise TopologyError(f"two etcd members share a name ({', '.join(sorted(names))})")
    return sorted(found, key=lambda t: t.node)


def initial_cluster(targets: list[Target]) -> str:
    """The one --initial-cluster every restored member gets: NAME=PEER_URL for each member."""
    return ",".join(f"{t.name}={u}" for t in targets for u in t.peer_urls)


def apiserver_nodes(kube: Kube) -> list[str]:
    """The nodes that run a kube-apiserver static pod now."""
    pods = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods", labelSelector=APISERVER_SELECTOR).get("items") or []
    return sorted({str((p.get("spec") or {}).get("nodeName")) for p in pods
                   if not (p.get("metadata") or {}).get("deletionTimestamp")})


def left_out(found: list[Target], api_nodes: list[str], members: list[MemberInfo] | None) -> list[str]:
    """What a restore of `found` would leave out, each said in full: a member etcd lists (when asked) that has
    no etcd static pod, and an API server on a node without one. Left out, that node keeps its API server (and
    its member) on the old data while the others swap, and the new cluster never forms."""
    names = {t.name for t in found}
    peers = {u.rstrip("/") for t in found for u in t.peer_urls}
    nodes = {t.node for t in found}
    out = [f"etcd member {m.name or '(not started)'} ({', '.join(m.peer_urls) or 'no peer URL'}) has no etcd static "
           "pod running" for m in members or []
           if m.name not in names and not {u.rstrip("/") for u in m.peer_urls} & peers]
    out += [f"node {n} runs a kube-apiserver static pod but no etcd static pod" for n in api_nodes if n not in nodes]
    return out
