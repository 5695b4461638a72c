"""`control-plane backup|restore --repo restic:REPO`: a control-plane backup as one small multi-file restic
snapshot, and back.

The backup is taken and checked exactly as for any repository (each file listed in the pod with its size
and SHA-256 and compared on arrival) into a private staging directory here (0700: the files are the
cluster's private keys), then stored as a restic snapshot shaped as `restic backup /etc/kubernetes
/kubectl-dr` would make it: the node's files at their own paths, owners and modes (`restic restore ID
--target DIR` gives DIR/etc/kubernetes/pki/ca.key…), and beside them `kubectl-dr/control-plane.json` (the
list of files with size, SHA-256 and role) and `kubectl-dr/kubeadm-config.yaml`. Its host is the node,
its tags `cluster=UID`, `kind=control-plane`, `node=NODE`. Every file is read back from the restic
repository and compared (size and SHA-256) before the snapshot that makes them visible is written.

A restore reads the snapshot's list, every file checked against it (and every blob against its ID), into
a staging kubectl-dr backup here, and restores that through the one restore there is: its plan, its tables
of paths and modes, its conflict checks and its checks on the node stay the only ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubectl_dr import cleanup
from kubectl_dr.clusters import ClusterIdentity, origin_note
from kubectl_dr.console import Console
from kubectl_dr.controlplane import files
from kubectl_dr.controlplane.backup import BACKUP_TYPE, BackupResult
from kubectl_dr.errors import DrError, VerificationError
from kubectl_dr.repo import LocalRepository, Repository
from kubectl_dr.repo.local import pid_alive
from kubectl_dr.repo.repository import Backup

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.nodes import Node
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository
    from kubectl_dr.repo.restic.snapshots import Snapshot

KIND_TAG = f"kind={BACKUP_TYPE}"
META_DIR = "kubectl-dr"
LIST_NAME = "control-plane.json"
KUBEADM_NAME = "kubeadm-config.yaml"
LOCK_WAIT = 300.0
_TAG_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")  # restic splits tags at commas
_DIR_MODE = 0o755


STAGING_PREFIX = "kubectl-dr-control-plane-"


def remove_stale_staging(tmp: str | None = None) -> list[Path]:
    """Staging directories that a killed run (SIGKILL, power loss: no cleanup ran) left behind: they hold the
    cluster's private keys, so the next run removes them. Only ours (this user's, named with the pid of a
    process that no longer runs); returns what was removed."""
    removed = []
    for path in Path(tmp or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        pid_text = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        try:
            owned = path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.getuid()
        except OSError:
            continue
        if not owned or not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def staging_repository() -> tuple[LocalRepository, Callable[[], None]]:
    """A private kubectl-dr repository here that the files pass through, and how to remove it (the
    command's cleanup removes it too, however the command ends; a later run removes it after a SIGKILL)."""
    remove_stale_staging()
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))  # 0700
    step = cleanup.current().push(f"remove the staged control-plane files in {staging}",
                                  lambda: shutil.rmtree(staging, ignore_errors=True))
    local = LocalRepository(staging / "repo")
    local.preflight(create=True)
    return local, lambda: cleanup.current().run(step)


def tags_for(backup: Backup) -> list[str]:
    manifest = backup.manifest
    tags = [f"cluster={manifest.cluster.uid}"] if manifest.cluster is not None else []
    tags.append(KIND_TAG)
    node = str(manifest.details.get("node") or "")
    if _TAG_VALUE.match(node):
        tags.append(f"node={node}")
    return tags


def _records(backup: Backup) -> list[dict[str, Any]]:
    return [f for f in backup.manifest.details.get("files") or [] if isinstance(f, dict)]


def _read_part(staged: Repository, backup: Backup, record: dict[str, Any]) -> bytes:
    with staged.open_part(backup, str(record["part"])) as reader:
        data = reader.read()
    if len(data) != int(record["size"]) or hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise VerificationError(f"{record['path']}: the staged copy is not what the node listed")
    return data


