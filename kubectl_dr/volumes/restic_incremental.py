"""An incremental backup into a restic repository: only what changed since the claim's last snapshot crosses
the wire.

The pod has listed the volume (with change times). A file whose path, size, mtime, ctime and inode equal
its node in the parent snapshot (restic's rule) keeps the parent's content, unread. The others, one
path per hard-linked inode, and every symlink (the listing has no link targets) are streamed as one tar
of exactly those paths, checked like every transfer (size and SHA-256 in the pod and here, the archive
read as a tar reads it, nothing in it that was not asked for). Nodes take their metadata from the
listing; what tar read of a file that changed meanwhile is what is kept, with a warning. A large file
that changed is compared with the parent chunk by chunk in the pod instead (restic_blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.errors import VerificationError
from kubectl_dr.kube.client import Kube
from kubectl_dr.repo.restic import archiver, nodes
from kubectl_dr.repo.restic.blob_stream import BlobStream
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot
from kubectl_dr.units import count
from kubectl_dr.volumes import entries as entries_module
from kubectl_dr.volumes import rescue_pod, restic_blocks, scripts, transfer
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.reconcile import Skipped, excluded
from kubectl_dr.volumes.restic_content import ContentCutter
from kubectl_dr.volumes.tar_reader import FILE as TAR_FILE
from kubectl_dr.volumes.tar_reader import SYMLINK as TAR_SYMLINK
from kubectl_dr.volumes.tar_reader import ArchiveError, Member, TarReader

# One `sh -c` argument holds at most 128 KiB on Linux (MAX_ARG_STRLEN): more changed paths than fit are
# read by a full stream instead.
MAX_SCRIPT = 96 * 1024
_TYPES = {entries_module.FILE: nodes.FILE, entries_module.DIR: nodes.DIR, entries_module.SYMLINK: nodes.SYMLINK,
          entries_module.FIFO: nodes.FIFO, entries_module.CHAR: nodes.CHARDEV, entries_module.BLOCKDEV: nodes.DEV,
          entries_module.SOCKET: nodes.SOCKET}


@dataclass
class Plan:
    keep: dict[str, Found]  # every entry the snapshot will hold
    reuse: dict[str, list[str]] = field(default_factory=dict)  # path → the parent's content
    send: list[str] = field(default_factory=list)  # paths to stream (changed files, symlinks)
    same_inode: dict[str, str] = field(default_factory=dict)  # hard link → the path whose content it shares
    blocks: dict[str, restic_blocks.BlockFile] = field(default_factory=dict)  # large files compared by chunk

    @property
    def reused_bytes(self) -> int:
        return sum(self.keep[p].size for p in self.reuse)

    def script(self, tar: str) -> str:
        return scripts.paths_backup_script(tar, self.send)


def parent_files(repo: Repository, parent: Snapshot,
                 cancelled: Callable[[], bool] = lambda: False) -> dict[str, nodes.Node]:
    """The parent snapshot's files by path (what `plan` compares the listing with); stops with
    `Cancelled` as soon as `cancelled()` says so (the backup failed while this ran beside it)."""
    out: dict[str, nodes.Node] = {}
    for path, node in archiver.walk(repo, archiver.volume_root(repo, parent.tree, parent.paths)):
        if cancelled():
            raise Cancelled
        if node.type == nodes.FILE:
            out[path] = node
    return out


class Cancelled(Exception):
    """The parent's trees were not read to the end: the backup stopped meanwhile."""


def plan(repo: Repository, old: dict[str, nodes.Node], found: dict[str, Found], skipped: list[Skipped]) -> Plan:
    """`old`: the parent snapshot's files (`parent_files`)."""
    gone = {s.path for s in skipped}
    keep = {p: f for p, f in found.items()
            if not (p and (excluded(p) or any(p == g or p.startswith(g + "/") for g in gone)))}
    result = Plan(keep)
    sent_inode: dict[int, str] = {}
    reused_inode: dict[int, list[str]] = {}
    for path, f in keep.items():
        if f.kind == entries_module.SYMLINK:
            result.send.append(path)
        if f.kind != entries_module.FILE:
            continue
        prev = old.get(path)
        if (prev is not None and prev.size == f.size and prev.mtime == f.mtime * nodes.NS
                and prev.ctime == f.ctime * nodes.NS and prev.inode == f.inode
                and all(repo.has_blob(b) for b in prev.content)):
            result.reuse[path] = list(prev.content)
            reused_inode[f.inode] = result.reuse[path]
        elif f.links > 1 and f.inode in reused_inode:
            result.reuse[path] = reused_inode[f.inode]
        elif f.links > 1 and f.inode in sent_inode:
            result.same_inode[path] = sent_inode[f.inode]
        elif (block := restic_blocks.candidate(repo, path, f, prev)) is not None:
            result.blocks[path] = block
        else:
            result.send.append(path)
            if f.links > 1:
                sent_inode[f.inode] = path
    return result


