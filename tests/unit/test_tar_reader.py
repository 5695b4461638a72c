"""The archive reader against the real busybox tar and GNU tar.

Every archive the reader accepts is extracted by both tars, which must succeed and produce the same
tree; every refused one is refused for a reason the case names. The archives are hand-made byte by
byte (tests/tarcraft.py) or written by the tars themselves from a data set owned by a non-root uid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from kubectl_dr.volumes import tar_reader
from kubectl_dr.volumes.tar_reader import ArchiveError, TarReader, UnsafeArchiveError, read_archive
from tests import tarcraft as tc
from tests.datasets import build_roundtrip, differences, snapshot

BUSYBOX = shutil.which("busybox")
GNU_TAR = shutil.which("tar")
pytestmark = pytest.mark.skipif(not BUSYBOX or not GNU_TAR, reason="needs busybox and GNU tar")


def extract(tool: str, archive: Path, into: Path) -> subprocess.CompletedProcess[str]:
    into.mkdir()
    command = [BUSYBOX, "tar"] if tool == "busybox" else [GNU_TAR]
    command += ["-x", "--numeric-owner", "-f", str(archive), "-C", str(into)]
    if tool == "gnu":
        command.insert(2, "-p")
    return subprocess.run(command, capture_output=True, text=True)


def tree(root: Path) -> dict[bytes, object]:
    """The extracted tree, without what busybox tar never restores and kubectl dr sets afterwards from
    the backup's listing: the mtimes of directories and symlinks, and the owners of symlinks."""
    out: dict[bytes, object] = {}
    for path, node in snapshot(root).items():
        if node.kind == "symlink":
            node = replace(node, uid=0, gid=0)
        out[path] = node if node.kind == "file" else replace(node, mtime=0)
    return out


def both_extract_alike(archive: Path, work: Path) -> None:
    results = {tool: extract(tool, archive, work / tool) for tool in ("busybox", "gnu")}
    for tool, result in results.items():
        assert result.returncode == 0, f"{tool} tar failed: {result.stderr}"
    assert differences(tree(work / "busybox"), tree(work / "gnu")) == []  # type: ignore[arg-type]


