"""The incremental restore's decisions without a cluster: the hash script run by real busybox and GNU
`sha256sum` over odd names and read back exactly, and the plan of what must be sent from a listing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.volumes import incremental_restore, scripts
from kubectl_dr.volumes.entries import DIR, FILE, HARDLINK, SYMLINK, Entries, Entry
from kubectl_dr.volumes.listing import Found

NAMES = ["plain", "new\nline", "back\\slash", "carriage\rreturn", "sp ace", "caf\udce9-latin1", "dir/inner"]


def _tools(tmp_path: Path, flavour: str) -> dict[str, str]:
    if flavour == "gnu":
        return {**os.environ}
    bin_dir = tmp_path / "bb"
    bin_dir.mkdir()
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox is installed by .ci/run"
    for applet in ("sh", "sha256sum", "dd", "true", "cat", "rm"):
        (bin_dir / applet).symlink_to(busybox)
    return {"PATH": str(bin_dir)}


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
    env = _tools(tmp_path, flavour)
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
