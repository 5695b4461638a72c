"""The incremental restore's decisions without a cluster: the hash script run by real busybox and GNU
`sha256sum` over odd names and read back exactly, and the plan of what must be sent from a listing."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.volumes import incremental_restore, scripts
from kubectl_dr.volumes.entries import DIR, FILE, HARDLINK, SYMLINK, Entries, Entry
from kubectl_dr.volumes.listing import Found
from tests.restic import shells

NAMES = ["plain", "new\nline", "back\\slash", "carriage\rreturn", "sp ace", "caf\udce9-latin1", "dir/inner"]



@pytest.mark.parametrize("flavour", ["busybox", "gnu"])
def test_hashes_of_odd_names_are_read_back_exactly_and_an_unreadable_file_has_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    data = tmp_path / "data"
    (data / "dir").mkdir(parents=True)
    want = {}
    for i, name in enumerate(NAMES):
        content = os.urandom(100 + i)
        with open(os.path.join(os.fsencode(data), name.encode("utf-8", "surrogateescape")), "wb") as f:
            f.write(content)
        want[name] = hashlib.sha256(content).hexdigest()
    monkeypatch.setattr(scripts, "DATA", str(data))
    monkeypatch.setattr(scripts, "SCRATCH", str(tmp_path))
    asked = [*NAMES[:3], "gone", *NAMES[3:]]  # a file that vanished: sha256sum prints no line for it
    # And chunk by chunk at offsets, as a restic file of several blobs is compared: pieces of a file with an
    # odd name, one past its end (hashes as empty), and one of a file that is gone.
    big = os.urandom(3 * 65536 + 100)
    with open(os.path.join(os.fsencode(data), b"big\nfile"), "wb") as f:
        f.write(big)
    pieces = [(0, 65536 + 7), (65536 + 7, 2 * 65536 + 93), (len(big), 10)]
    chunked = [("big\nfile", pieces), ("gone-too", [(0, 5)])]
    script = tmp_path / "hashes.sh"
    script.write_bytes(scripts.hash_list_script(asked, chunked))
    env = shells.tools(tmp_path, flavour)
    out = subprocess.run(["sh", str(script)], capture_output=True, env=env, check=True).stdout
    # The lines shared out among one, two (the default) or five hashing processes: the same output, in order.
    for workers in (1, 5):
        script.write_bytes(scripts.hash_list_script(asked, chunked, sizes={n: 100 for n in asked}, workers=workers))
        assert subprocess.run(["sh", str(script)], capture_output=True, env=env, check=True).stdout == out
    assert not list(tmp_path.glob("hashes.[0-9]"))
    hashes, cursor = incremental_restore.parse_hashes(out + b"\0" * 300, asked)  # the stream's zero padding too
    assert hashes == want
    empty = hashlib.sha256().hexdigest()
    assert incremental_restore.parse_pieces(out + b"\0" * 300, cursor, 4) == [
        hashlib.sha256(big[o:o + n]).hexdigest() for o, n in pieces] + [empty]
    with pytest.raises(Exception, match="name no file asked for"):
        incremental_restore.parse_pieces(out, cursor, 3)
    with pytest.raises(Exception, match="cut short or garbled"):
        incremental_restore.parse_pieces(out[:-10], cursor, 4)


def _entries(*items: Entry) -> Entries:
    entries = Entries()
    entries.items[""] = Entry("", DIR, 0o755, 0, 0, 0, 0, "", 0, (0, 0))
    for e in items:
        entries.items[e.path] = e
    return entries


def _file(path: str, size: int) -> Entry:
    return Entry(path, FILE, 0o644, 1000, 1000, size, 5, "", (size + 511) // 512, (0, 0))


def _found(path: str, kind: str, size: int = 0, *, inode: int = 0, links: int = 1, mode: int = 0o644) -> Found:
    return Found(path, kind, mode, size, links, inode or hash(path) & 0xFFFF, 1000, 1000, 7, size // 512)


def test_the_plan_hashes_only_files_of_the_same_size_and_sends_broken_hard_links_whole() -> None:
    entries = _entries(
        Entry("d", DIR, 0o755, 0, 0, 0, 0, "", 0, (0, 0)), _file("d/same", 10), _file("d/resized", 10),
        _file("d/missing", 10), Entry("link", SYMLINK, 0o777, 0, 0, 0, 0, "d/same", 0, (0, 0)),
        _file("db", 40), Entry("db.hard", HARDLINK, 0o644, 0, 0, 0, 0, "db", 0, (0, 0)),
        _file("intact", 8), Entry("intact.hard", HARDLINK, 0o644, 0, 0, 0, 0, "intact", 0, (0, 0)),
        _file("linked-elsewhere", 3), _file("under-removed/x", 3),
        Entry("empty-dir", DIR, 0o700, 0, 0, 0, 0, "", 0, (0, 0)))
    found = {f.path: f for f in [
        _found("", DIR), _found("d", DIR, mode=0o700), _found("d/same", FILE, 10, mode=0o600),
        _found("d/resized", FILE, 11), _found("link", SYMLINK, 6),
        _found("db", FILE, 40, inode=5, links=1), _found("db.hard", FILE, 40, inode=6, links=1),
        _found("intact", FILE, 8, inode=9, links=2), _found("intact.hard", FILE, 8, inode=9, links=2),
        _found("linked-elsewhere", FILE, 3, inode=11, links=2), _found("under-removed", DIR),
        _found("under-removed/x", FILE, 3)]}
    delta, candidates = incremental_restore.plan(entries, found, {"under-removed"})
    # Same size and the backup's links: hashed, whatever the metadata (d/same's mode is set afterwards).
    assert candidates == ["d/same", "intact"]
    assert delta.send == {"d/resized", "d/missing", "link", "db", "db.hard", "linked-elsewhere", "under-removed/x",
                          "empty-dir"}


def test_only_the_very_files_the_snapshots_backup_read_are_trusted_without_a_hash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import Any, cast

    from kubectl_dr.repo.restic import nodes
    from kubectl_dr.repo.restic.snapshots import Snapshot
    from kubectl_dr.ui.console import TerminalConsole
    from kubectl_dr.ui.terminals import Terminals
    from kubectl_dr.volumes.restic_source import _stat_key
    from kubectl_dr.volumes.source import Source
    from kubectl_dr.volumes.tar_reader import Archive

    ns = nodes.NS
    snap = Snapshot(time=2_000_000_000 * ns + 5, tree="0" * 64, paths=["/data"])

    def node(ctime: int, mtime: int = 1_500_000_000 * ns) -> nodes.Node:
        return nodes.Node(name="f", type=nodes.FILE, mtime=mtime, ctime=ctime, inode=42, size=10)

    assert _stat_key(node(1_999_999_999 * ns), snap) == (42, 10, 1_500_000_000, 1_999_999_999)
    assert _stat_key(node(2_000_000_000 * ns), snap) is None  # the snapshot's own second: a write after the
    assert _stat_key(node(1_999_999_999 * ns + 1), snap) is None  # listing could keep it; restic's ns times
    assert _stat_key(node(1_000 * ns, mtime=5), snap) is None
    assert _stat_key(nodes.Node(name="f", type=nodes.FILE, ctime=ns, size=10), snap) is None  # no inode

    entries = _entries(Entry("same", FILE, 0o644, 0, 0, 10, 1_500_000_000, "", 1, (0, 0)))
    listed = {"same": Found("same", FILE, 0o644, 10, 1, 42, 0, 0, 1_500_000_000, 1, (0, 0), 1_999_999_999)}
    src = Source(Path("unused"), 10, None, None, Archive(), entries, True, chunks={"same": [("a" * 64, 10)]},
                 unchanged_since={"same": (42, 10, 1_500_000_000, 1_999_999_999)})
    console = TerminalConsole(terminals=Terminals(False, False, False))
    # Nothing to hash, so no pod is asked: the kube client and the pod are never touched.
    delta = incremental_restore.decide(cast(Any, None), cast(Any, None), src, listed, set(), console)
    assert (delta.trusted_files, delta.hashed_files, delta.skipped_files, delta.send) == (1, 0, 1, set())
    # Changed since (another change time): hashed in the pod (here: what would be asked of it, answered).
    asked: list[list[str]] = []

    def hash_in_pod(kube: Any, pod: Any, whole: list[str], chunked: Any, sizes: Any) -> Any:
        asked.append(whole)
        return {p: "a" * 64 for p in whole}, [], 100

    monkeypatch.setattr(incremental_restore, "hash_in_pod", hash_in_pod)
    listed["same"].ctime += 1
    delta = incremental_restore.decide(cast(Any, None), cast(Any, None), src, listed, set(), console)
    assert asked == [["same"]] and (delta.trusted_files, delta.hashed_files, delta.skipped_files) == (0, 1, 1)


def test_reading_a_snapshot_stops_at_the_next_entry_once_the_restore_stopped(tmp_path: Path) -> None:
    """A refusal or a Ctrl-C while the snapshot's trees are read beside the claim's lookup stops the reading
    (a million files on a remote repository would otherwise hold the exit for minutes)."""
    from kubectl_dr.repo.restic.backend import LocalBackend
    from kubectl_dr.repo.restic.repository import Repository
    from kubectl_dr.ui.console import TerminalConsole
    from kubectl_dr.ui.terminals import Terminals
    from kubectl_dr.volumes import restic_source
    from tests.restic.oracle import PASSWORD, restic

    volume = tmp_path / "vol"
    for d in range(3):
        (volume / f"d{d}").mkdir(parents=True)
        for f in range(20):
            (volume / f"d{d}" / f"f{f}").write_bytes(os.urandom(f + 1))
    restic(tmp_path / "repo", "init")
    restic(tmp_path / "repo", "backup", str(volume), "--host", "ns/claim")
    repo = Repository.open(LocalBackend(tmp_path / "repo"), PASSWORD.encode())
    (snap,) = repo.snapshots()
    console = TerminalConsole(terminals=Terminals(False, False, False))
    whole = restic_source.build(repo, snap, tmp_path / "w1", console)
    assert len(whole.entries) == 64  # the root, 3 directories, 60 files

    asked = 0

    def stop_after_ten() -> bool:
        nonlocal asked
        asked += 1
        return asked > 10

    with pytest.raises(restic_source.Stopped):
        restic_source.build(repo, snap, tmp_path / "w2", console, cancelled=stop_after_ten)
    assert asked == 11  # asked before each entry, stopped at the eleventh