def fits(p: Plan, tar: str) -> bool:
    return len(p.script(tar).encode("utf-8", "surrogateescape")) <= MAX_SCRIPT


def stream(kube: Kube, repo: Repository, pod: rescue_pod.RescuePod, p: Plan, console: Console,
           what: str) -> tuple[dict[str, list[str]], dict[str, str], int]:
    """Streams the plan's paths; returns (path → content blobs, symlink → target, bytes received)."""
    assert pod.tools is not None
    if not p.send:
        return {}, {}, 0
    asked = set(p.send)
    targets: dict[str, str] = {}

    def member(m: Member) -> None:
        if m.path not in asked:
            raise VerificationError(f"{what}: the archive holds {m.path!r}, which was not asked for")
        check_kind(m, p.keep[m.path].kind, what)
        if m.kind == TAR_SYMLINK:
            targets[m.path] = m.target
        elif m.kind == TAR_FILE and m.size != p.keep[m.path].size:
            console.warn(f"{m.path!r} changed while the backup read it ({p.keep[m.path].size} bytes listed, "
                         f"{m.size} read): kept as read")
            p.keep[m.path].size = m.size
        cutter.member(m)

    expected = sum(p.keep[s].size + 1024 for s in p.send)
    with BlobStream[str](repo) as blobs:  # the changed files' blobs stored as they arrive, as a full backup's
        cutter = ContentCutter(blobs)
        reader = TarReader(gnu_sparse=pod.tools.tar == scripts.GNU, on_member=member, on_data=cutter.data)
        with console.progress(f"backup {count(len(p.send), 'changed entry', 'changed entries')}", expected) as bar:
            checked = transfer.receive_fed(kube, pod, p.script(pod.tools.tar), reader.feed, bar, what)
        if checked.tar_exit != 0:
            raise VerificationError(f"{what}: tar exited with code {checked.tar_exit}:\n{checked.warnings}",
                                    hint="Nothing was kept. A file that vanished since the listing: run it again.")
        try:
            reader.finish()
        except ArchiveError as exc:
            raise VerificationError(f"{what}: the archive is not one kubectl dr can read: {exc.message}") from None
        cutter.finish()
        contents = blobs.close()
        received = checked.size
    missing = asked - set(contents) - set(targets)
    if missing:
        raise VerificationError(f"{what}: the archive lacks {sorted(missing)[0]!r}"
                                + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    return contents, targets, received


def check_kind(m: Member, listed: str, what: str) -> None:
    """The entry tar read must be of the kind the listing saw: a symlink replaced by a file after the listing
    would otherwise become a symlink with an empty target (and a file by a symlink, one without content)."""
    if m.kind != listed:
        raise VerificationError(f"{what}: {m.path!r} was a {listed} when the volume was listed and a {m.kind} when "
                                "tar read it: it changed while the backup ran",
                                hint="Nothing was kept. Run the backup again.")


def items(p: Plan, contents: dict[str, list[str]], targets: dict[str, str]) -> list[archiver.Item]:
    out = []
    for path, f in p.keep.items():
        node_type = _TYPES.get(f.kind)
        if node_type is None:
            raise VerificationError(f"{path!r} is of a kind a restic tree cannot hold ({f.kind})")
        content: list[str] = []
        if node_type == nodes.FILE:
            source = p.same_inode.get(path, path)
            content = p.reuse[path] if path in p.reuse else contents[source]
        out.append(archiver.Item(path, node(path, f, node_type, content, targets.get(path, ""))))
    return out


def node(path: str, f: Any, node_type: str, content: list[str], target: str) -> nodes.Node:
    """A tree node from the pod's listing (f: a listing entry)."""
    import os

    name = path.rsplit("/", 1)[-1] if path else "root"
    try:
        nodes.check_node_name(name)
        name.encode("utf-8")
    except (nodes.ResticFormatError, UnicodeEncodeError):
        raise VerificationError(f"{path!r} is not a name a restic tree can hold (not UTF-8)",
                                hint="Back this volume up into a kubectl-dr repository instead.") from None
    return nodes.Node(
        name=name, type=node_type, mode=nodes.go_mode(node_type, f.mode), mtime=f.mtime * nodes.NS,
        atime=f.mtime * nodes.NS, ctime=f.ctime * nodes.NS, uid=f.uid, gid=f.gid, inode=f.inode, links=f.links,
        size=f.size if node_type == nodes.FILE else 0, linktarget=target,
        device=os.makedev(*f.rdev) if node_type in (nodes.DEV, nodes.CHARDEV) else 0, content=content,
        subtree="" if node_type == nodes.DIR else None)