def store(restic: ResticRepository, staged: Repository, backup: Backup,
          say: Callable[[str], None] = lambda _: None) -> Snapshot:
    """The staged backup's files as one restic snapshot (see the module's note); returns it once written.

    Stopped at any point, the repository stays valid: the packs and their index are written before the
    snapshot, which alone makes them visible; what an interrupted run stored is unreferenced data that the
    next prune removes (and the next backup reuses, by its blob IDs)."""
    from kubectl_dr.repo.restic import chunking, nodes, singlefile
    from kubectl_dr.repo.restic.locks import Lock, dead_locks
    from kubectl_dr.repo.restic.nodes import DIR, FILE, Node
    from kubectl_dr.repo.restic.packs import DATA_BLOB
    from kubectl_dr.repo.restic.snapshots import Snapshot

    taken = int(backup.manifest.created_at.timestamp() * 1e9)
    records = _records(backup)
    dir_modes = {str(d.get("path")): int(str(d.get("mode", "755")), 8)
                 for d in backup.manifest.details.get("directories") or [] if isinstance(d, dict)}
    for dead in dead_locks(restic):  # left for `restic unlock`: restic's prune and check stay out until then
        say(f"warning: the repository holds {dead.explain(restic)}; restic prune and check refuse to run "
            "until it is removed")
    with Lock(restic, wait=LOCK_WAIT):
        placed: dict[str, Node] = {}  # path in the snapshot (no leading /) -> file node
        for record in records:
            data = _read_part(staged, backup, record)
            if record.get("kind") == "api":
                rel = f"{META_DIR}/{KUBEADM_NAME}"
                mode, uid, gid = 0o600, 0, 0
            else:
                rel = _relative(str(record["path"]))
                mode, uid, gid = int(str(record["mode"]), 8), int(record["uid"]), int(record["gid"])
            content = restic.save_blobs(DATA_BLOB, chunking.chunks(io.BytesIO(data).read, len(data)))
            placed[rel] = Node(name=posixpath.basename(rel), type=FILE, mode=nodes.go_mode(FILE, mode), mtime=taken,
                               atime=taken, ctime=taken, uid=uid, gid=gid, size=len(data), links=1, content=content)
        listing = json.dumps({"node": backup.manifest.details.get("node"), "root": backup.manifest.details.get("root"),
                              "encryptionConfig": backup.manifest.details.get("encryptionConfig"),
                              "backup": backup.id, "files": records}, indent=1, sort_keys=True).encode()
        rel = f"{META_DIR}/{LIST_NAME}"
        listed = restic.save_blobs(DATA_BLOB, chunking.chunks(io.BytesIO(listing).read, len(listing)))
        placed[rel] = Node(name=LIST_NAME, type=FILE, mode=nodes.go_mode(FILE, 0o600), mtime=taken, atime=taken,
                           ctime=taken, size=len(listing), links=1, content=listed)
        # Directories from the files' paths, bottom-up; their modes as the node listed them (else 0755).
        children: dict[str, list[Node]] = {}
        for rel, node in placed.items():
            children.setdefault(posixpath.dirname(rel), []).append(node)
            parent = posixpath.dirname(rel)
            while parent:
                children.setdefault(posixpath.dirname(parent), [])
                children.setdefault(parent, [])
                parent = posixpath.dirname(parent)
        for path in sorted((p for p in children if p), key=lambda p: p.count("/"), reverse=True):
            mode = dir_modes.get("/" + path, _DIR_MODE)
            children[posixpath.dirname(path)].append(Node(
                name=posixpath.basename(path), type=DIR, mode=nodes.go_mode(DIR, mode), mtime=taken, atime=taken,
                ctime=taken, subtree=restic.save_tree(sorted(children[path], key=lambda n: n.name))))
        tree = restic.save_tree(sorted(children[""], key=lambda n: n.name))
        restic.flush()  # packs and index first: the snapshot is written only when everything it names is there
        say(f"stored {len(placed)} files in packs and an index; reading them back")
        for rel, node in placed.items():  # read back through the repository, each against what was stored
            expected = (hashlib.sha256(listing).hexdigest() if rel.endswith(LIST_NAME) else
                        next(r["sha256"] for r in records if _snapshot_path(r) == rel))
            if singlefile.sha256_of(restic.file_content(node), node.size) != expected:
                raise VerificationError(f"/{rel} read back from {restic.backend.describe()} is not what was stored: "
                                        "the snapshot was not written")
        say("every file read back matches; writing the snapshot")
        roots = sorted({_top_dir(str(r["path"])) for r in records if r.get("kind") != "api"})
        snap = Snapshot(time=taken, tree=tree, paths=[*roots, f"/{META_DIR}"],
                        hostname=str(backup.manifest.details.get("node") or socket.gethostname()),
                        username=os.environ.get("USER", ""), tags=tags_for(backup), program_version="kubectl-dr",
                        summary={"files_new": len(placed), "total_files_processed": len(placed),
                                 "total_bytes_processed": sum(n.size for n in placed.values())})
        restic.save_snapshot(snap)
    return snap


def _top_dir(path: str) -> str:
    """The directory a restic user would have given for this file: /etc/kubernetes for everything below it,
    else the file's own directory (an encryption config elsewhere)."""
    root = files.KUBERNETES_DIR
    return root if path.startswith(root + "/") else posixpath.dirname(path)


def _relative(path: str) -> str:
    norm = posixpath.normpath(path)
    if norm != path or not path.startswith("/") or path == "/":
        raise DrError(f"the node listed {path[:200]!r}, which is not a plain absolute path")
    return path.lstrip("/")


