"""Archive listing and safety checks, the pod's listing parser and the tree comparison (pure logic)."""

from __future__ import annotations

import io
import tarfile

import pytest

from kubectl_dr.volumes import archive, scripts, tree_check
from kubectl_dr.volumes.archive import UnsafeArchiveError


def tar_of(*members: tuple[str, str, str]) -> io.BytesIO:
    """(name, type, target-or-content) → an in-memory tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1000
            if kind == "file":
                data = extra.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
            info.linkname = extra
            info.mode = 0o755 if kind == "dir" else 0o777 if kind == "sym" else 0o644
            tar.addfile(info)
    buf.seek(0)
    return buf


def test_listing_counts_and_normalises() -> None:
    listing = archive.list_archive(tar_of(("./", "dir", ""), ("./a/", "dir", ""), ("./a/f", "file", "hello"),
                                          ("./a/h", "hard", "./a/f"), ("./l", "sym", "/etc/passwd")))
    assert list(listing.entries) == ["", "a", "a/f", "a/h", "l"]
    assert listing.entries["a/h"].target == "a/f"
    assert listing.summary() == {"entries": 5, "files": 2, "directories": 2, "symlinks": 1, "hardLinks": 1,
                                 "other": 0, "contentBytes": 5}
    assert listing.kept_paths() == {"", "a", "a/f", "a/h", "l"}


@pytest.mark.parametrize("members", [
    [("../escape", "file", "x")],
    [("/etc/cron.d/x", "file", "x")],
    [("a/../../x", "file", "x")],
    [("link", "sym", "/etc"), ("link/passwd", "file", "x")],
    [("h", "hard", "../../etc/shadow")],
    [("h", "hard", "/etc/shadow")],
])
def test_unsafe_archives_are_refused(members: list[tuple[str, str, str]]) -> None:
    with pytest.raises(UnsafeArchiveError):
        archive.list_archive(tar_of(*members))


def test_symlinks_pointing_anywhere_are_data() -> None:
    listing = archive.list_archive(tar_of(("abs", "sym", "/etc/passwd"), ("up", "sym", "../../x")))
    assert listing.count(archive.SYMLINK) == 2


def test_not_a_tar() -> None:
    with pytest.raises(Exception, match="tar"):
        archive.list_archive(io.BytesIO(b"\x01" * 2048))


def test_pod_listing_with_newlines_in_names() -> None:
    out = (b"41ed 4096 3 10 0 0 1000\n81a4 5 2 11 0 0 1000\n81a4 5 2 11 0 0 1000\n--\n"
           b".\0./a\nb\0./c\0")
    found = tree_check.parse_listing(out)
    assert set(found) == {"", "a\nb", "c"}
    assert found["a\nb"].kind == "file" and found[""].kind == "dir"


def test_differences_and_extras() -> None:
    listing = archive.list_archive(tar_of(("./", "dir", ""), ("./f", "file", "hello"), ("./g", "hard", "./f")))
    good = tree_check.parse_listing(
        b"41ed 0 2 1 0 0 1000\n81a4 5 2 7 0 0 1000\n81a4 5 2 7 0 0 1000\n81a4 1 1 8 0 0 5\n--\n.\0./f\0./g\0./x\0")
    assert tree_check.differences(listing, good, owners=True) == []
    assert tree_check.extras(listing, good) == ["x"]
    bad = tree_check.parse_listing(b"41ed 0 2 1 0 0 1000\n81a4 4 1 7 0 0 999\n81a4 5 1 9 0 0 1000\n--\n.\0./f\0./g\0")
    problems = tree_check.differences(listing, bad, owners=True)
    assert any("4 bytes" in p for p in problems)
    assert any("mtime" in p for p in problems)
    assert any("not a hard link" in p for p in problems)


def test_stream_report() -> None:
    digest = "a" * 64
    line = b"kubectl-dr-result big=2+0 small=3+1 sha256=" + digest.encode() + b" tar=0\n"
    report = scripts.parse_report(b"tar: warning\n" + line)
    assert (report.size, report.partial_blocks, report.sha256, report.tar_exit) == (2 * 65536 + 1536, 1, digest, 0)
    with pytest.raises(Exception, match="did not report"):
        scripts.parse_report(b"killed\n")


def test_scripts_quote_hostile_names() -> None:
    text = scripts.touch_script([("it's\n$(reboot)", 5)]).decode()
    assert "'/data/it'\"'\"'s\n$(reboot)'" in text
