"""A local directory into a restic snapshot, and a snapshot's subtree out into a local directory.

Used for `--to-dir` restores and for control-plane/etcd files on the user's machine. Writing is done
safely against an untrusted snapshot: names were checked when the trees were decoded (no `/`, `..`,
NUL), files are created with O_EXCL|O_NOFOLLOW inside directories we created, so a symlink in the
snapshot can never redirect a write; hard links join only files this restore wrote.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kubectl_dr.repo.restic import archiver, chunking, nodes
from kubectl_dr.repo.restic.nodes import CHARDEV, DEV, DIR, FIFO, FILE, SOCKET, SYMLINK, Node, ResticFormatError
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot

_TYPES = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK, stat.S_IFBLK: DEV, stat.S_IFCHR: CHARDEV,
          stat.S_IFIFO: FIFO, stat.S_IFSOCK: SOCKET}


def node_from_stat(name: str, st: os.stat_result, target: str = "") -> Node:
    node_type = _TYPES[stat.S_IFMT(st.st_mode)]
    return Node(
        name=name, type=node_type, mode=nodes.go_mode(node_type, stat.S_IMODE(st.st_mode)),
        mtime=st.st_mtime_ns, atime=st.st_atime_ns, ctime=st.st_ctime_ns, uid=st.st_uid, gid=st.st_gid,
        inode=st.st_ino, device_id=st.st_dev, size=st.st_size if node_type == FILE else 0, links=st.st_nlink,
        linktarget=target, device=st.st_rdev if node_type in (DEV, CHARDEV) else 0)


def _scan(root: Path, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    path = root / rel if rel else root
    st = os.lstat(path)
    yield rel, st
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(path)):
            yield from _scan(root, f"{rel}/{name}" if rel else name)


def backup_dir(repo: Repository, src: Path, *, snapshot_path: str, hostname: str = "", tags: list[str] | None = None,
               parent: Snapshot | None = None) -> Snapshot:
    """Backs up a local directory as the snapshot path; unchanged files (against `parent`) are not read."""
    start = time.time_ns()
    old = archiver.parent_files(repo, archiver.volume_root(repo, parent.tree, parent.paths)) if parent else {}
    items: list[archiver.Item] = []
    for rel, st in _scan(src):
        target = os.readlink(src / rel) if stat.S_ISLNK(st.st_mode) else ""
        node = node_from_stat(rel.rsplit("/", 1)[-1], st, target)
        if node.type == FILE:
            prev = old.get(rel)
            if archiver.unchanged(prev, node) and prev and all(repo.has_blob(b) for b in prev.content):
                node.content = list(prev.content)
            else:
                with open(src / rel, "rb") as f:
                    node.content = repo.save_blobs(DATA_BLOB, chunking.chunks(f.read, node.size))
        items.append(archiver.Item(rel, node))
    tree = archiver.save_trees(repo, items, snapshot_path, start)
    repo.flush()
    snap = Snapshot(time=start, tree=tree, paths=[snapshot_path], hostname=hostname or socket.gethostname(),
                    tags=tags or [], parent=parent.id if parent else None, program_version="kubectl-dr")
    repo.save_snapshot(snap)
    return snap


def restore_to_dir(repo: Repository, root: Node, dest: Path, *, owners: bool | None = None,
                   keep: Callable[[str], bool] | None = None) -> int:
    """Writes the entries under `root` into `dest` (created, must not exist or be empty); returns the file count.
    Owners are applied when running as root (or when `owners` says so); `keep` chooses paths (None: all)."""
    if owners is None:
        owners = os.geteuid() == 0
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ResticFormatError(f"{dest} is not empty; restore into a new or empty directory")
    links: dict[tuple[int, int], Path] = {}
    dirs: list[tuple[Path, Node]] = [(dest, root)]
    count = 0
    for rel, node in archiver.walk(repo, root):
        if keep is not None and not keep(rel):
            continue
        path = dest / rel
        if node.type == DIR:
            path.mkdir(mode=0o700)
            dirs.append((path, node))
            continue
        if node.type == FILE:
            key = (node.inode, node.device_id)
            if node.links > 1 and key in links:
                os.link(links[key], path)
                continue
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                for piece in repo.file_content(node):
                    out.write(piece)
            if node.links > 1:
                links[key] = path
            count += 1
        elif node.type == SYMLINK:
            os.symlink(node.linktarget, path)
        elif node.type == FIFO:
            os.mkfifo(path, 0o600)
        else:
            # Sockets cannot be made meaningfully, and no device node is made on this machine (as a plain
            # backup's --to-dir makes none): a node of the host's disk with mode 0666, restored by root, would
            # open the disk to every user. Modes, setuid included, are restic restore's: a snapshot is
            # authenticated by the repository's key, which a bucket writer without the password lacks.
            continue
        _apply(path, node, owners)
    for path, node in reversed(dirs):  # deepest first: setting a directory's times before its content changes them
        _apply(path, node, owners)
    return count


def _apply(path: Path, node: Node, owners: bool) -> None:
    if owners:
        os.chown(path, node.uid, node.gid, follow_symlinks=False)
    if node.type != SYMLINK:
        os.chmod(path, node.perm)
    os.utime(path, ns=(node.atime or node.mtime, node.mtime), follow_symlinks=False)
