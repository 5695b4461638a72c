"""`kubectl dr control-plane backup`: /etc/kubernetes of one control-plane node (and the encryption-at-rest
config wherever it is), read through a pod with read-only hostPath mounts, into the repository.

Each file is one part; the pod lists every file with its mode, owner, size and SHA-256 first, and each
file streamed back must have exactly that size and digest. The repository writes parts 0600 (and
encrypts them with age when it has recipients); the manifest records path, mode, owner and digest of
every file, which files a restore writes back, and the shared files that were missing on the node.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubectl_dr.console import Console
from kubectl_dr.controlplane import files
from kubectl_dr.errors import ApiError, DrError, VerificationError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.exec import open_exec
from kubectl_dr.kube.identity import identity_for_backup
from kubectl_dr.nodes import HostMount, HostPod, start_host_pod
from kubectl_dr.nodes.hostpod import HOST_ROOT
from kubectl_dr.nodes.staticpods import command_of, host_path, parse_flags
from kubectl_dr.repo import Manifest, Repository
from kubectl_dr.runs import Heartbeat
from kubectl_dr.session import Session

BACKUP_TYPE = "control-plane"
NAMESPACE = "kube-system"
APISERVER_SELECTOR = "component=kube-apiserver,tier=control-plane"
ENCRYPTION_FLAG = "encryption-provider-config"
UNENCRYPTED_WARNING = (
    "warning: this control-plane backup is NOT encrypted: it holds the cluster's CA and service-account private "
    "keys (anyone with them can mint credentials for the cluster) and the encryption-at-rest keys. Keep it "
    "private, or back up with --encrypt-to RECIPIENT.")


@dataclass(frozen=True)
class StoredFile:
    """One file of a control-plane backup as its table shows it (the kubeadm-config ConfigMap has no mode)."""

    path: str
    mode: str
    owner: str
    size: int
    sha256: str
    restore: bool

    @classmethod
    def of(cls, record: dict[str, Any]) -> StoredFile:
        owner = f"{record['uid']}:{record['gid']}" if "uid" in record else ""
        return cls(record["path"], record.get("mode", ""), owner, record["size"], record["sha256"],
                   bool(record.get("restore")))


@dataclass
class BackupResult:
    manifest: Manifest
    location: str
    seconds: float
    repository: str = ""
    node: str = ""
    files: list[StoredFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # The keys of every command's result: repository, location, size in bytes, seconds.
        return {**self.manifest.to_dict(), "repository": self.repository, "location": self.location,
                "size": self.manifest.size, "seconds": round(self.seconds, 3)}


def control_plane_nodes(kube: Kube) -> list[tuple[str, dict[str, Any]]]:
    """(node, kube-apiserver mirror pod) for every node that runs kube-apiserver, in node order."""
    try:
        found = kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=APISERVER_SELECTOR)
    except ApiError as exc:
        if exc.status == 403:
            exc.hint = ("kubectl dr finds control-plane nodes through the kube-apiserver static pods: it needs to list "
                        "pods in kube-system (and create pods and pods/exec there); see the README's RBAC.")
        raise
    apiservers = [(str((p.get("spec") or {}).get("nodeName")), p) for p in found.get("items") or []
                  if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return sorted(apiservers, key=lambda item: item[0])


def pick_node(kube: Kube, node: str | None) -> tuple[str, dict[str, Any] | None]:
    nodes = control_plane_nodes(kube)
    if node is None:
        if not nodes:
            raise DrError("no kube-apiserver static pods in kube-system: this does not look like a kubeadm control "
                          "plane", hint="Give the node with --node.")
        return nodes[0]
    pods.require_node(kube, node)
    return node, next((p for n, p in nodes if n == node), None)


def encryption_config_path(apiserver: dict[str, Any] | None) -> str | None:
    if apiserver is None:
        return None
    inside = parse_flags(command_of(apiserver, "kube-apiserver")).get(ENCRYPTION_FLAG)
    return host_path(apiserver, inside, "kube-apiserver") if inside else None


def backup(session: Session, repo: Repository, *, node: str | None, namespace: str, helper_image: str,
           root: str = files.KUBERNETES_DIR, encrypted_elsewhere: bool = False) -> BackupResult:
    """`encrypted_elsewhere`: the repository is a private staging place on the way into an encrypted one (a
    restic repository), so no warning that the backup is not encrypted."""
    started = time.monotonic()
    kube, console = session.kube, session.console
    node, apiserver = pick_node(kube, node)
    encryption = encryption_config_path(apiserver)
    mounts = [HostMount(root)]
    if encryption and not encryption.startswith(root.rstrip("/") + "/"):
        mounts.append(HostMount(posixpath.dirname(encryption)))
    if not repo.recipients and not encrypted_elsewhere:
        console.warn(UNENCRYPTED_WARNING)
    console.say(f"reading {root} of node {node} through a pod with read-only mounts")
    heartbeat = Heartbeat(console.warn)
    pod = start_host_pod(kube, node=node, namespace=namespace, mounts=mounts, image=helper_image,
                         purpose="control-plane-backup", run=session.run, heartbeat=heartbeat,
                         console=console)
    try:
        entries = _list(pod, root, encryption)
        result = _store(kube, console, repo, pod, node, root, entries, encryption, started)
        pod.helper.delete(wait=True)
        return result
    finally:
        heartbeat.stop()


def _list(pod: HostPod, root: str, encryption: str | None) -> list[files.Entry]:
    explicit = [pod.path(p) for p in [*(posixpath.join(root, d) for d in files.DIRECTORIES), *files.shared_paths(root)]]
    if encryption:
        explicit.append(pod.path(encryption))
    patterns = [posixpath.join(pod.path(root), p) for p in files.KEPT_PATTERNS]
    out = pod.sh(files.listing_script(explicit, patterns), f"listing {root}")
    return files.parse_listing(out.decode(errors="replace"), HOST_ROOT)


def _kubeadm_config(kube: Kube, console: Console) -> bytes | None:
    """kubeadm's ClusterConfiguration lives in the kubeadm-config ConfigMap, not on disk."""
    try:
        cm = kube.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/kubeadm-config")
    except ApiError as exc:
        if exc.status in (403, 404):
            console.say(f"note: the kubeadm-config ConfigMap is not in the backup ({exc.reason or exc.status})")
            return None
        raise
    return yaml.safe_dump(cm.get("data") or {}, sort_keys=True).encode()


