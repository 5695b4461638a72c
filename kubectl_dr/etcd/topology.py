"""Where the etcd members are and how to talk to them.

Two ways to know: discovered from the etcd static pods of a kubeadm-style control plane (their mirror
pods in kube-system carry the member's exact command line and hostPath volumes), or given on the command
line (`--endpoints`, `--cacert`, `--cert`, `--key`) for an etcd we reach directly from this machine.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from kubectl_dr.errors import ApiError, ServerTimeout, ServerUnreachable, UsageError
from kubectl_dr.etcd.errors import DIRECT_HINT, TopologyError
from kubectl_dr.kube.client import Kube
from kubectl_dr.nodes.staticpods import parse_flags

__all__ = ["parse_flags"]  # re-exported: the etcd modules read flags through here

ETCD_NAMESPACE = "kube-system"


def pod_namespace(flag: str | None) -> str:
    """Where our pods on control-plane nodes go: they need hostNetwork and hostPath, which kube-system allows on
    kubeadm clusters; -n (`flag`) picks another namespace whose Pod Security level allows them."""
    return flag or ETCD_NAMESPACE


ETCD_SELECTOR = "component=etcd,tier=control-plane"
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
# kubeadm issues this client certificate next to the member's CA for probes and tools like ours: using
# it instead of the member's server key means we present a certificate made for being a client.
HEALTHCHECK_CERT = "healthcheck-client.crt"
HEALTHCHECK_KEY = "healthcheck-client.key"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class HostFile:
    """A file of the etcd static pod: where the pod sees it and where it is on the node."""

    role: str  # "ca", "cert" or "key"
    container_path: str
    host_path: str


@dataclass(frozen=True)
class StaticMember:
    """One etcd member as its static pod describes it."""

    node: str
    pod: str
    image: str
    ready: bool
    name: str
    client_url: str  # what a hostNetwork pod on the member's node dials
    advertise_client_urls: tuple[str, ...]
    listen_client_urls: tuple[str, ...]
    server_files: dict[str, str]  # the member's own --trusted-ca-file/--cert-file/--key-file (pod paths)
    client_files: tuple[HostFile, ...]  # CA, client certificate and key that our pods mount
    certs_volume: dict[str, str]  # the hostPath volume that holds them: name, hostPath, mountPath

    def file(self, role: str) -> HostFile:
        return next(f for f in self.client_files if f.role == role)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "pod": self.pod, "name": self.name, "image": self.image, "ready": self.ready,
            "clientURL": self.client_url, "advertiseClientURLs": list(self.advertise_client_urls),
            "listenClientURLs": list(self.listen_client_urls), "serverFiles": dict(self.server_files),
            "clientFiles": {f.role: {"path": f.container_path, "hostPath": f.host_path} for f in self.client_files},
            "certsVolume": dict(self.certs_volume),
        }


@dataclass(frozen=True)
class Discovered:
    """The members of a stacked control plane, found through the API."""

    members: tuple[StaticMember, ...]

    def member(self, node: str) -> StaticMember:
        for m in self.members:
            if m.node == node:
                return m
        known = ", ".join(m.node for m in self.members)
        raise TopologyError(f'node "{node}" runs no etcd static pod', hint=f"etcd members run on: {known}.")

    def candidates(self, node: str | None = None) -> list[StaticMember]:
        """The given node's member only, or every member: Ready ones first, in node order."""
        if node is not None:
            return [self.member(node)]
        return sorted(self.members, key=lambda m: (not m.ready, m.node))


@dataclass(frozen=True)
class Direct:
    """Endpoints given by the user; the etcd3 client talks to them from this machine."""

    endpoints: tuple[str, ...]
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


Topology = Discovered | Direct


