"""`kubectl dr control-plane restore --from ID --node NODE`: the shared CA and key set back on a node.

Only kubeadm's shared set is written (files.SHARED_MODES; the encryption-at-rest config with
`--with-encryption-config`, to where this cluster's kube-apiserver reads it), each to the path and with the
mode and owner of the tool's own table, atomically and checked in the pod before it replaces anything. The
backup supplies contents only: whatever else its manifest says (other paths marked for restore, a root,
modes, owners, directories) is reported in the notes and ignored, and an encrypted backup's list of files
is read from its encrypted index part, not from the plain-text manifest. A file that is already there
with other content is a conflict: refused unless `--overwrite`, which keeps the old file beside it
(`FILE.kubectl-dr-RUN`). Everything else is for kubeadm to regenerate (files.REGENERATED says what).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.controlplane import files
from kubectl_dr.controlplane.backup import BACKUP_TYPE, control_plane_nodes, encryption_config_path
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.kube import pods
from kubectl_dr.kube.client import Kube
from kubectl_dr.kube.identity import try_cluster_identity
from kubectl_dr.nodes import HostMount, HostPod, start_host_pod
from kubectl_dr.repo import Repository
from kubectl_dr.repo.choice import choose
from kubectl_dr.repo.repository import Backup
from kubectl_dr.runs import Heartbeat, Run
from kubectl_dr.session import Session
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
    backup_id: str  # or the restic snapshot's it was staged from
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


def _listing(repo: Repository, backup: Backup) -> tuple[list[dict[str, Any]], list[str]]:
    """The backup's list of files (path, part, size, SHA-256, role) and notes on where it came from.

    An encrypted backup's list comes from its index part, decrypted and checked against its size and
    SHA-256: the manifest is plain text that anyone who can write the repository can edit. A backup without
    an index (taken before there was one) is read from its manifest only when it is not encrypted.
    """
    manifest = backup.manifest
    listed = [f for f in manifest.details.get("files") or [] if isinstance(f, dict)]
    if not any(p.name == files.INDEX_PART for p in manifest.parts):
        if any(p.encrypted for p in manifest.parts):
            raise DrError(f"backup {backup.id} is encrypted but has no {files.INDEX_PART} part (it was taken by an "
                          "older kubectl-dr): its plain-text manifest alone cannot say which part holds which file",
                          hint="Take a new control-plane backup, or decrypt the parts by hand (age -d -i KEY) and "
                               "compare them with the node's files.")
        return listed, []
    with repo.open_part(backup, files.INDEX_PART) as reader:
        raw = reader.read()
    try:
        index = json.loads(raw)
        inside = [f for f in index["files"] if isinstance(f, dict)]
    except (ValueError, KeyError, TypeError) as exc:
        raise DrError(f"backup {backup.id}: its {files.INDEX_PART} part is not a list of files ({exc})") from None
    notes = []
    plain = [f for f in listed if f.get("kind") == "file" and f.get("role") != "kubeadm-config"]
    if _mapping(inside) != _mapping(plain):
        notes.append(f"the manifest's list of files differs from the backup's {files.INDEX_PART} part: the part is "
                     "used (the manifest may have been edited)")
    return inside, notes


def _mapping(listing: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {(str(f.get("path")), str(f.get("part")), str(f.get("sha256")), str(f.get("role"))) for f in listing}


def _plan(backup: Backup, listing: list[dict[str, Any]], encryption_target: str | None,
          notes: list[str]) -> list[Planned]:
    """What to write: the tool's own table of paths, modes and owners; the backup only supplies contents."""
    root = files.KUBERNETES_DIR
    by_path: dict[str, dict[str, Any]] = {}
    for f in listing:
        if f.get("kind") == "file":
            by_path.setdefault(str(f.get("path")), f)
    chosen = [_planned(backup, by_path[path], path, mode, notes)
              for path, mode in ((posixpath.join(root, rel), mode) for rel, mode in files.SHARED_MODES.items())
              if path in by_path]
    if encryption_target is not None:
        record = next((f for f in listing if f.get("kind") == "file" and f.get("role") == "encryption-config"), None)
        if record is None:
            raise DrError(f"backup {backup.id} holds no encryption-at-rest config",
                          hint="Run the restore without --with-encryption-config.")
        if str(record.get("path")) != encryption_target:
            notes.append(f"the encryption config was at {record.get('path')} on the backed-up node; it is written "
                         f"where this cluster's kube-apiserver reads it: {encryption_target}")
        chosen.append(_planned(backup, record, encryption_target, files.ENCRYPTION_CONFIG_MODE, notes))
    if not any(p.path != encryption_target for p in chosen):
        raise DrError(f"backup {backup.id} holds none of the shared CA and key files",
                      hint="It was taken on a node without them; take one on a control-plane node that has them.")
    parts = [p.part for p in chosen]
    if len(set(parts)) != len(parts):
        raise DrError(f"backup {backup.id} names one part for two files: its list of files was edited",
                      hint="Do not restore from it; use another backup (kubectl dr backups list).")
    written = {p.path for p in chosen}
    # Also what only the manifest says (where the index decided): an edit is reported, never followed.
    said = [*listing, *(f for f in backup.manifest.details.get("files") or [] if isinstance(f, dict))]
    for path in dict.fromkeys(str(f.get("path")) for f in said
                              if f.get("restore") and f.get("role") != "encryption-config"):
        if path not in written:
            notes.append(f"ignored: the backup marks {path[:200]} for restore, which is not one of the files a "
                         "restore writes")
    if str(backup.manifest.details.get("root") or root) != root:
        notes.append(f"ignored: the backup names {str(backup.manifest.details.get('root'))[:200]} as its root; files "
                     f"are written below {root}")
    return chosen


