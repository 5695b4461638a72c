"""A first backup's files cut into blobs straight off the tar stream (no spool), against the real tars and
the real restic CLI: the blobs are the ones the 1 MiB split of each file names, `restic check --read-data`
passes, `restic restore` gives the app's tree back exactly, incompressible blobs are stored raw, and a
stream cut off midway leaves a repository restic accepts."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kubectl_dr.repo.restic import archiver, chunking, localfs, nodes
from kubectl_dr.repo.restic.backend import DATA, LocalBackend, ResticBackendError
from kubectl_dr.repo.restic.blob_stream import BlobStream
from kubectl_dr.repo.restic.packs import DATA_BLOB
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.snapshots import Snapshot
from kubectl_dr.volumes.restic_content import ContentCutter
from kubectl_dr.volumes.tar_reader import Member, TarReader
from tests import datasets
from tests.restic.oracle import PASSWORD, restic, restic_json
from tests.restic.test_format import _exact

PW = PASSWORD.encode()
MIB = 1 << 20
TARS = {"gnu": ["tar", "-c", "--format=gnu", "--sparse", "-f", "-", "."],
        "busybox": ["busybox", "tar", "-c", "-f", "-", "."]}


def _volume(root: Path) -> Path:
    """The app's tree (uid 1000, symlinks, hard links, times before 1970 and after 2038, a sparse file) and
    files around the blob boundary, random (stored raw) and compressible, and a sparse file of several runs."""
    datasets.build_app_tree(root)
    blobs = root / "blobs"
    blobs.mkdir()
    for name, size in (("one-byte-short", MIB - 1), ("one-mib", MIB), ("one-mib-plus-one", MIB + 1),
                       ("three-and-a-bit", 3 * MIB + 77), ("small", 16 << 10)):
        (blobs / name).write_bytes(os.urandom(size))
    (blobs / "zeros").write_bytes(bytes(5 * MIB))
    (blobs / "text").write_bytes(b"a line of a log file, compressible\n" * 100_000)
    (blobs / "empty").write_bytes(b"")
    with open(blobs / "runs", "wb") as f:  # holes before, between and after the data, across blob boundaries
        for at in (MIB // 2, 2 * MIB + 5, 5 * MIB - 3):
            f.seek(at)
            f.write(os.urandom(70_000))
        f.truncate(9 * MIB + 11)
    for path in blobs.iterdir():
        os.chown(path, 1000, 1000)
        os.utime(path, ns=(1_234_567_890_123_456_789, 1_234_567_890_123_456_789))
    os.chown(blobs, 1000, 1000)
    return root


SPARSE: list[str] = []  # the sparse members the last stream held


def _stream(repo: Repository, src: Path, tar: str, *, stop_after: int | None = None) -> dict[str, list[str]]:
    """The tar stream of `src` into blobs as a backup receives it (64 KiB at a time, hashed on the way)."""
    SPARSE.clear()
    proc = subprocess.Popen(TARS[tar], cwd=src, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    read = 0
    try:
        with BlobStream[str](repo) as blobs:
            cutter = ContentCutter(blobs)
            def member(m: Member) -> None:
                if m.sparse:
                    SPARSE.append(m.path)
                cutter.member(m)

            reader = TarReader(gnu_sparse=tar == "gnu", on_member=member, on_data=cutter.data)
            digest = hashlib.sha256()
            while chunk := proc.stdout.read(64 << 10):
                digest.update(chunk)
                reader.feed(chunk)
                read += len(chunk)
                if stop_after is not None and read >= stop_after:
                    raise KeyboardInterrupt  # what a user's Ctrl-C raises in the receiving thread
            reader.finish()
            cutter.finish()
            return blobs.close()
    finally:
        proc.kill()
        proc.wait()


def _expected(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return [hashlib.sha256(p).hexdigest() for p in chunking.chunks(f.read, path.stat().st_size)]


def _snapshot(repo: Repository, src: Path, contents: dict[str, list[str]]) -> Snapshot:
    """A snapshot of `src` whose files' content is what the stream stored (hard links: their first path's)."""
    by_inode: dict[int, list[str]] = {}
    for rel, st in localfs._scan(src):
        if rel in contents:
            by_inode.setdefault(st.st_ino, contents[rel])
    items = []
    for rel, st in localfs._scan(src):
        target = os.readlink(src / rel) if os.path.islink(src / rel) else ""
        node = localfs.node_from_stat(rel.rsplit("/", 1)[-1], st, target)
        if node.type == nodes.FILE:
            node.content = list(by_inode[st.st_ino])
        items.append(archiver.Item(rel, node))
    tree = archiver.save_trees(repo, items, "/data", 1_700_000_000 * nodes.NS)
    repo.flush()
    snap = Snapshot(time=1_700_000_000 * nodes.NS, tree=tree, paths=["/data"], hostname="shop/data")
    repo.save_snapshot(snap)
    return snap


@pytest.mark.parametrize("tar", ["gnu", "busybox"])
def test_streamed_blobs_are_the_files_split_and_restic_restores_them_exactly(tmp_path: Path, tar: str) -> None:
    src = _volume(tmp_path / "vol")
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    contents = _stream(repo, src, tar)

    files = {rel: src / rel for rel, st in localfs._scan(src) if os.path.isfile(src / rel)
             and not os.path.islink(src / rel)}
    # One of a hard-linked pair is in the stream as a link to the other, without content (tar's walk order).
    assert set(contents) <= set(files) and len(set(files) - set(contents)) == 1
    assert set(files) - set(contents) <= {"data.db", "data.db.hardlink"}
    for rel in contents:
        assert contents[rel] == _expected(files[rel]), rel
    assert contents["blobs/empty"] == [] and len(contents["blobs/runs"]) == 10
    assert sorted(SPARSE) == (["blobs/runs", "sparse"] if tar == "gnu" else [])  # holes filled in from the map

    snap = _snapshot(repo, src, contents)
    # Random data is stored as it is (restic's rule), compressible data compressed.
    index = repo.index.blobs
    assert all(index[b].uncompressed_length == 0 for b in contents["blobs/three-and-a-bit"])
    assert all(index[b].uncompressed_length for b in contents["blobs/text"] + contents["blobs/zeros"])
    restic(tmp_path / "repo", "check", "--read-data")
    restic(tmp_path / "repo", "restore", snap.id, "--target", str(tmp_path / "out"))
    assert datasets.differences(_exact(src), _exact(tmp_path / "out" / "data")) == []


def test_a_stream_cut_off_midway_leaves_only_unreferenced_packs(tmp_path: Path) -> None:
    src = tmp_path / "vol"
    src.mkdir()
    (src / "db").write_bytes(os.urandom(48 * MIB))  # three packs' worth: some are stored before the cut
    os.chown(src / "db", 1000, 1000)
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    with pytest.raises(KeyboardInterrupt):
        _stream(repo, src, "gnu", stop_after=40 * MIB)
    packs = list((tmp_path / "repo" / DATA).rglob("*"))
    assert [p for p in packs if p.is_file()], "some packs were stored before the cut"
    assert not list((tmp_path / "repo" / "index").iterdir()) and not restic_json(tmp_path / "repo", "snapshots")
    restic(tmp_path / "repo", "check")  # unreferenced packs are not an error

    again = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    snap = _snapshot(again, src, _stream(again, src, "gnu"))
    restic(tmp_path / "repo", "check", "--read-data")
    restic(tmp_path / "repo", "restore", snap.id, "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "data" / "db").read_bytes() == (src / "db").read_bytes()


def test_a_pack_that_cannot_be_stored_stops_the_stream_with_the_backends_error(tmp_path: Path) -> None:
    src = tmp_path / "vol"
    src.mkdir()
    (src / "db").write_bytes(os.urandom(40 * MIB))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    for sub in (tmp_path / "repo" / DATA).iterdir():  # a pack's directory that is a file: the write fails
        sub.rmdir()
        sub.write_bytes(b"")
    with pytest.raises(ResticBackendError, match="cannot write"):
        _stream(repo, src, "gnu")
    assert not list((tmp_path / "repo" / "index").iterdir())


class _FullDisk(LocalBackend):
    """A local repository whose disk fills up: saving a pack raises the OS's own error, unwrapped (as a
    backend that forgot to wrap it would)."""

    def save(self, kind: str, name: str, data: bytes) -> None:
        if kind == DATA:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        super().save(kind, name, data)


def test_an_os_error_of_the_storage_is_reported_as_the_storages_not_the_connections(tmp_path: Path) -> None:
    """The stream raises inside the exec reader, which reads an OSError as its connection breaking: the
    writer's OSError comes out as a storage error naming the repository and the cause."""
    src = tmp_path / "vol"
    src.mkdir()
    (src / "db").write_bytes(os.urandom(40 * MIB))
    Repository.init(LocalBackend(tmp_path / "repo"), PW)
    repo = Repository.open(_FullDisk(tmp_path / "repo"), PW)
    with pytest.raises(ResticBackendError, match=r"cannot store the backup's data in .*No space left on device"):
        _stream(repo, src, "gnu")
    assert not list((tmp_path / "repo" / "index").iterdir())


