"""`pvc restore --repo restic:REPO --from SNAPSHOT`: a restic snapshot (ours, or one `restic backup` made of
a directory) as the Source every restore reads.

The snapshot's directory is written here, into a private temporary directory, as the archive and the
entry record a kubectl-dr backup has: every blob read back is checked (MAC, then SHA-256 against its
ID) on the way. From there the restore is the one every backup gets: the archive read as the pod's
tar will read it, consumers stopped, streamed with size and SHA-256 checked in the pod, owners, modes
and times applied from the record, and every entry of the volume checked against it afterwards.

The archive's headers carry no owners or times (uid 0, mtime clamped to ≥ 0): the record does, exactly,
as in every backup, because busybox tar cannot hold large uids or times before 1970.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable
from pathlib import Path

from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.repo.restic import archiver, crypto, nodes
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot
from kubectl_dr.units import count
from kubectl_dr.volumes import entries as entries_module
from kubectl_dr.volumes.entries import Entries, Entry
from kubectl_dr.volumes.source import Source, check_record
from kubectl_dr.volumes.tar_reader import ENCODING, ERRORS, Archive, read_archive

_KINDS = {nodes.FILE: entries_module.FILE, nodes.DIR: entries_module.DIR, nodes.SYMLINK: entries_module.SYMLINK,
          nodes.FIFO: entries_module.FIFO, nodes.CHARDEV: entries_module.CHAR, nodes.DEV: entries_module.BLOCKDEV}


def find_snapshot(repo: Repository, ref: str, namespace: str, claim: str) -> Snapshot:
    if ref == "latest":
        mine = [s for s in repo.snapshots() if s.hostname == f"{namespace}/{claim}"]
        if not mine:
            raise DrError(f"no snapshot of {namespace}/{claim} (host {namespace}/{claim}) in the restic repository "
                          f"{repo.backend.describe()}",
                          hint="Name a snapshot by its ID (restic snapshots, or kubectl dr backups list --repo "
                               "restic:REPO).")
        return mine[-1]
    return repo.find_snapshot(ref)


def _entry(path: str, node: nodes.Node, first_of_inode: dict[tuple[int, int], str]) -> Entry:
    kind = _KINDS.get(node.type)
    if kind is None:
        raise DrError(f"{path!r} in the snapshot is a {node.type}, which a volume restore cannot make")
    target = node.linktarget if node.type == nodes.SYMLINK else ""
    if node.type == nodes.FILE and node.links > 1 and node.inode:
        key = (node.inode, node.device_id)
        if key in first_of_inode:
            kind, target = entries_module.HARDLINK, first_of_inode[key]
        else:
            first_of_inode[key] = path
    secs = node.mtime // nodes.NS
    rdev = (0, 0)
    if node.type in (nodes.DEV, nodes.CHARDEV):
        import os

        rdev = (os.major(node.device), os.minor(node.device))
    size = node.size if kind == entries_module.FILE else 0
    return Entry(path, kind, node.perm, node.uid, node.gid, size, secs, target, (size + 511) // 512, rdev)


class _Content:
    """A file's blobs read one at a time (memory: one blob, ≤ 8 MiB, whatever the file's size)."""

    def __init__(self, repo: Repository, node: nodes.Node) -> None:
        self._blobs = iter(node.content)
        self._repo = repo
        self._buffer = b""
        self.given = 0

    def read(self, n: int = -1) -> bytes:
        while len(self._buffer) < (n if n >= 0 else 1 << 62):
            blob = next(self._blobs, None)
            if blob is None:
                break
            self._buffer += self._repo.load_blob(blob)
        out, self._buffer = (self._buffer, b"") if n < 0 else (self._buffer[:n], self._buffer[n:])
        self.given += len(out)
        return out


def normalise_includes(includes: list[str] | None) -> list[str]:
    """--include paths as the snapshot names them: relative, no `.`/`..` (a path outside is refused)."""
    out = []
    for raw in includes or []:
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise DrError(f"--include {raw!r}: give a path inside the backup, such as etc/app.conf")
        out.append("/".join(parts))
    return out


def included(path: str, includes: list[str]) -> bool:
    """The path is an included one, beneath one, or a directory on the way to one."""
    return not includes or any(path == i or path.startswith(i + "/") or i.startswith(path + "/") for i in includes)


def blob_length(repo: Repository, blob_id: str) -> int:
    """A data blob's plaintext length as the index says (-1: not in the index). Only an expectation: a
    file whose chunks are hashed in the pod matches only if every chunk's SHA-256 is its blob's ID."""
    loc = repo.index.blobs.get(blob_id)
    if loc is None:
        return -1
    return loc.uncompressed_length or loc.length - crypto.OVERHEAD


class Stopped(Exception):
    """The snapshot was not read to the end: the restore stopped meanwhile."""


def build(repo: Repository, snap: Snapshot, workdir: Path, console: Console,
          includes: list[str] | None = None, *, target: str = "",
          cancelled: Callable[[], bool] = lambda: False) -> Source:
    """The snapshot's entry record, read from its trees alone; no file content is read yet. The Source's
    `materialize` writes the archive into `workdir` (private, removed by the caller), of every entry or
    of those an incremental restore chose, and reads (and checks) only those files' blobs. With
    `includes`, only those paths (and the directories leading to them). `target` (NS/CLAIM): the claim
    restored into; a snapshot of that claim (its host) that names its cluster lists the files an
    incremental restore may trust by their metadata (`Source.unchanged_since`), once the cluster is
    known to be that one."""
    root = archiver.volume_root(repo, snap.tree, snap.paths)
    wanted = normalise_includes(includes)
    for inc in wanted:
        archiver.find(repo, root, inc)  # a path the snapshot does not have is an error, not an empty restore
    entries = Entries()
    entries.items[""] = _entry("", root, {})
    first_of_inode: dict[tuple[int, int], str] = {}
    walked: list[tuple[Entry, nodes.Node]] = []
    chunks: dict[str, list[tuple[str, int]]] = {}
    unchanged: dict[str, tuple[int, int, int, int]] = {}
    cluster = next((t.partition("=")[2] for t in snap.tags if t.startswith("cluster=")), "")
    own = bool(target) and snap.hostname == target and bool(cluster)
    console.say(f"reading restic snapshot {snap.short_id} ({snap.hostname}:{','.join(snap.paths)})")
    for rel, node in archiver.walk(repo, root):
        if cancelled():
            raise Stopped  # the restore stopped meanwhile (what it raised is what the user sees)
        if not included(rel, wanted):
            continue
        entry = _entry(rel, node, first_of_inode)
        entries.items[rel] = entry
        walked.append((entry, node))
        if entry.kind == entries_module.FILE:
            chunks[rel] = [(b, blob_length(repo, b)) for b in node.content]
            if own and (stat_key := _stat_key(node, snap)):
                unchanged[rel] = stat_key
    console.say(f"snapshot {snap.short_id}: {count(len(entries), 'entry', 'entries')} ready to restore")
    content = sum(e.size for e, _ in walked if e.kind == entries_module.FILE)

    def materialize(send: set[str] | None) -> Source:
        return _write(repo, snap, workdir, entries, walked, send, chunks, materialize)

    return Source(workdir / "data.tar", content, None, None, Archive(), entries, True, verified=True, origin=None,
                  snapshot=snap.id, chunks=chunks, materialize=materialize, unchanged_since=unchanged,
                  unchanged_cluster=cluster, load_blob=repo.load_blob)


def _stat_key(node: nodes.Node, snap: Snapshot) -> tuple[int, int, int, int] | None:
    """(inode, size, mtime, ctime in seconds) of a file whose change time is whole seconds (our listing's,
    so a volume's `stat` can equal it; a change time near the listing's second by the node's own clock was
    stored a nanosecond on, `restic_backup.mark_racy`) and at least a second before the snapshot began: a
    write after the backup's listing would have moved the change time to that second or later."""
    if (not node.inode or node.ctime <= 0 or node.ctime % nodes.NS or node.mtime % nodes.NS
            or node.ctime // nodes.NS >= snap.time // nodes.NS):
        return None
    return node.inode, node.size, node.mtime // nodes.NS, node.ctime // nodes.NS


def _write(repo: Repository, snap: Snapshot, workdir: Path, entries: Entries, walked: list[tuple[Entry, nodes.Node]],
           send: set[str] | None, chunks: dict[str, list[tuple[str, int]]],
           materialize: Callable[[set[str] | None], Source]) -> Source:
    """The archive of every entry (`send` None) or of those in `send`, every blob read checked (MAC, then
    SHA-256 against its ID); read back as the pod's tar reads it and held against the entry record."""
    path = workdir / ("data.tar" if send is None else "delta.tar")
    digest = hashlib.sha256()
    with open(path, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT,
                                               encoding=ENCODING, errors=ERRORS) as tar:
        for entry, node in walked:
            rel = entry.path
            if send is not None and rel not in send:
                continue
            info = tarfile.TarInfo("./" + rel)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, 0, 0, max(entry.mtime, 0)
            if entry.kind == entries_module.FILE:
                info.type, info.size = tarfile.REGTYPE, entry.size
                content = _Content(repo, node)
                tar.addfile(info, content)
                if content.read(1) or content.given != entry.size:
                    raise DrError(f"{rel!r}: the snapshot's content is not the {entry.size} bytes its node says")
                continue
            if entry.kind == entries_module.DIR:
                info.type = tarfile.DIRTYPE
            elif entry.kind == entries_module.SYMLINK:
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
            elif entry.kind == entries_module.HARDLINK:
                info.type, info.linkname = tarfile.LNKTYPE, "./" + entry.target
            elif entry.kind == entries_module.FIFO:
                info.type = tarfile.FIFOTYPE
            else:
                info.type = tarfile.CHRTYPE if entry.kind == entries_module.CHAR else tarfile.BLKTYPE
                info.devmajor, info.devminor = entry.rdev
            tar.addfile(info)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    archive = read_archive(path, gnu_sparse=False, allow_empty=True)
    if send is None:
        check_record(snap.short_id, archive, entries)
    else:
        check_record(snap.short_id, archive, _subset(entries, send))
    return Source(path, path.stat().st_size, digest.hexdigest(), None, archive, entries, True, verified=True,
                  origin=None, snapshot=snap.id, chunks=chunks, materialize=materialize)


def _subset(entries: Entries, paths: set[str]) -> Entries:
    out = Entries()
    out.items.update({p: e for p, e in entries.items.items() if p in paths})
    return out
