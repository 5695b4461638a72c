"""Racy change times: a file changed in the listing's own second (by the node's clock) may change again in
that second after the listing or after tar read it, and its size, mtime, change time and inode would still
match. Such a file's change time is stored one nanosecond on, so the next backup reads it again instead of
reusing the stored content, and a restore hashes it instead of trusting it. A real repository, no cluster."""

from __future__ import annotations

from pathlib import Path

from kubectl_dr.repo.restic import archiver, nodes
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot
from kubectl_dr.volumes import restic_incremental
from kubectl_dr.volumes.listing import Found
from kubectl_dr.volumes.restic_backup import mark_racy
from kubectl_dr.volumes.restic_source import _stat_key

NS = nodes.NS
LISTED_AT = 1_800_000_000  # the node's clock just before the listing


def _found(path: str, ctime: int, inode: int) -> Found:
    return Found(path, "file", 0o640, 5, 1, inode, 1000, 1000, 1_700_000_000, 8, (0, 0), ctime)


def _node(f: Found, blobs: list[str]) -> nodes.Node:
    return nodes.Node(name=f.path, type=nodes.FILE, mode=0o640, size=f.size, inode=f.inode, links=1, uid=1000,
                      gid=1000, mtime=f.mtime * NS, ctime=f.ctime * NS, content=blobs)


def test_a_file_changed_in_the_listings_second_is_read_again_and_never_trusted(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw")
    blobs = repo.save_blobs(DATA_BLOB, [b"hello"])
    repo.flush()
    listed = {
        "old": _found("old", LISTED_AT - 2, 11),  # changed two seconds before the listing: settled
        "edge": _found("edge", LISTED_AT - 1, 12),  # the clock that stamps change times may lag `date`
        "now": _found("now", LISTED_AT, 13),  # the listing's own second
        "later": _found("later", LISTED_AT + 1, 14),  # changed while the listing ran
    }
    items = [archiver.Item(p, _node(f, list(blobs))) for p, f in listed.items()]
    items.append(archiver.Item("sub", nodes.Node(name="sub", type=nodes.DIR, mode=0o755,
                                                   ctime=LISTED_AT * NS)))
    mark_racy(items, LISTED_AT)
    stored = {item.path: item.node for item in items}
    assert stored["old"].ctime == (LISTED_AT - 2) * NS
    assert [stored[p].ctime - listed[p].ctime * NS for p in ("edge", "now", "later")] == [1, 1, 1]
    assert stored["sub"].ctime == LISTED_AT * NS  # only files: a directory's content is its listing

    # The next backup lists the volume unchanged: only the settled file is reused unread.
    parent_files = {p: n for p, n in stored.items() if n.type == nodes.FILE}
    again = {p: _found(p, f.ctime, f.inode) for p, f in listed.items()}
    plan = restic_incremental.plan(repo, parent_files, again, [])
    assert set(plan.reuse) == {"old"}
    assert sorted(plan.send) == ["edge", "later", "now"]

    # A restore of that snapshot into the same claim trusts only the settled file's metadata.
    snap = Snapshot(time=(LISTED_AT + 30) * NS, tree="0" * 64, paths=["/data"])
    assert _stat_key(stored["old"], snap) == (11, 5, 1_700_000_000, LISTED_AT - 2)
    assert [_stat_key(stored[p], snap) for p in ("edge", "now", "later")] == [None, None, None]

    # Marking twice (a retried save) moves nothing further.
    mark_racy(items, LISTED_AT)
    assert stored["now"].ctime == LISTED_AT * NS + 1
