"""A restore's large files written in place, without a cluster: which files qualify, which chunks are written,
and the writer run inside the real restore stream script by real busybox and GNU sh/dd/tee/sha256sum, fed the
chunks read back from a real repository — the file grown, shrunk or rewritten in pages ends equal to the
snapshot's, and a stream cut short stops the writer with an error."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.errors import VerificationError
from kubectl_dr.repo.restic.backend import LocalBackend
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.volumes import incremental_restore, restic_in_place, scripts
from kubectl_dr.volumes.entries import FILE, Entry
from kubectl_dr.volumes.incremental_restore import InPlace
from kubectl_dr.volumes.listing import Found
from tests.restic import shells

MIB = 1 << 20
PAGE = 4096


def _found(size: int, links: int = 1) -> Found:
    return Found("db", "file", 0o600, size, links, 7, 1000, 1000, 1_700_000_000, (size + 511) // 512, (0, 0), 1)


def anyone(_f: Found) -> bool:
    return True


def test_only_large_single_link_files_the_index_accounts_for_are_written_in_place() -> None:
    chunks = [("a" * 64, MIB)] * 70
    entry = Entry("db", FILE, 0o600, 1000, 1000, 70 * MIB, 0, blocks=70 * MIB // 512)
    block = incremental_restore._in_place(entry, _found(3), ["db"], chunks, restic_in_place.THRESHOLD, anyone)
    assert block is not None and block.have == 3 and block.size == 70 * MIB
    assert incremental_restore._in_place(entry, _found(70 * MIB, links=2), ["db"], chunks, 64 * MIB, anyone) is None
    assert incremental_restore._in_place(entry, _found(70 * MIB), ["db", "db.link"], chunks, 64 * MIB, anyone) is None
    assert incremental_restore._in_place(entry, None, ["db"], chunks, 64 * MIB, anyone) is None
    assert incremental_restore._in_place(entry, _found(70 * MIB), ["db"], chunks, None, anyone) is None  # --full
    assert incremental_restore._in_place(entry, _found(70 * MIB), ["db"], chunks, 71 * MIB, anyone) is None
    assert incremental_restore._in_place(entry, _found(70 * MIB), ["db"], chunks[:-1], 64 * MIB, anyone) is None
    assert incremental_restore._in_place(entry, _found(70 * MIB), ["db"], [*chunks, ("b" * 64, 0)], 64 * MIB,
                                         anyone) is None  # a chunk of no length: the index is not trusted
    sparse = Entry("db", FILE, 0o600, 1000, 1000, 70 * MIB, 0, blocks=8)
    assert incremental_restore._in_place(sparse, _found(70 * MIB), ["db"], chunks, 64 * MIB, anyone) is None
    assert incremental_restore._in_place(entry, _found(70 * MIB), ["db"], chunks, 64 * MIB, lambda f: False) is None


def test_a_file_the_pod_cannot_open_for_writing_is_not_written_in_place() -> None:
    def mode(m: int, uid: int = 1000, gid: int = 1000) -> Found:
        return Found("db", "file", m, 1, 1, 7, uid, gid, 0, 1)

    assert incremental_restore.writable(mode(0o400), 0, ())  # root writes any file
    assert incremental_restore.writable(mode(0o600), 1000, ())
    assert not incremental_restore.writable(mode(0o444), 1000, (1000,))  # the app's read-only file
    assert incremental_restore.writable(mode(0o460, uid=5), 1000, (1000,))  # by its group
    assert not incremental_restore.writable(mode(0o604, uid=5, gid=6), 1000, (1000,))
    assert incremental_restore.writable(mode(0o602, uid=5, gid=6), 1000, (1000,))


def test_the_chunks_written_are_those_that_differ_and_those_beyond_the_volume_copy() -> None:
    chunks = [(str(i) * 64, MIB) for i in range(4)]
    grown = InPlace("db", 4 * MIB, 2 * MIB + 5, chunks)  # the volume holds two whole chunks and a bit
    assert grown.within() == [(0, MIB), (MIB, MIB)]
    grown.same = [True, False]
    assert grown.writes() == [(MIB, MIB, "1" * 64), (2 * MIB, MIB, "2" * 64), (3 * MIB, MIB, "3" * 64)]
    assert grown.written == 3 * MIB
    shrunk = InPlace("db", 4 * MIB, 9 * MIB, chunks, [True, True, True, True])
    assert shrunk.writes() == [] and shrunk.written == 0  # only cut to the snapshot's size


def test_the_pods_hashes_choose_the_chunks_kept_and_whether_the_file_is_written_at_all() -> None:
    chunks = [(str(i) * 64, MIB) for i in range(4)]
    paged = InPlace("db", 4 * MIB, 4 * MIB, chunks)
    assert paged.compare(["0" * 64, "f" * 64, "2" * 64, "e" * 64])  # pages changed in chunks 1 and 3
    assert paged.same == [True, False, True, False]
    assert [o for o, _, _ in paged.writes()] == [MIB, 3 * MIB]
    equal = InPlace("db", 4 * MIB, 4 * MIB, chunks)
    assert not equal.compare([b for b, _ in chunks]) and equal.writes() == []  # nothing to do: left alone
    appended = InPlace("db", 4 * MIB, 4 * MIB + 1, chunks)
    assert appended.compare([b for b, _ in chunks]) and appended.writes() == []  # only cut
    short = InPlace("db", 4 * MIB, 2 * MIB + 7, chunks)
    assert short.compare(["0" * 64, "1" * 64]) and short.same == [True, True]
    assert short.written == 2 * MIB  # chunks 2 and 3: beyond the volume copy's whole chunks
    moved = InPlace("db", 4 * MIB, 4 * MIB, chunks)
    assert moved.compare(["1" * 64, "2" * 64, "3" * 64, "0" * 64])  # a chunk's hash at another offset is no match
    assert moved.same == [False] * 4
    with pytest.raises(VerificationError, match="hashed 3 chunks, 4 were asked for"):
        InPlace("db", 4 * MIB, 4 * MIB, chunks).compare(["0" * 64] * 3)


def test_the_index_must_account_for_the_file_with_chunks_of_positive_length() -> None:
    assert incremental_restore.accounted([], 0)
    assert incremental_restore.accounted([("a" * 64, 5), ("b" * 64, 7)], 12)
    assert not incremental_restore.accounted([("a" * 64, 5), ("b" * 64, 7)], 13)
    assert not incremental_restore.accounted([("a" * 64, 12), ("b" * 64, 0)], 12)
    assert not incremental_restore.accounted([("a" * 64, 13), ("b" * 64, -1)], 12)


def test_a_blob_repeated_in_the_chunks_to_write_is_read_from_the_repository_once(tmp_path: Path) -> None:
    zeros, page = bytes(MIB), os.urandom(300_000)
    ids = {hashlib.sha256(b).hexdigest(): b for b in (zeros, page)}
    z, p = (hashlib.sha256(b).hexdigest() for b in (zeros, page))
    loads: list[str] = []

    def load(blob: str) -> bytes:
        loads.append(blob)
        return ids[blob]

    files = [InPlace("a", 3 * MIB + 300_000, 0, [(z, MIB), (p, 300_000), (z, MIB), (z, MIB)]),
             InPlace("b", MIB, 0, [(z, MIB)])]
    size, digest = restic_in_place.spool(files, load, tmp_path / "chunks")
    want = zeros + page + zeros + zeros + zeros
    assert sorted(loads) == sorted([z, p])
    assert (tmp_path / "chunks").read_bytes()[:len(want)] == want and size == len(want) + (-len(want) % 512)
    assert hashlib.sha256((tmp_path / "chunks").read_bytes()).hexdigest() == digest
    lying = [InPlace("c", MIB + 5, 0, [(z, MIB), (z, 5)])]  # the index gives one blob two lengths
    with pytest.raises(VerificationError, match="is 1048576 bytes, the index says 5"):
        restic_in_place.spool(lying, load, tmp_path / "chunks")



@pytest.mark.parametrize("flavour", ["busybox", "gnu"])
def test_the_writer_in_the_restore_stream_makes_each_file_the_snapshots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    monkeypatch.setattr(scripts, "DATA", str(data))
    monkeypatch.setattr(scripts, "SCRATCH", str(scratch))
    # The stream script's fixed part names the pod's scratch directory: here, this test's.
    monkeypatch.setattr(scripts, "_FIFOS", scripts._FIFOS.replace("/scratch", str(scratch)))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw")
    # Odd chunk lengths, as restic's content-defined chunker makes them: offsets never whole blocks.
    lengths = [MIB + 17, 700_001, 2 * MIB - 3, 65536, 123_457]
    pieces = [os.urandom(n) for n in lengths]
    want = b"".join(pieces)
    chunks = list(zip(repo.save_blobs(DATA_BLOB, pieces), lengths, strict=True))
    repo.flush()
    offsets = incremental_restore.chunk_offsets(chunks)

    def volume_copy(name: str, content: bytes) -> InPlace:
        (data / name).write_bytes(content)
        block = InPlace(name, len(want), len(content), chunks)
        block.same = [hashlib.sha256(content[o:o + n]).hexdigest() == b for (o, n), (b, _)
                      in zip(block.within(), chunks, strict=False)]
        return block

    paged = bytearray(want)
    paged[MIB - 50:MIB - 50 + PAGE] = os.urandom(PAGE)  # a page straddling chunks 0 and 1
    paged[offsets[3][0] + 5:offsets[3][0] + 9] = b"XXXX"
    files = [volume_copy("paged", bytes(paged)),
             volume_copy("grown it's", want + os.urandom(3 * MIB)),
             volume_copy("shrunk odd\nname", want[:offsets[2][0] + 10])]
    assert [f.same for f in files] == [[False, False, True, False, True], [True] * 5, [True, True]]
    script = tmp_path / "writer.sh"
    script.write_bytes(restic_in_place.writer_script(files))
    spool = tmp_path / "chunks"
    size, digest = restic_in_place.spool(files, repo.load_blob, spool)
    assert size % 512 == 0 and size - sum(f.written for f in files) < 512
    assert hashlib.sha256(spool.read_bytes()).hexdigest() == digest
    stream = scripts.restore_script(size, tar=scripts.BUSYBOX, keep_owners=False, command=f"sh {script}")
    env = shells.tools(tmp_path, flavour)
    # What follows the stream (v4 exec cannot close stdin) is not read as chunks.
    run = subprocess.run(["sh", "-c", stream], input=spool.read_bytes() + b"trailing", capture_output=True, env=env)
    report = scripts.parse_report(run.stderr)
    assert run.returncode == 0 and report.tar_exit == 0, run.stderr
    assert (report.size, report.sha256, report.partial_blocks) == (size, digest, 0)
    for f in files:
        assert (data / f.path).read_bytes() == want, f.path

    # The stream ends early: the writer's dd counts fewer records than asked and the script fails.
    files = [volume_copy("cut", os.urandom(len(want)))]
    script.write_bytes(restic_in_place.writer_script(files))
    size, _ = restic_in_place.spool(files, repo.load_blob, spool)
    short = scripts.restore_script(size, tar=scripts.BUSYBOX, keep_owners=False, command=f"sh {script}")
    run = subprocess.run(["sh", "-c", short], input=spool.read_bytes()[:MIB], capture_output=True, env=env)
    assert run.returncode != 0 and scripts.parse_report(run.stderr).tar_exit != 0
    assert b"writing " in run.stderr and b"at byte" in run.stderr, run.stderr


@pytest.mark.parametrize("flavour", ["busybox", "gnu"])
def test_the_writer_touches_nothing_unless_the_target_is_still_a_regular_file_of_one_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    """Chosen from a listing made minutes before: if the path became a symlink, another hard link, or went
    away, dd would write through the link, into the other name, or create the file. The writer stops first."""
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    monkeypatch.setattr(scripts, "DATA", str(data))
    monkeypatch.setattr(scripts, "SCRATCH", str(scratch))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), b"pw")
    pieces = [os.urandom(70_001), os.urandom(5_000)]
    chunks = list(zip(repo.save_blobs(DATA_BLOB, pieces), [len(p) for p in pieces], strict=True))
    repo.flush()
    elsewhere = tmp_path / "elsewhere"
    env = shells.tools(tmp_path, flavour)

    def attempt(name: str, make: str) -> subprocess.CompletedProcess[bytes]:
        elsewhere.write_bytes(b"the app's other file")
        if make == "symlink":
            (data / name).symlink_to(elsewhere)
        elif make == "hardlink":
            os.link(elsewhere, data / name)
        files = [InPlace(name, sum(len(p) for p in pieces), 0, chunks)]
        script = tmp_path / "writer.sh"
        script.write_bytes(restic_in_place.writer_script(files))
        spool = tmp_path / "chunks"
        restic_in_place.spool(files, repo.load_blob, spool)
        return subprocess.run(["sh", str(script)], stdin=spool.open("rb"), capture_output=True, env=env)

    for name, make in [("link", "symlink"), ("second name", "hardlink"), ("gone", "missing")]:
        run = attempt(name, make)
        assert run.returncode != 0 and b"no longer a regular file of one link" in run.stderr, (make, run.stderr)
        assert elsewhere.read_bytes() == b"the app's other file", make
        assert (data / name).exists() == (make != "missing"), make  # a missing file is not created


@pytest.mark.parametrize("flavour", ["busybox", "gnu"])
def test_a_volume_copy_that_only_has_more_after_the_snapshots_end_is_cut_without_a_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    """The snapshot's content plus a tail an app appended: every chunk is there, nothing is written, the writer
    is run on an empty stdin (no stream is sent) and only cuts the file."""
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    monkeypatch.setattr(scripts, "DATA", str(data))
    monkeypatch.setattr(scripts, "SCRATCH", str(scratch))
    want = os.urandom(MIB + 4321)
    chunks = [(hashlib.sha256(want[:MIB]).hexdigest(), MIB), (hashlib.sha256(want[MIB:]).hexdigest(), 4321)]
    (data / "db").write_bytes(want + os.urandom(10_000))
    block = InPlace("db", len(want), len(want) + 10_000, chunks, [True, True])
    assert block.writes() == [] and block.written == 0
    script = tmp_path / "writer.sh"
    script.write_bytes(restic_in_place.writer_script([block]))
    run = subprocess.run(["sh", str(script)], stdin=subprocess.DEVNULL, capture_output=True,
                         env=shells.tools(tmp_path, flavour))
    assert run.returncode == 0, run.stderr
    assert (data / "db").read_bytes() == want