def _store(kube: Kube, console: Console, repo: Repository, pod: HostPod, node: str, root: str,
           entries: list[files.Entry], encryption: str | None, started: float) -> BackupResult:
    shared = set(files.shared_paths(root))
    restore = shared | ({encryption} if encryption else set())
    missing = sorted(e.path for e in entries if e.kind == "missing" and e.path in shared)
    if encryption and any(e.kind == "missing" and e.path == encryption for e in entries):
        raise DrError(f"kube-apiserver on node {node} names --{ENCRYPTION_FLAG}, but {encryption} is not there")
    for e in entries:
        if e.kind == "link":
            console.say(f"note: {e.path} is a symbolic link to {e.target}; recorded, not followed")
    if missing:
        console.warn(f"node {node} lacks shared files a rebuilt node needs: {', '.join(missing)}")
    records: list[dict[str, Any]] = []
    source = {"cluster": kube.resolved.server, "node": node}
    cluster = identity_for_backup(kube, console.say)
    with repo.create(BACKUP_TYPE, source, name_hint=node, cluster=cluster) as writer:
        for index, entry in enumerate(e for e in entries if e.kind == "file"):
            name = files.part_name(index, entry.path)
            data = _fetch(pod, entry)
            part = writer.open_part(name, size_hint=len(data))
            part.write(data)
            written = part.close()
            if written.size != entry.size or written.sha256 != entry.sha256:
                raise VerificationError(f"{entry.path}: stored {written.size} bytes with SHA-256 {written.sha256}, "
                                        f"the node has {entry.size} with {entry.sha256}")
            role = ("encryption-config" if entry.path == encryption else
                    "shared" if entry.path in shared else "kept")
            records.append({**entry.to_dict(), "part": name, "role": role, "restore": entry.path in restore})
        extra: list[dict[str, Any]] = []
        kubeadm = _kubeadm_config(kube, console)
        if kubeadm is not None:
            part = writer.open_part("kubeadm-config.yaml")
            part.write(kubeadm)
            written = part.close()
            extra.append({"kind": "api", "path": "configmap kube-system/kubeadm-config", "part": "kubeadm-config.yaml",
                          "size": written.size, "sha256": written.sha256, "role": "kubeadm-config", "restore": False})
        # The same list once more as a part: encrypted with the others when the backup is, so that a restore
        # of an encrypted backup takes which part holds which file from it rather than from the manifest.
        listing = {"root": root, "files": records, "encryptionConfig": encryption}
        with writer.open_part(files.INDEX_PART) as index_part:
            index_part.write(json.dumps(listing, indent=1, sort_keys=True).encode())
        details = {
            "node": node, "root": root, "files": records + extra, "index": files.INDEX_PART,
            "directories": [e.to_dict() for e in entries if e.kind == "dir"],
            "links": [e.to_dict() for e in entries if e.kind == "link"],
            "missingShared": missing, "encryptionConfig": encryption, "encrypted": bool(repo.recipients),
            "pod": f"{pod.helper.namespace}/{pod.name}",
        }
        manifest = writer.commit(details)
    return BackupResult(manifest, repo.backup_location(manifest.id), time.monotonic() - started, repo.location,
                        node, [StoredFile.of(r) for r in records + extra])


def _fetch(pod: HostPod, entry: files.Entry) -> bytes:
    out = bytearray()
    stream = open_exec(pod.kube, pod.helper.namespace, pod.helper.name, ["cat", pod.path(entry.path)],
                       container="host")
    result = stream.run(stdout=out.extend)
    result.check(f"reading {entry.path} on node {pod.node}")
    data = bytes(out)
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise VerificationError(f"reading {entry.path} from node {pod.node}: got {len(data)} bytes with SHA-256 "
                                f"{hashlib.sha256(data).hexdigest()}, the pod listed {entry.size} with {entry.sha256} "
                                "(did the file change while it was read?)")
    return data