def _planned(backup: Backup, record: dict[str, Any], path: str, mode: int, notes: list[str]) -> Planned:
    uid, gid = files.OWNER
    try:
        part = str(record["part"])
        size, sha = int(record["size"]), str(record["sha256"])
        recorded = (int(str(record.get("mode", "0")), 8), int(record.get("uid", 0)), int(record.get("gid", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DrError(f"backup {backup.id}: the record of {path} is malformed ({exc})") from None
    try:
        stored = backup.manifest.part(part)
    except KeyError:
        raise DrError(f"backup {backup.id}: {path} is said to be in part {part[:60]!r}, which it does not have",
                      hint="Do not restore from it; use another backup (kubectl dr backups list).") from None
    if (stored.size, stored.sha256) != (size, sha):
        raise DrError(f"backup {backup.id}: the record of {path} and its part {part} disagree on size or SHA-256",
                      hint="Do not restore from it; use another backup (kubectl dr backups list).")
    if recorded != (mode, uid, gid):
        notes.append(f"{path} is written {mode:04o} {uid}:{gid} (kubeadm's), not {recorded[0]:04o} "
                     f"{recorded[1]}:{recorded[2]} as recorded")
    return Planned(path, part, mode, uid, gid, size, sha)


def encryption_target(kube: Kube, node: str) -> str:
    """Where this cluster's kube-apiserver reads its encryption config (the target node's, else any one's):
    the cluster says where it goes, never the backup."""
    found = control_plane_nodes(kube)
    ordered = [p for n, p in found if n == node] + [p for n, p in found if n != node]
    for apiserver in ordered:
        path = encryption_config_path(apiserver)
        if path:
            problem = files.encryption_config_problem(path)
            if problem is not None:
                raise DrError(f"kube-apiserver reads its encryption config from {path}, and a restore does not write "
                              f"there: {problem}", hint="Write it back by hand (age -d -i KEY on the part).")
            return path
    raise DrError("--with-encryption-config: no kube-apiserver of this cluster names --encryption-provider-config, so "
                  "there is no telling where the config goes",
                  hint="Start kube-apiserver with the flag first (kubeadm: apiServer.extraArgs), or write the file "
                       "back by hand from the backup.")


def restore(session: Session, repo: Repository, ref: str, *, node: str, namespace: str, helper_image: str,
            overwrite: bool = False, with_encryption: bool = False, from_cluster: str | None = None,
            from_other_cluster: bool = False, snapshot: str | None = None) -> RestoreResult:
    """``snapshot``: the restic snapshot `repo` (a private staging repository) was read from, named in the question
    and the result instead of the ID it was staged under, which exists nowhere else. Given by the caller that
    staged it, never read from a manifest."""
    started = time.monotonic()
    kube, console, run, dry_run = session.kube, session.console, session.run, session.dry_run == "client"
    pods.require_node(kube, node)  # also in a dry run: its plan names the node
    current, why = try_cluster_identity(kube)
    backup, origin = choose(repo, ref, BACKUP_TYPE, current=current, what="control-plane restore",
                            from_cluster=from_cluster, from_other_cluster=from_other_cluster, unknown_why=why)
    if origin:
        console.say(f"note: {origin}")
    listing, notes = _listing(repo, backup)
    planned = _plan(backup, listing, encryption_target(kube, node) if with_encryption else None, notes)
    # Every byte read and checked before the node is touched (and decrypted, if the backup is encrypted).
    contents = {p.path: _read_part(repo, backup, p) for p in planned}
    root = files.KUBERNETES_DIR  # the tool's, never the manifest's: every path planned lies below it
    if dry_run:
        return RestoreResult(snapshot or backup.id, node, planned, [], [], time.monotonic() - started, dry_run=True,
                             notes=[*notes, "(dry run) nothing was read from or written to the node"])
    mounts = [HostMount(root, read_only=False, create=True)]
    heartbeat = Heartbeat(console.warn)
    pod = start_host_pod(kube, node=node, namespace=namespace, mounts=mounts, image=helper_image,
                         purpose="control-plane-restore", run=run, heartbeat=heartbeat,
                         console=console)
    try:
        label = f"restic snapshot {snapshot[:8]}" if snapshot else f"backup {backup.id}"
        result = _apply(pod, (snapshot or backup.id, label), planned, contents, root, run, console, overwrite,
                        started)
        result.notes[:0] = notes
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


def _apply(pod: HostPod, source: tuple[str, str], planned: list[Planned], contents: dict[str, bytes], root: str,
           run: Run, console: Console, overwrite: bool, started: float) -> RestoreResult:
    """``source``: the backup's ID for the result, and its name for the question."""
    source_id, label = source
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
                conflicts.append(f"{p.path} has mode {st.mode:04o} owner {st.uid}:{st.gid}, a restore writes it "
                                 f"{p.mode:04o} {p.uid}:{p.gid} (kubeadm's)")
    if conflicts and not overwrite:
        raise DrError(f"node {pod.node} already has other versions of files the backup would write:\n"
                      + "\n".join(f"  {c}" for c in conflicts),
                      hint="A node that has its own CA is not the rebuilt node to restore to: check --node. To replace "
                           "them anyway (the old files are kept beside them), pass --overwrite. Nothing was changed.")
    todo = [p for p in planned if p.action != "unchanged"]
    kept: list[str] = []
    if todo:
        console.confirm(f"write {count(len(todo), 'file')} of {label} to node {pod.node}"
                + (f", replacing {len(conflicts)}" if conflicts else ""))
    for p in todo:
        _ensure_dirs(pod, posixpath.dirname(p.path), root)
        if p.action == "overwrite":
            aside = f"{p.path}.kubectl-dr-{run.id}"
            pod.rename(p.path, aside)
            kept.append(aside)
        console.say(f"writing {p.path} ({p.mode:04o} {p.uid}:{p.gid})")
        pod.write(p.path, contents[p.path], mode=p.mode, uid=p.uid, gid=p.gid)
        st = pod.stat(p.path)
        size, sha = pod.digest(p.path)
        if st is None or (st.mode, st.uid, st.gid, size, sha) != (p.mode, p.uid, p.gid, p.size, p.sha256):
            raise VerificationError(f"{p.path} on node {pod.node} is not what was written: "
                                    f"{st} {size} {sha}, expected {p.mode:04o} {p.uid}:{p.gid} {p.size} {p.sha256}")
    return RestoreResult(source_id, pod.node, todo, [p for p in planned if p.action == "unchanged"], kept,
                         time.monotonic() - started)


def _ensure_dirs(pod: HostPod, directory: str, root: str) -> None:
    """Create missing parents below root as kubeadm does (pki, pki/etcd 0755), others 0700; owned by root."""
    if directory == root or not directory.startswith(root.rstrip("/") + "/"):
        return
    if pod.stat(directory) is not None:
        return
    _ensure_dirs(pod, posixpath.dirname(directory), root)
    mode = files.DIRECTORY_MODES.get(directory[len(root.rstrip("/")) + 1:], files.OTHER_DIRECTORY_MODE)
    pod.mkdir(directory, mode)
    uid, gid = files.OWNER
    pod.sh(f"chown {uid}:{gid} {shlex.quote(pod.path(directory, write=True))}", f"setting the owner of {directory}")