def _urls(value: str | None) -> tuple[str, ...]:
    return tuple(u.strip() for u in (value or "").split(",") if u.strip())


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _host_file(pod: dict[str, Any], container: dict[str, Any], role: str, path: str) -> tuple[HostFile, dict[str, str]]:
    """Map a path inside the etcd container to the node through the hostPath volume that holds it."""
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    best: tuple[int, dict[str, Any], dict[str, Any]] | None = None
    for mount in container.get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", "")).rstrip("/") or "/"
        inside = path == mount_path or path.startswith(mount_path.rstrip("/") + "/")
        volume = volumes.get(mount.get("name"))
        if inside and volume and "hostPath" in volume and (best is None or len(mount_path) > best[0]):
            best = (len(mount_path), mount, volume)
    name = pod["metadata"]["name"]
    if best is None:
        raise TopologyError(
            f"etcd pod {ETCD_NAMESPACE}/{name}: no hostPath volume holds {path}, so no other pod can read it",
            hint="kubectl dr reads the certificates through the etcd pod's hostPath volumes (kubeadm layout). "
                 "Give --endpoints/--cacert/--cert/--key to talk to etcd directly instead.",
        )
    _, mount, volume = best
    mount_path = str(mount["mountPath"]).rstrip("/")
    host_root = str(volume["hostPath"]["path"]).rstrip("/")
    relative = path[len(mount_path):].lstrip("/")
    host = posixpath.join(host_root, relative) if relative else host_root
    volume_info = {"name": str(volume["name"]), "hostPath": host_root, "mountPath": mount_path}
    return HostFile(role, path, host), volume_info