def test_blobs_already_in_the_repository_are_not_stored_again(tmp_path: Path) -> None:
    src = tmp_path / "vol"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(3 * MIB))
    (src / "b").write_bytes((src / "a").read_bytes())
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    contents = _stream(repo, src, "busybox")
    assert contents["a"] == contents["b"]
    _snapshot(repo, src, contents)
    assert repo.bytes_stored < 3 * MIB + 4096


def test_blobs_whose_samples_do_not_compress_are_stored_raw_and_restic_reads_every_kind(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    noise, text = os.urandom(MIB), (b"a compressible log line\n" * MIB)[:MIB]
    half = MIB // 2
    cases = {
        "random": noise,  # stored raw, zstd never run over all of it
        "text": text,
        "random start, text after": noise[:half] + text[:half],  # the middle sample compresses
        "small random": noise[:100_000],  # below the sampled size: compressed, found not smaller, raw
    }
    ids = {name: repo.save_blob(DATA_BLOB, data) for name, data in cases.items()}
    repo.flush()
    stored = {name: repo.index.blobs[blob].uncompressed_length for name, blob in ids.items()}
    assert stored == {"random": 0, "text": MIB, "random start, text after": MIB, "small random": 0}
    for name, data in cases.items():
        assert repo.load_blob(ids[name]) == data
    restic(tmp_path / "repo", "check", "--read-data")  # every blob read, decompressed or not, and hashed
