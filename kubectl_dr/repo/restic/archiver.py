"""From entries to trees and back: what every backup and restore through a restic repository shares.

Layout of our snapshots: a volume backed up as `/CLAIM` (the snapshot's one path) is, as restic itself
stores a backup of a directory `/CLAIM`, a root tree holding one directory node `CLAIM` that carries the
volume root's own owner, mode and times, whose subtree holds the volume. `restic restore ID --target T`
therefore writes `T/CLAIM/…`, and a snapshot restic made of `/some/dir` is read the same way: its path is
followed down the trees to the directory it names (`volume_root`).

Incremental backups reuse a file's content from the parent snapshot when path, size, mtime, ctime and
inode all match (restic's rule): such files are not read at all.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kubectl_dr.repo.restic.nodes import DIR, FILE, Node, ResticFormatError
from kubectl_dr.repo.restic.repository import Repository

_DIR_MODE = (1 << 31) | 0o755


@dataclass
class Item:
    path: str  # relative to the volume root, "" for the root itself; components joined by "/"
    node: Node  # the entry's node (name = last component); a directory's subtree is filled in by save_trees


def save_trees(repo: Repository, items: Iterable[Item], snapshot_path: str, time_ns: int) -> str:
    """Stores the trees of a volume (every directory bottom-up), wrapped in the snapshot path's components;
    returns the root tree's ID. `items` must include the root ("") and every directory it contains."""
    children: dict[str, list[Node]] = {}
    dirs: dict[str, Node] = {}
    for item in items:
        if item.node.type == DIR:
            dirs[item.path] = item.node
            children.setdefault(item.path, [])
        if item.path:
            parent = posixpath.dirname(item.path)
            children.setdefault(parent, []).append(item.node)
    if "" not in dirs:
        raise ResticFormatError("a backup's entries do not include the volume root")
    missing = set(children) - set(dirs)
    if missing:
        raise ResticFormatError(f"entries inside {sorted(missing)[0]!r}, which is not listed as a directory")
    for path in sorted(dirs, key=lambda p: p.count("/") + bool(p), reverse=True):
        dirs[path].subtree = repo.save_tree(children[path])
    # The snapshot path's components above the volume: directories as restic would record them.
    parts = [p for p in snapshot_path.split("/") if p]
    if not parts:
        raise ResticFormatError("a snapshot path must name a directory, such as /CLAIM")
    node = dirs[""]
    node.name = parts[-1]
    tree = repo.save_tree([node])
    for name in reversed(parts[:-1]):
        tree = repo.save_tree([Node(name=name, type=DIR, mode=_DIR_MODE, mtime=time_ns, atime=time_ns,
                                    ctime=time_ns, subtree=tree)])
    return tree


def volume_root(repo: Repository, tree_id: str, paths: list[str]) -> Node:
    """The directory node a snapshot's one path names (what a restore puts at the volume's root)."""
    if len(paths) != 1:
        raise ResticFormatError(f"the snapshot has {len(paths)} paths ({', '.join(paths)}); "
                                "only a snapshot of one directory can be restored into a volume")
    node: Node | None = None
    for name in [p for p in paths[0].split("/") if p]:
        if node is not None:
            if node.type != DIR or node.subtree is None:
                raise ResticFormatError(f"{node.name!r} on the snapshot's path is not a directory")
            tree_id = node.subtree
        found = [n for n in repo.load_tree(tree_id) if n.name == name]
        if not found:
            raise ResticFormatError(f"the snapshot's tree has no {name!r} on its path {paths[0]}")
        node = found[0]
    if node is None or node.type != DIR:
        raise ResticFormatError(f"the snapshot's path {paths[0]} is not a directory")
    return node


def walk(repo: Repository, root: Node, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Every entry under a directory node, depth first in name order, with its path relative to it."""
    if root.subtree is None:
        return
    for node in repo.load_tree(root.subtree):
        path = f"{prefix}/{node.name}" if prefix else node.name
        yield path, node
        if node.type == DIR:
            yield from walk(repo, node, path)


def relative(snapshot_path: str, path: str) -> str:
    """A path as the user gives it, relative to the snapshot's directory: `etc/app.conf`, or as `restic ls` shows
    it, under the snapshot's path (`/data/etc/app.conf`). Another absolute path is not in the backup."""
    if not path.startswith("/"):
        return path
    base = [p for p in snapshot_path.split("/") if p]
    given = [p for p in path.split("/") if p]
    if given[:len(base)] != base:
        raise ResticFormatError(f"{path!r} is not in the backup: its paths are under {snapshot_path} (as restic ls "
                                f"shows them) or relative to it ({'/'.join(given) or '.'} without the leading /)")
    return "/".join(given[len(base):])


def find(repo: Repository, root: Node, path: str) -> Node:
    """The node at a relative path below a directory node ("" is the directory itself)."""
    node = root
    for name in [p for p in path.split("/") if p not in ("", ".")]:
        if name == ".." or node.type != DIR or node.subtree is None:
            raise ResticFormatError(f"{path!r} is not in the backup")
        found = [n for n in repo.load_tree(node.subtree) if n.name == name]
        if not found:
            raise ResticFormatError(f"{path!r} is not in the backup")
        node = found[0]
    return node


def unchanged(old: Node | None, new: Node) -> bool:
    """restic's rule for reusing a file's content from the parent snapshot without reading it."""
    return (old is not None and old.type == FILE and new.type == FILE and old.size == new.size
            and old.mtime == new.mtime and old.ctime == new.ctime and old.inode == new.inode
            and all(old.content) and len(old.content) >= (1 if old.size else 0))


def parent_files(repo: Repository, root: Node) -> dict[str, Node]:
    return {path: node for path, node in walk(repo, root) if node.type == FILE}
