"""One file as one restic snapshot, shaped exactly as `restic backup --stdin --stdin-filename NAME` makes it:
the snapshot's path is `/NAME`, its root tree holds the one file node. So `restic restore ID --target DIR`
writes DIR/NAME, and a snapshot restic took that way reads back through here.

Used for etcd snapshots (and control-plane files): the file is checked (bbolt, SHA-256) before it is stored,
stored under a restic lock (packs and index before the snapshot), then read back blob by blob and its
SHA-256 compared before the snapshot that makes it visible is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kubectl_dr.repo.restic import chunking, nodes
from kubectl_dr.repo.restic.locks import Lock
from kubectl_dr.repo.restic.nodes import FILE, Node, ResticFormatError
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot

LOCK_WAIT = 300.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
SHA256_TAG = "sha256="


@dataclass(frozen=True)
class StoredFile:
    snapshot: Snapshot
    size: int
    sha256: str


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ResticFormatError(f"{name!r} cannot name a single-file snapshot (letters, digits, '.', '_', '-')")
    return name


def store(repo: Repository, source: Path, name: str, *, hostname: str = "", tags: list[str] | None = None,
          sha256: str | None = None, taken: int | None = None) -> StoredFile:
    """Stores `source` as the snapshot `/NAME`; `sha256` (when known) must match what is read and stored.
    The file's SHA-256 becomes a tag `sha256=…`, which a restore through us checks the content against."""
    _check_name(name)
    start = taken or time.time_ns()
    with Lock(repo, wait=LOCK_WAIT):
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())

            def read(n: int) -> bytes:
                piece = f.read(n)
                digest.update(piece)
                return piece

            content = repo.save_blobs(DATA_BLOB, chunking.chunks(read, st.st_size))
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            raise ResticFormatError(f"{source} changed while it was stored: SHA-256 {actual}, expected {sha256}")
        node = Node(name=name, type=FILE, mode=nodes.go_mode(FILE, 0o600), mtime=st.st_mtime_ns,
                    atime=st.st_mtime_ns, ctime=st.st_ctime_ns, uid=os.getuid(), gid=os.getgid(),
                    size=st.st_size, links=1, content=content)
        tree = repo.save_tree([node])
        repo.flush()  # packs and index first: the snapshot is written only when everything it names is there
        back = sha256_of(repo.file_content(node), st.st_size)
        if back != actual:
            raise ResticFormatError(f"{name} read back from {repo.backend.describe()} has SHA-256 {back}, "
                                    f"not {actual}: the snapshot was not written")
        snap = Snapshot(time=start, tree=tree, paths=[f"/{name}"], hostname=hostname or socket.gethostname(),
                        username=os.environ.get("USER", ""), tags=[*(tags or []), f"{SHA256_TAG}{actual}"],
                        program_version="kubectl-dr",
                        summary={"files_new": 1, "data_blobs": len(content), "tree_blobs": 1,
                                 "total_files_processed": 1, "total_bytes_processed": st.st_size})
        repo.save_snapshot(snap)
    return StoredFile(snap, st.st_size, actual)


def file_node(repo: Repository, snap: Snapshot) -> Node:
    """The one file of a single-file snapshot (ours, or restic's `--stdin`)."""
    if len(snap.paths) != 1:
        raise ResticFormatError(f"snapshot {snap.short_id} has {len(snap.paths)} paths: it is not a single file")
    name = snap.paths[0].strip("/")
    found = [n for n in repo.load_tree(snap.tree) if n.name == name] if "/" not in name else []
    if len(found) != 1 or found[0].type != FILE:
        raise ResticFormatError(f"snapshot {snap.short_id} ({snap.paths[0]}) is not a single-file snapshot")
    return found[0]


def recorded_sha256(snap: Snapshot) -> str | None:
    values = [t[len(SHA256_TAG):] for t in snap.tags if t.startswith(SHA256_TAG)]
    return values[0] if len(values) == 1 and re.fullmatch(r"[0-9a-f]{64}", values[0]) else None


def write_to(repo: Repository, snap: Snapshot, out: BinaryIO) -> tuple[int, str]:
    """Writes the snapshot's file to `out`, every blob checked against its ID on the way; then its size
    against the node's and its SHA-256 against the snapshot's tag (when it has one). Returns both."""
    node = file_node(repo, snap)
    digest, written = hashlib.sha256(), 0
    for piece in repo.file_content(node):
        out.write(piece)
        digest.update(piece)
        written += len(piece)
    actual = digest.hexdigest()
    if written != node.size:
        raise ResticFormatError(f"snapshot {snap.short_id}: {written} bytes read, the tree says {node.size}")
    expected = recorded_sha256(snap)
    if expected is not None and expected != actual:
        raise ResticFormatError(f"snapshot {snap.short_id}: the file's SHA-256 is {actual}, its tag says {expected}")
    return written, actual


def sha256_of(pieces: Iterator[bytes], size: int) -> str:
    """SHA-256 of a file read back in pieces, which must add up to `size` bytes."""
    digest, seen = hashlib.sha256(), 0
    for piece in pieces:
        digest.update(piece)
        seen += len(piece)
    if seen != size:
        raise ResticFormatError(f"read back {seen} bytes of {size}")
    return digest.hexdigest()