def member_from_pod(pod: dict[str, Any]) -> StaticMember:
    """Read one etcd static (mirror) pod: node, image, client URL and the certificate files."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    name = str(meta.get("name", "?"))
    containers = spec.get("containers") or []
    container = next((c for c in containers if c.get("name") == "etcd"), containers[0] if containers else None)
    if container is None:
        raise TopologyError(f"etcd pod {ETCD_NAMESPACE}/{name} has no containers")
    flags = parse_flags(list(container.get("command") or []) + list(container.get("args") or []))
    advertise = _urls(flags.get("advertise-client-urls")) or _urls(
        (meta.get("annotations") or {}).get("kubeadm.kubernetes.io/etcd.advertise-client-urls"))
    listen = _urls(flags.get("listen-client-urls"))
    # Our pods run on the member's own node with hostNetwork: a loopback listener needs no node IP and no
    # route, and kubeadm's serving certificate names 127.0.0.1 and localhost.
    loopback = [u for u in listen if _is_loopback(u)]
    client_url = (loopback or list(advertise) or list(listen) or [""])[0]
    if not client_url or "0.0.0.0" in client_url:
        client_url = next((u for u in advertise if "0.0.0.0" not in u), client_url)
    if not client_url:
        raise TopologyError(f"etcd pod {ETCD_NAMESPACE}/{name} sets neither --advertise-client-urls nor "
                            "--listen-client-urls; cannot tell where its clients connect")
    server_files: dict[str, str] = {k: flags[k] for k in ("trusted-ca-file", "cert-file", "key-file") if k in flags}
    ca = flags.get("trusted-ca-file")
    if not ca:
        raise TopologyError(f"etcd pod {ETCD_NAMESPACE}/{name} has no --trusted-ca-file",
                            hint="Without client certificate authentication, use --endpoints to talk to it directly.")
    pki = posixpath.dirname(ca)
    ca_file, volume = _host_file(pod, container, "ca", ca)
    cert_file, _ = _host_file(pod, container, "cert", posixpath.join(pki, HEALTHCHECK_CERT))
    key_file, _ = _host_file(pod, container, "key", posixpath.join(pki, HEALTHCHECK_KEY))
    node = str(spec.get("nodeName") or "")
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or [])
    return StaticMember(
        node=node, pod=name, image=str(container.get("image", "")), ready=ready,
        name=flags.get("name", node), client_url=client_url, advertise_client_urls=advertise,
        listen_client_urls=listen, server_files=server_files, client_files=(ca_file, cert_file, key_file),
        certs_volume=volume,
    )


def _control_plane_nodes(kube: Kube) -> list[str] | None:
    """Names of the control-plane nodes, or None when we may not list nodes."""
    try:
        nodes = kube.get("/api/v1/nodes").get("items") or []
    except ApiError as exc:
        if exc.status == 403:
            return None
        raise
    return sorted(str(n["metadata"]["name"]) for n in nodes
                  if any(label in (n["metadata"].get("labels") or {}) for label in CONTROL_PLANE_LABELS))


def discover(kube: Kube) -> Discovered:
    """Find the members from the etcd mirror pods; say precisely why when there are none."""
    try:
        pods = kube.get(f"/api/v1/namespaces/{ETCD_NAMESPACE}/pods", labelSelector=ETCD_SELECTOR).get("items") or []
    except ApiError as exc:
        if exc.status == 403:
            exc.hint = ("kubectl dr finds etcd through its static pods: it needs to list pods in kube-system "
                        "(and create pods and pods/exec there). " + DIRECT_HINT)
        raise
    pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if pods:
        return Discovered(tuple(sorted((member_from_pod(p) for p in pods), key=lambda m: m.node)))
    nodes = _control_plane_nodes(kube)
    if nodes == []:
        raise TopologyError(
            "no control-plane nodes are visible: this looks like a managed Kubernetes service (EKS, GKE, AKS, …) "
            "whose etcd is run by the provider and is not reachable through the cluster",
            hint=DIRECT_HINT,
        )
    where = f"control-plane nodes {', '.join(nodes)} exist but" if nodes else "there are"
    raise TopologyError(
        f"{where} no etcd static pods in {ETCD_NAMESPACE} (labels {ETCD_SELECTOR}): etcd seems to run outside "
        "the cluster (an external etcd)",
        hint=DIRECT_HINT,
    )


def direct(endpoints: list[str], cacert: str | None, cert: str | None, key: str | None) -> Direct:
    """Check the connection flags for direct mode before anything connects."""
    urls = [u.strip() for e in endpoints for u in e.split(",") if u.strip()]
    if not urls:
        raise UsageError("--endpoints needs at least one URL, e.g. https://10.0.0.10:2379")
    for url in urls:
        parsed = urlparse(url if "://" in url else f"https://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"invalid etcd endpoint {url!r}: expected http(s)://HOST:PORT")
    if bool(cert) != bool(key):
        raise UsageError("--cert and --key go together: give both or neither")
    if cert and not cacert:
        raise UsageError("--cert/--key need --cacert (the CA that signed the etcd server certificate)")
    for flag, path in (("--cacert", cacert), ("--cert", cert), ("--key", key)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise UsageError(f"{flag} {path}: {exc.strerror}") from None
    normalized = tuple(u if "://" in u else f"https://{u}" for u in urls)
    return Direct(normalized, cacert, cert, key)


def resolve(kube: Callable[[], Kube], endpoints: list[str] | None, cacert: str | None, cert: str | None,
            key: str | None) -> Topology:
    """The members a command works on: the given --endpoints, else the static pods the API shows. ``kube``
    connects only when it is asked (a direct command never reads a kubeconfig)."""
    if endpoints:
        return direct(endpoints, cacert, cert, key)
    if cacert or cert or key:
        raise UsageError("--cacert, --cert and --key only apply with --endpoints")
    try:
        return discover(kube())
    except ApiError as exc:
        if exc.status < 500:
            raise
        exc.hint = API_DOWN_HINT
        raise
    except (ServerUnreachable, ServerTimeout) as exc:
        exc.hint = API_DOWN_HINT
        raise


API_DOWN_HINT = (
    "kubectl dr reaches etcd through the API server, which needs etcd's quorum to answer. If etcd lost it, "
    "ask the members directly from a machine that reaches them (a control-plane node): kubectl dr etcd status "
    "--endpoints https://NODE-IP:2379,... --cacert /etc/kubernetes/pki/etcd/ca.crt "
    "--cert /etc/kubernetes/pki/etcd/healthcheck-client.crt --key /etc/kubernetes/pki/etcd/healthcheck-client.key")