def _snapshot_path(record: dict[str, Any]) -> str:
    return f"{META_DIR}/{KUBEADM_NAME}" if record.get("kind") == "api" else _relative(str(record["path"]))


def backup(restic: ResticRepository, console: Console, take: Callable[[Repository], BackupResult]
           ) -> tuple[Snapshot, BackupResult]:
    """Runs `take` into a private staging repository, then stores its checked files in `restic`."""
    local, remove = staging_repository()
    try:
        result = take(local)
        console.say(f"storing the files in the restic repository {restic.backend.describe()}")
        snap = store(restic, local, local.get(result.manifest.id), console.say)
    finally:
        remove()
    return snap, result


# --- restore ----------------------------------------------------------------------------------------


def pick(restic: ResticRepository, ref: str, console: Console, *, current: ClusterIdentity | None,
         unknown_why: str = "", from_cluster: str | None = None, from_other_cluster: bool = False) -> Snapshot:
    """`--from ID|latest`: latest is the newest `kind=control-plane` snapshot tagged with this cluster."""
    from kubectl_dr.repo.restic import choice

    snap, recorded = choice.choose(restic, ref, BACKUP_TYPE, what="control-plane backup",
                                   take="kubectl dr control-plane backup --repo restic:REPO",
                                   restore="control-plane restore",
                                   current=current, unknown_why=unknown_why, from_cluster=from_cluster,
                                   from_other_cluster=from_other_cluster, id_needs_kind=True)
    note = origin_note(snap.short_id, recorded, current) if current is not None and recorded is not None else None
    if note:
        console.say(f"note: {note}")
    return snap


def stage(restic: ResticRepository, snap: Snapshot, console: Console) -> tuple[LocalRepository, str]:
    """The snapshot's files, each checked against its list (size, SHA-256), as a control-plane backup in a
    private staging repository here; returns it and the backup's ID."""
    from kubectl_dr.repo.restic import archiver, nodes

    root = nodes.Node(name="", type=nodes.DIR, subtree=snap.tree)

    def content(rel: str) -> bytes:
        try:
            node = archiver.find(restic, root, rel)
        except nodes.ResticFormatError:
            raise DrError(f"restic snapshot {snap.short_id} has no /{rel}: it is not a control-plane backup "
                          "kubectl dr wrote") from None
        if node.type != nodes.FILE:
            raise DrError(f"/{rel} in restic snapshot {snap.short_id} is a {node.type}, not a file")
        data = b"".join(restic.file_content(node))  # every blob checked against its ID
        if len(data) != node.size:
            raise VerificationError(f"/{rel} in restic snapshot {snap.short_id}: {len(data)} bytes read, the tree "
                                    f"says {node.size}")
        return data

    console.say(f"reading and checking restic snapshot {snap.short_id} from {restic.backend.describe()}")
    try:
        listing = json.loads(content(f"{META_DIR}/{LIST_NAME}"))
        records = [r for r in listing["files"] if isinstance(r, dict)]
    except (ValueError, KeyError, TypeError) as exc:
        raise DrError(f"restic snapshot {snap.short_id}: its {META_DIR}/{LIST_NAME} is not a list of files ({exc})"
                      ) from None
    local, _remove = staging_repository()
    tagged = snap.tag_value("cluster")
    source = {"node": str(listing.get("node") or snap.hostname), "resticSnapshot": snap.id}
    with local.create(BACKUP_TYPE, source, name_hint=source["node"],
                      cluster=ClusterIdentity(tagged) if tagged else None, recipients=[],
                      created_at=_when(snap.time)) as writer:
        files_index = []
        for record in records:
            try:
                rel, part, size, sha = _snapshot_path(record), str(record["part"]), int(record["size"]), \
                    str(record["sha256"])
            except (KeyError, TypeError, ValueError) as exc:
                raise DrError(f"restic snapshot {snap.short_id}: a record of its list is malformed ({exc})") from None
            data = content(rel)
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                raise VerificationError(f"/{rel} in restic snapshot {snap.short_id} has {len(data)} bytes with "
                                        f"SHA-256 {hashlib.sha256(data).hexdigest()}, its list says {size} with {sha}")
            with writer.open_part(part) as out:
                out.write(data)
            if record.get("kind") != "api":
                files_index.append(record)
        index = {"root": listing.get("root"), "files": files_index, "encryptionConfig": listing.get("encryptionConfig")}
        with writer.open_part(files.INDEX_PART) as out:
            out.write(json.dumps(index, indent=1, sort_keys=True).encode())
        manifest = writer.commit({"node": source["node"], "root": listing.get("root"), "files": records,
                                  "index": files.INDEX_PART, "encryptionConfig": listing.get("encryptionConfig"),
                                  "encrypted": False, "resticSnapshot": snap.id})
    return local, manifest.id


def _when(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc)
