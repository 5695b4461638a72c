"""Which files of a kubeadm control-plane node are kept, which are written back, and what kubeadm makes anew.

Only the shared set goes back on restore: the cluster CA, the service-account signing keys, the
front-proxy CA and the etcd CA. Everything else under /etc/kubernetes is derived from them (or from the
node's own name and address) and `kubeadm join --control-plane` or `kubeadm init phase …` writes it
again; restoring another node's serving certificates or kubeconfigs would be wrong for the new node.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any

KUBERNETES_DIR = "/etc/kubernetes"
# What a restore may write, and how: this table, never the backup's manifest, decides the path, mode and
# owner of every file written as root on a node (a repository's writer must not choose them). The modes
# are kubeadm's own: keyutil.WriteKey writes private keys and sa.pub 0600, certutil.WriteCert writes
# certificates 0644, both create their directories 0755; everything owned by root.
SHARED_MODES = {
    "pki/ca.crt": 0o644, "pki/ca.key": 0o600,
    "pki/sa.key": 0o600, "pki/sa.pub": 0o600,
    "pki/front-proxy-ca.crt": 0o644, "pki/front-proxy-ca.key": 0o600,
    "pki/etcd/ca.crt": 0o644, "pki/etcd/ca.key": 0o600,
}
SHARED = tuple(SHARED_MODES)
DIRECTORY_MODES = {"pki": 0o755, "pki/etcd": 0o755}
DIRECTORIES = tuple(DIRECTORY_MODES)
# The encryption-at-rest config holds the keys to every Secret: readable by root only. Any directory
# below /etc/kubernetes it needs that kubeadm does not make is created 0700.
ENCRYPTION_CONFIG_MODE = 0o600
OTHER_DIRECTORY_MODE = 0o700
OWNER = (0, 0)
# Where the encryption config may be written: below KUBERNETES_DIR, never where the kubelet or kubeadm
# takes files from (a static pod manifest is a pod run as root).
NOT_FOR_ENCRYPTION_CONFIG = ("manifests", "pki")
# The list of files of a backup, stored as one more part (encrypted with the others): an encrypted
# backup's restore takes which part holds which file from it, not from the plain-text manifest.
INDEX_PART = "index.json"
# Kept for reference and for a hand-made rebuild (their content says how the node was set up).
KEPT_PATTERNS = ("manifests/*", "*.conf", "*.yaml", "*.yml")
REGENERATED = (
    "Not written back, because kubeadm makes them for the node it runs on: the API server, kubelet-client, "
    "etcd-client and front-proxy-client certificates, the etcd server, peer and healthcheck certificates, the "
    "kubeconfig files (admin.conf, super-admin.conf, controller-manager.conf, scheduler.conf, kubelet.conf) and "
    "the static pod manifests. Run `kubeadm join --control-plane` (or `kubeadm init phase certs all`, "
    "`kubeconfig all` and `control-plane all`) on the node next; they are in the backup if you need to compare.")


@dataclass(frozen=True)
class Entry:
    """One entry of the node's listing: a regular file (with its digest), a directory, a link, or missing."""

    kind: str  # "file", "dir", "link", "missing"
    path: str  # host path
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    sha256: str = ""
    target: str = ""  # a link's target

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        if self.kind in ("file", "dir"):
            out.update(mode=f"{self.mode:04o}", uid=self.uid, gid=self.gid)
        if self.kind == "file":
            out.update(size=self.size, sha256=self.sha256)
        if self.kind == "link":
            out["target"] = self.target
        return out


def shared_paths(root: str = KUBERNETES_DIR) -> list[str]:
    return [posixpath.join(root, p) for p in SHARED]


def encryption_config_problem(path: str) -> str | None:
    """Why the encryption config cannot be written to ``path`` (None: it can)."""
    norm = posixpath.normpath(path)
    if norm != path or not path.startswith(KUBERNETES_DIR + "/"):
        return f"it is not a plain path below {KUBERNETES_DIR}"
    rel = path[len(KUBERNETES_DIR) + 1:]
    if rel.split("/")[0] in NOT_FOR_ENCRYPTION_CONFIG:
        return f"it is in {KUBERNETES_DIR}/{rel.split('/')[0]}, where kubeadm and the kubelet take their own files from"
    return None


def listing_script(explicit: list[str], patterns: list[str]) -> str:
    """A busybox sh script printing one line per path: `KIND MODE UID GID SIZE SHA256 PATH` (path last, so
    the line splits however the path is spelled); globs are expanded by the shell and skipped if unmatched."""
    quoted = " ".join(shlex.quote(p) for p in explicit)
    globs = " ".join(patterns)  # our own fixed patterns: no quoting, so the shell expands them
    return f"""\
for p in {quoted} {globs}; do
  case "$p" in *'*'*) continue ;; esac
  if [ -L "$p" ]; then echo "L 0 0 0 0 - $(readlink "$p") -> $p"; continue; fi
  if [ ! -e "$p" ]; then echo "M 0 0 0 0 - $p"; continue; fi
  if [ -d "$p" ]; then echo "D $(stat -c '%a %u %g' "$p") 0 - $p"; continue; fi
  sum=$(sha256sum "$p") || exit 1
  echo "F $(stat -c '%a %u %g %s' "$p") ${{sum%% *}} $p"
done
"""


def parse_listing(text: str, pod_root: str) -> list[Entry]:
    entries: list[Entry] = []
    seen: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        kind, mode, uid, gid, size, sha, rest = line.split(" ", 6)
        target = ""
        if kind == "L":
            target, _, rest = rest.rpartition(" -> ")
        host = rest[len(pod_root):] if rest.startswith(pod_root) else rest
        host = posixpath.normpath(host)
        if host in seen:
            continue
        seen.add(host)
        names = {"F": "file", "D": "dir", "L": "link", "M": "missing"}
        entries.append(Entry(names[kind], host, int(mode, 8), int(uid), int(gid), int(size),
                             sha if re.fullmatch(r"[0-9a-f]{64}", sha) else "", target))
    return entries


def part_name(index: int, path: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", posixpath.basename(path)).strip("-.") or "file"
    return f"f{index:03d}-{base}"
