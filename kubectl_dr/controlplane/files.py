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
SHARED = (
    "pki/ca.crt", "pki/ca.key",
    "pki/sa.key", "pki/sa.pub",
    "pki/front-proxy-ca.crt", "pki/front-proxy-ca.key",
    "pki/etcd/ca.crt", "pki/etcd/ca.key",
)
DIRECTORIES = ("pki", "pki/etcd")
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