def write(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "case.tar"
    path.write_bytes(raw)
    return path


def feed_in_pieces(raw: bytes, size: int) -> tar_reader.Archive:
    reader = TarReader()
    for start in range(0, len(raw), size):
        reader.feed(raw[start:start + size])
    return reader.finish()


# --------------------------------------------------------------------------------------------- accepted
ACCEPTED = {
    "plain entries": tc.header(b"./", type=b"5", mode=0o755) + tc.entry(b"./a", b"hello")
    + tc.header(b"./d/", type=b"5", mode=0o2775) + tc.entry(b"./d/b", b"x" * 700, mode=0o600)
    + tc.header(b"./l", type=b"2", link=b"../anywhere", mode=0o777)
    + tc.header(b"./h", type=b"1", link=b"./a") + tc.header(b"./p", type=b"6") + tc.END,
    "posix magic with prefix": tc.header(b"f", magic=tc.POSIX, fields={345: b"some/deep/dir"}) + tc.END,
    "gnu long names": tc.longname(b"./" + b"n" * 180) + tc.entry(b"./" + b"n" * 98, b"long")
    + tc.longname(b"./" + b"t" * 150, b"K") + tc.header(b"./s", type=b"2", link=b"short") + tc.END,
    "large uid in base-256": tc.entry(b"f", b"1", fields={108: tc.base256(1_000_680_000, 8)}) + tc.END,
    "negative mtime in base-256": tc.entry(b"f", b"1", fields={136: tc.base256(-100_000, 12)}) + tc.END,
    "spaces before digits": tc.entry(b"f", b"1", fields={100: b"   644 \0"}) + tc.END,
    "zeros after the marker": tc.entry(b"f", b"1") + tc.END + bytes(20 * 512),
    "implicit parents": tc.entry(b"a/b/c", b"deep") + tc.entry(b"a/b/d", b"too") + tc.END,
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_archives_extract_alike_in_both_tars(case: str, tmp_path: Path) -> None:
    raw = ACCEPTED[case]
    path = write(tmp_path, raw)
    archive = read_archive(path)
    assert archive.end <= len(raw) == archive.size
    # Fed in any pieces, the stream reader agrees with the file reader.
    for size in (1, 511, 513, 4096):
        assert feed_in_pieces(raw, size).members == archive.members
    both_extract_alike(path, tmp_path)


def test_header_values_are_read_as_both_tars_read_them(tmp_path: Path) -> None:
    members = read_archive(write(tmp_path, ACCEPTED["plain entries"])).members
    assert list(members) == ["", "a", "d", "d/b", "l", "h", "p"]
    assert members["d"].mode == 0o2775 and members["d/b"].size == 700 and members["d/b"].uid == 1000
    assert members["l"].target == "../anywhere" and members["h"].target == "a"
    assert read_archive(write(tmp_path, ACCEPTED["large uid in base-256"])).members["f"].uid == 1_000_680_000
    assert read_archive(write(tmp_path, ACCEPTED["negative mtime in base-256"])).members["f"].mtime == -100_000
    assert "some/deep/dir/f" in read_archive(write(tmp_path, ACCEPTED["posix magic with prefix"])).members
    long = read_archive(write(tmp_path, ACCEPTED["gnu long names"])).members
    assert "n" * 180 in long and long["s"].target == "./" + "t" * 150


def test_archives_written_by_both_tars_from_an_apps_files_are_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_roundtrip(data, big_bytes=1 << 20, small_files=40)
    for tool in ("busybox", "gnu"):
        archive = tmp_path / f"{tool}.tar"
        command = [BUSYBOX, "tar"] if tool == "busybox" else [GNU_TAR, "--format=gnu"]
        subprocess.run([*command, "-c", "-f", str(archive), "-C", str(data), "."], check=True, capture_output=True)
        members = read_archive(archive).members
        assert len(members) == len(snapshot(data))
        assert members["links/hard-1"].kind == tar_reader.HARDLINK


# --------------------------------------------------------------------------------------------- refused
FILE = tc.entry(b"f", b"content")
REFUSED: dict[str, tuple[bytes, str]] = {
    "a lone zero block": (FILE + bytes(512) + tc.entry(b"hidden", b"x") + tc.END, "lone zero block"),
    "cut at an entry boundary": (FILE + tc.entry(b"g", b"x"), "no end-of-archive marker"),
    "cut after one zero block": (FILE + bytes(512), "single zero block"),
    "cut inside a header": (FILE + tc.header(b"g")[:300], "cut short inside a header"),
    "cut inside data": ((FILE + tc.entry(b"g", b"y" * 2000))[:-1000], "cut short inside an entry"),
    "a file of zeros": (bytes(10240), "no entries"),
    "data after the marker": (FILE + tc.END + tc.entry(b"late", b"x"), "after its end-of-archive marker"),
    "a pax header": (tc.entry(b"././@PaxHeader", b"20 path=elsewhere\n", type=b"x") + FILE + tc.END, "PAX"),
    "a pax global header": (tc.entry(b"pax_global", b"20 path=elsewhere\n", type=b"g") + FILE + tc.END, "PAX"),
    "a gnu sparse file": (tc.header(b"s", type=b"S", size=0, fields={483: tc.octal(10, 12)}) + tc.END, "sparse"),
    "an unknown type": (tc.header(b"v", type=b"V") + tc.END, "type"),
    "a bad checksum": (tc.header(b"f", checksum=1) + tc.END, "checksum"),
    "no magic": (tc.header(b"f", magic=bytes(8)) + tc.END, "not a ustar header"),
    "garbage in a number": (tc.header(b"f", fields={100: b"06x4\0\0\0\0"}) + tc.END, "not an octal number"),
    "a sign in a number": (tc.header(b"f", fields={100: b"-000644\0"}) + tc.END, "not an octal number"),
    "base-256 mode": (tc.header(b"f", fields={100: tc.base256(0o644, 8)}) + tc.END, "binary"),
    "gnu times in the prefix area": (tc.header(b"f", fields={345: tc.octal(1, 12)}) + tc.END, "prefix"),
    "a nameless header": (tc.header(b"", fields={100: tc.octal(0o644, 8)}) + tc.END, "no name"),
    "data on a directory": (tc.header(b"d/", type=b"5", size=512) + bytes(512) + tc.END, "carries 512 bytes"),
    "data on a hard link": (FILE + tc.header(b"h", type=b"1", size=7, link=b"f") + tc.data(b"content") + tc.END,
                            "carries 7 bytes"),
    "the same path twice": (FILE + FILE + tc.END, "twice"),
    "a file that becomes a parent": (FILE + tc.entry(b"f/g", b"x") + tc.END, "beneath 'f'"),
    "a parent that becomes a file": (tc.entry(b"a/b", b"x") + tc.entry(b"a", b"y") + tc.END, "after entries"),
    "a hard link to nothing": (tc.header(b"h", type=b"1", link=b"missing") + tc.END, "not a file earlier"),
    "a hard link to a directory": (tc.header(b"d/", type=b"5") + tc.header(b"h", type=b"1", link=b"d") + tc.END,
                                   "not a file earlier"),
    "a trailing slash on a file": (tc.entry(b"f/", b"x") + tc.END, "ends in '/'"),
    "a dot component": (tc.entry(b"a/./b", b"x") + tc.END, "'.' path component"),
    "a long name without an entry": (tc.longname(b"x" * 200) + tc.END, "followed by the end"),
    "two long names in a row": (tc.longname(b"x" * 200) + tc.longname(b"y" * 200) + FILE + tc.END, "in a row"),
}
UNSAFE: dict[str, bytes] = {
    "dot-dot": tc.entry(b"../escape", b"x") + tc.END,
    "absolute": tc.entry(b"/etc/cron.d/x", b"x") + tc.END,
    "dot-dot inside": tc.entry(b"a/../../x", b"x") + tc.END,
    "beneath a symlink": tc.header(b"link", type=b"2", link=b"/etc") + tc.entry(b"link/passwd", b"x") + tc.END,
    "hard link escaping": tc.header(b"h", type=b"1", link=b"../../etc/shadow") + tc.END,
    "hard link absolute": tc.header(b"h", type=b"1", link=b"/etc/shadow") + tc.END,
    "hard link under a symlink": FILE + tc.header(b"s", type=b"2", link=b".") + tc.header(b"h", type=b"1",
                                                                                          link=b"s/f") + tc.END,
    "long name escaping": tc.longname(b"../" * 40 + b"x") + tc.entry(b"x", b"x") + tc.END,
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_malformed_archives_are_refused_with_the_reason(case: str, tmp_path: Path) -> None:
    raw, reason = REFUSED[case]
    with pytest.raises(ArchiveError) as caught:
        read_archive(write(tmp_path, raw))
    assert reason in caught.value.message + (caught.value.hint or "")
    with pytest.raises(ArchiveError):  # the stream reader refuses it too, whatever the pieces
        archive = feed_in_pieces(raw, 700)
        if archive.empty:
            raise tar_reader.empty_archive_error("stream")


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_archives_that_write_outside_are_refused(case: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        read_archive(write(tmp_path, UNSAFE[case]))


def test_the_tars_really_disagree_on_what_is_refused(tmp_path: Path) -> None:
    """Why the rules exist: busybox extracts entries after a lone zero block, GNU tar stops there."""
    path = write(tmp_path, REFUSED["a lone zero block"][0])
    extract("busybox", path, tmp_path / "bb")
    extract("gnu", path, tmp_path / "gnu")
    assert (tmp_path / "bb" / "hidden").exists()
    assert not (tmp_path / "gnu" / "hidden").exists()


def test_an_empty_archive_is_accepted_when_asked(tmp_path: Path) -> None:
    raw = tc.header(b"./", type=b"5") + tc.END
    with pytest.raises(ArchiveError, match="no entries"):
        read_archive(write(tmp_path, raw))
    assert list(read_archive(write(tmp_path, raw), allow_empty=True).members) == [""]


def test_gnu_sparse_members_when_gnu_tar_extracts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "sparse", "wb") as f:
        f.truncate(10 << 20)
        f.seek(5_000_000)
        f.write(b"hello")
    os.chown(data / "sparse", 1000, 1000)
    archive = tmp_path / "sparse.tar"
    subprocess.run([GNU_TAR, "--format=gnu", "--sparse", "-c", "-f", str(archive), "-C", str(data), "."],
                   check=True)
    with pytest.raises(ArchiveError, match="sparse"):
        read_archive(archive)
    member = read_archive(archive, gnu_sparse=True).members["sparse"]
    assert (member.size, member.sparse, member.uid) == (10 << 20, True, 1000)


@pytest.mark.parametrize("step", [1, 511, 4096])
def test_on_data_gets_each_files_bytes_without_padding_however_the_stream_is_cut(tmp_path: Path, step: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {"a": os.urandom(1000), "b": b"", "c": os.urandom(1536), "d/e": os.urandom(3)}
    for name, data in files.items():
        (src / name).parent.mkdir(exist_ok=True)
        (src / name).write_bytes(data)
    os.symlink("a", src / "link")
    archive = subprocess.run(["busybox", "tar", "-c", "-f", "-", "."], cwd=src, capture_output=True,
                             check=True).stdout
    got: dict[str, bytearray] = {}
    current: list[str] = []

    def member(m: tar_reader.Member) -> None:
        current[:] = [m.path]
        got.setdefault(m.path, bytearray())

    reader = TarReader(on_member=member, on_data=lambda view: got[current[0]].extend(view))
    for at in range(0, len(archive), step):
        reader.feed(archive[at:at + step])
    reader.finish()
    assert {p: bytes(d) for p, d in got.items() if d or p in files} == files
    assert got["link"] == b"" and got[""] == b""
    with pytest.raises(ValueError, match="on_data"):
        TarReader(on_data=lambda view: None).skipped(0)
