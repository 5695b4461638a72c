"""`kubectl dr control-plane restore --from ID --node NODE`: the shared CA and key set back on a node.

Only the files the backup marks for restore are written (the shared set; the encryption-at-rest config
with `--with-encryption-config`), each with the mode and owner it had, atomically and checked in the pod
before it replaces anything. A file that is already there with other content is a conflict: refused
unless `--overwrite`, which keeps the old file beside it (`FILE.kubectl-dr-RUN`). Everything else is
for kubeadm to regenerate (files.REGENERATED says what).
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.console import say_on_stderr as message
from kubectl_dr.controlplane import files
from kubectl_dr.controlplane.backup import BACKUP_TYPE
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.nodes import HostMount, HostPod, start_host_pod
from kubectl_dr.repo import Repository
from kubectl_dr.repo.repository import Backup
from kubectl_dr.runs import Heartbeat, Run
from kubectl_dr.units import count


@dataclass
class Planned:
    path: str
    part: str
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str
    action: str = "write"  # write | unchanged | overwrite


@dataclass
class RestoreResult:
    backup_id: str
    node: str
    written: list[Planned]
    unchanged: list[Planned]
    kept_aside: list[str]
    seconds: float
    dry_run: bool = False
    regenerated: str = files.REGENERATED
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def row(p: Planned) -> dict[str, Any]:
            return {"path": p.path, "mode": f"{p.mode:04o}", "uid": p.uid, "gid": p.gid, "size": p.size,
                    "sha256": p.sha256, "action": p.action}
        return {"kind": "ControlPlaneRestore", "backup": self.backup_id, "node": self.node, "dryRun": self.dry_run,
                "written": [row(p) for p in self.written], "unchanged": [row(p) for p in self.unchanged],
                "keptAside": self.kept_aside, "regenerated": self.regenerated, "notes": self.notes,
                "seconds": round(self.seconds, 3)}


def _plan(backup: Backup, with_encryption: bool) -> list[Planned]:
    details = backup.manifest.details
    chosen = []
    for f in details.get("files") or []:
        if f.get("kind") != "file" or not f.get("restore"):
            continue
        if f.get("role") == "encryption-config" and not with_encryption:
            continue
        chosen.append(Planned(str(f["path"]), str(f["part"]), int(str(f["mode"]), 8), int(f["uid"]), int(f["gid"]),
                              int(f["size"]), str(f["sha256"])))
    if not chosen:
        raise DrError(f"backup {backup.id} holds none of the shared CA and key files",
                      hint="It was taken on a node without them; take one on a control-plane node that has them.")
    return chosen


def restore(kube: Kube, repo: Repository, ref: str, *, node: str, namespace: str, run: Run, helper_image: str,
            confirm: Callable[[str], None], overwrite: bool = False, with_encryption: bool = False,
            dry_run: bool = False) -> RestoreResult:
    started = time.monotonic()
    backup = repo.resolve(ref, BACKUP_TYPE)
    planned = _plan(backup, with_encryption)
    # Every byte read and checked before the node is touched (and decrypted, if the backup is encrypted).
    contents = {p.path: _read_part(repo, backup, p) for p in planned}
    root = str(backup.manifest.details.get("root") or files.KUBERNETES_DIR)
    if dry_run:
        return RestoreResult(backup.id, node, planned, [], [], time.monotonic() - started, dry_run=True,
                             notes=["(dry run) nothing was read from or written to the node"])
    mounts = [HostMount(root, read_only=False, create=True)]
    mounts += [HostMount(posixpath.dirname(p.path), read_only=False, create=True) for p in planned
               if not p.path.startswith(root.rstrip("/") + "/")]
    heartbeat = Heartbeat(message)
    pod = start_host_pod(kube, node=node, namespace=namespace, mounts=mounts, image=helper_image,
                         purpose="control-plane-restore", run=run, heartbeat=heartbeat)
    try:
        result = _apply(pod, backup, planned, contents, root, run, confirm, overwrite, started)
        pod.helper.delete(wait=True)
        return result
    finally:
        heartbeat.stop()


def _read_part(repo: Repository, backup: Backup, p: Planned) -> bytes:
    with repo.open_part(backup, p.part) as reader:
        data = reader.read()
    if len(data) != p.size or hashlib.sha256(data).hexdigest() != p.sha256:
        raise VerificationError(f"backup {backup.id}: {p.path} reads back as {len(data)} bytes with SHA-256 "
                                f"{hashlib.sha256(data).hexdigest()}, the manifest says {p.size} with {p.sha256}")
    return data


def _apply(pod: HostPod, backup: Backup, planned: list[Planned], contents: dict[str, bytes], root: str, run: Run,
           confirm: Callable[[str], None], overwrite: bool, started: float) -> RestoreResult:
    conflicts: list[str] = []
    for p in planned:
        st = pod.stat(p.path)
        if st is None:
            continue
        if st.kind != "regular file":
            conflicts.append(f"{p.path} is a {st.kind}")
            continue
        size, sha = pod.digest(p.path)
        if sha == p.sha256 and (st.mode, st.uid, st.gid) == (p.mode, p.uid, p.gid):
            p.action = "unchanged"
        else:
            p.action = "overwrite"
            if sha != p.sha256:
                conflicts.append(f"{p.path} differs from the backup (SHA-256 {sha[:16]}…, backup {p.sha256[:16]}…)")
            else:
                conflicts.append(f"{p.path} has mode {st.mode:04o} owner {st.uid}:{st.gid}, the backup "
                                 f"{p.mode:04o} {p.uid}:{p.gid}")
    if conflicts and not overwrite:
        raise DrError(f"node {pod.node} already has other versions of files the backup would write:\n"
                      + "\n".join(f"  {c}" for c in conflicts),
                      hint="A node that has its own CA is not the rebuilt node to restore to: check --node. To replace "
                           "them anyway (the old files are kept beside them), pass --overwrite. Nothing was changed.")
    todo = [p for p in planned if p.action != "unchanged"]
    kept: list[str] = []
    if todo:
        confirm(f"write {count(len(todo), 'file')} of backup {backup.id} to node {pod.node}"
                + (f", replacing {len(conflicts)}" if conflicts else ""))
    wanted_dirs = {str(d["path"]): d for d in backup.manifest.details.get("directories") or []}
    for p in todo:
        _ensure_dirs(pod, posixpath.dirname(p.path), root, wanted_dirs)
        if p.action == "overwrite":
            aside = f"{p.path}.kubectl-dr-{run.id}"
            pod.rename(p.path, aside)
            kept.append(aside)
        message(f"writing {p.path} ({p.mode:04o} {p.uid}:{p.gid})")
        pod.write(p.path, contents[p.path], mode=p.mode, uid=p.uid, gid=p.gid)
        st = pod.stat(p.path)
        size, sha = pod.digest(p.path)
        if st is None or (st.mode, st.uid, st.gid, size, sha) != (p.mode, p.uid, p.gid, p.size, p.sha256):
            raise VerificationError(f"{p.path} on node {pod.node} is not what was written: "
                                    f"{st} {size} {sha}, expected {p.mode:04o} {p.uid}:{p.gid} {p.size} {p.sha256}")
    return RestoreResult(backup.id, pod.node, todo, [p for p in planned if p.action == "unchanged"], kept,
                         time.monotonic() - started)


def _ensure_dirs(pod: HostPod, directory: str, root: str, wanted: dict[str, dict[str, Any]]) -> None:
    """Create missing parents below root with the mode and owner the backup recorded (0700 root otherwise)."""
    if directory == root or not directory.startswith(root.rstrip("/") + "/"):
        return
    if pod.stat(directory) is not None:
        return
    _ensure_dirs(pod, posixpath.dirname(directory), root, wanted)
    info = wanted.get(directory) or {}
    mode = int(str(info.get("mode") or "0700"), 8)
    pod.mkdir(directory, mode)
    owner = f"{int(info.get('uid') or 0)}:{int(info.get('gid') or 0)}"
    pod.sh(f"chown {owner} {shlex.quote(pod.path(directory, write=True))}", f"setting the owner of {directory}")
