"""Our restic format against the real restic CLI, both ways: what we write restic checks and restores
exactly; what restic writes we open and read exactly."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from kubectl_dr.repo.restic import archiver, crypto, keys, localfs, nodes
from kubectl_dr.repo.restic.backend import DATA, LocalBackend
from kubectl_dr.repo.restic.repository import Repository
from kubectl_dr.repo.restic.s3backend import S3Backend
from kubectl_dr.repo.s3client import S3Settings
from tests import datasets
from tests.restic.oracle import PASSWORD, restic, restic_json
from tests.s3server import S3Server

PW = PASSWORD.encode()


def _app_volume(root: Path) -> Path:
    """The app's tree (uid 1000, symlinks it owns, hard links, pre-1970 and post-2038 times, setuid, fifo)
    plus files on both sides of the 1 MiB split, compressible and not."""
    datasets.build_app_tree(root)
    (root / "blobs").mkdir()
    sizes = (("one-mib", 1 << 20), ("one-mib-plus-one", (1 << 20) + 1), ("three-and-a-bit", 3 * (1 << 20) + 77))
    for name, size in sizes:
        (root / "blobs" / name).write_bytes(os.urandom(size))
    (root / "blobs" / "zeros").write_bytes(bytes(5 << 20))
    (root / "blobs" / "empty").write_bytes(b"")
    os.chown(root / "blobs", 1000, 2000)
    os.utime(root / "blobs", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return root


def _exact(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry with its nanosecond mtime, besides what datasets.snapshot compares."""
    snap = datasets.snapshot(root, root_entry=False)
    out: dict[str, tuple[object, ...]] = {}
    for rel, node in snap.items():
        st = os.lstat(os.path.join(os.fsencode(root), rel))
        out[rel.decode()] = (node, st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else 0)
    return out


def test_restic_checks_and_restores_what_we_write(tmp_path: Path) -> None:
    src = _app_volume(tmp_path / "vol")
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    snap = localfs.backup_dir(repo, src, snapshot_path="/data-db-0", hostname="shop/data-db-0",
                              tags=["cluster=test", "namespace=shop", "claim=data-db-0", "kind=pvc"])

    restic(tmp_path / "repo", "check", "--read-data")
    listed = restic_json(tmp_path / "repo", "snapshots")
    assert [s["id"] for s in listed] == [snap.id]
    assert listed[0]["hostname"] == "shop/data-db-0" and "claim=data-db-0" in listed[0]["tags"]
    assert listed[0]["paths"] == ["/data-db-0"]

    restic(tmp_path / "repo", "restore", snap.id, "--target", str(tmp_path / "out"))
    got = tmp_path / "out" / "data-db-0"
    assert datasets.differences(_exact(src), _exact(got)) == []
    # The volume root's own owner and mode travel in the snapshot too.
    assert (os.stat(got).st_uid, stat.S_IMODE(os.stat(got).st_mode)) == (1000, 0o2775)
    assert os.stat(got / "data.db").st_ino == os.stat(got / "data.db.hardlink").st_ino


def test_we_read_exactly_what_restic_backup_wrote(tmp_path: Path) -> None:
    src = _app_volume(tmp_path / "vol")
    restic(tmp_path / "repo", "init")
    restic(tmp_path / "repo", "backup", str(src), "--host", "laptop", "--tag", "t1")
    repo = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    assert repo.config.version == 2
    (snap,) = repo.snapshots()
    root = archiver.volume_root(repo, snap.tree, snap.paths)
    assert snap.hostname == "laptop" and snap.tags == ["t1"]

    # Every entry's metadata as lstat gives it, every file's content as its bytes.
    seen = {}
    for rel, node in archiver.walk(repo, root):
        st = os.lstat(src / rel)
        assert node.type == localfs.node_from_stat(node.name, st).type, rel
        assert (node.uid, node.gid, node.perm, node.mtime) == (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                                                              st.st_mtime_ns), rel
        if node.type == nodes.FILE:
            digest = hashlib.sha256(b"".join(repo.file_content(node))).hexdigest()
            assert digest == hashlib.sha256((src / rel).read_bytes()).hexdigest(), rel
            assert node.size == st.st_size
        if node.type == nodes.SYMLINK:
            assert node.linktarget == os.readlink(src / rel)
        seen[rel] = node
    assert set(seen) == {os.fsdecode(p) for p in datasets.snapshot(src, root_entry=False)}

    # And our restore of restic's snapshot reproduces the tree (owners, modes, times, links).
    localfs.restore_to_dir(repo, root, tmp_path / "out")
    assert datasets.differences(_exact(src), _exact(tmp_path / "out")) == []


def test_we_open_restic_init_keys_and_refuse_a_wrong_password(tmp_path: Path) -> None:
    restic(tmp_path / "repo", "init")
    repo = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    assert repo.config.id == restic_json(tmp_path / "repo", "cat", "config")["id"]
    with pytest.raises(keys.WrongPassword, match="wrong password"):
        Repository.open(LocalBackend(tmp_path / "repo"), b"not it")
    # A second key restic adds opens the same master key.
    (tmp_path / "pw2").write_text("second\n")
    restic(tmp_path / "repo", "key", "add", "--new-password-file", str(tmp_path / "pw2"))
    assert Repository.open(LocalBackend(tmp_path / "repo"), b"second").key == repo.key


def test_restic_backs_up_into_our_repository_and_dedups_against_us(tmp_path: Path) -> None:
    """restic accepts our config (irreducible polynomial, version 2) and our index; a small file we stored
    is a blob restic finds and does not store again."""
    src = tmp_path / "vol"
    src.mkdir()
    (src / "small").write_bytes(os.urandom(100_000))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    localfs.backup_dir(repo, src, snapshot_path="/vol")
    out = restic(tmp_path / "repo", "--json", "backup", str(src)).stdout
    summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]
    assert summary["data_blobs"] == 0, summary
    restic(tmp_path / "repo", "check", "--read-data")


def test_incremental_backup_reuses_unchanged_files(tmp_path: Path) -> None:
    src = tmp_path / "vol"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(200_000))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    first = localfs.backup_dir(repo, src, snapshot_path="/vol")
    full = repo.bytes_stored
    (src / "f3").write_bytes(os.urandom(200_000))
    repo2 = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    second = localfs.backup_dir(repo2, src, snapshot_path="/vol", parent=first)
    assert repo2.bytes_stored < full / 10, (repo2.bytes_stored, full)
    assert second.parent == first.id
    restic(tmp_path / "repo", "check", "--read-data")
    restic(tmp_path / "repo", "restore", second.id, "--target", str(tmp_path / "out"))
    assert datasets.differences(_exact(src), _exact(tmp_path / "out" / "vol")) == []


def test_damage_is_refused_not_read(tmp_path: Path) -> None:
    src = tmp_path / "vol"
    src.mkdir()
    (src / "f").write_bytes(b"precious" * 1000)
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    snap = localfs.backup_dir(repo, src, snapshot_path="/vol")
    root = archiver.volume_root(repo, snap.tree, snap.paths)
    blob = archiver.find(repo, root, "f").content[0]
    pack = tmp_path / "repo" / DATA / repo.index.blobs[blob].pack[:2] / repo.index.blobs[blob].pack
    pack.chmod(0o600)
    data = bytearray(pack.read_bytes())
    data[20] ^= 1
    pack.write_bytes(bytes(data))
    repo = Repository.open(LocalBackend(tmp_path / "repo"), PW)
    assert [n.name for _, n in archiver.walk(repo, root)] == ["f"]  # the trees are intact
    with pytest.raises(crypto.ResticCryptoError, match="verification failed"):
        b"".join(repo.file_content(archiver.find(repo, root, "f")))


def test_times_and_modes_encode_as_go_does() -> None:
    assert nodes.format_time(0) == "1970-01-01T00:00:00Z"
    assert nodes.format_time(-100_000 * nodes.NS) == "1969-12-30T20:13:20Z"
    assert nodes.format_time(1_600_000_000_123_456_000) == "2020-09-13T12:26:40.123456Z"
    assert nodes.parse_time("2020-09-13T14:26:40.123456+02:00") == 1_600_000_000_123_456_000
    assert nodes.parse_time("1969-12-30T20:13:20Z") == -100_000 * nodes.NS
    assert nodes.go_mode(nodes.DIR, 0o2775) == (1 << 31) | (1 << 22) | 0o775
    assert nodes.go_mode(nodes.SYMLINK, 0o777) == 134218239
    assert nodes.unix_perm(nodes.go_mode(nodes.FILE, 0o4755)) == 0o4755
    with pytest.raises(nodes.ResticFormatError):
        nodes.decode_tree(b'{"nodes":[{"name":"..","type":"file","content":[]}]}')


def test_s3_repository_restic_reads_and_we_read_restic(tmp_path: Path, moto_s3: S3Server) -> None:
    """The same repository string works with `restic -r` and with us, both ways, on an S3 server.
    (moto: SeaweedFS without an identity configured refuses the streaming-signed uploads restic sends.)"""
    seaweedfs = moto_s3
    bucket = seaweedfs.new_bucket()
    ref = f"s3:{seaweedfs.endpoint}/{bucket}/restic/ours"
    env = seaweedfs.env()
    settings = S3Settings(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])
    src = tmp_path / "vol"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    os.symlink("big", src / "link")
    repo = Repository.init(S3Backend(ref, settings), PW)
    snap = localfs.backup_dir(repo, src, snapshot_path="/vol")
    restic(ref, "check", "--read-data", env=env)
    restic(ref, "restore", snap.id, "--target", str(tmp_path / "out"), env=env)
    assert datasets.differences(_exact(src), _exact(tmp_path / "out" / "vol")) == []

    theirs = f"s3:{seaweedfs.endpoint}/{bucket}/restic/theirs"
    restic(theirs, "init", env=env)
    restic(theirs, "backup", str(src), env=env)
    repo = Repository.open(S3Backend(theirs, settings), PW)
    (snap,) = repo.snapshots()
    localfs.restore_to_dir(repo, archiver.volume_root(repo, snap.tree, snap.paths), tmp_path / "back")
    assert datasets.differences(_exact(src), _exact(tmp_path / "back")) == []


def test_a_local_copy_makes_no_device_node(tmp_path: Path) -> None:
    """--to-dir of a snapshot holding a device node (a volume of a chroot, or a planted node of the host's disk
    with mode 0666) writes the rest and no node: run as root, it would open the device to every local user."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"x")
    os.mknod(src / "disk", stat.S_IFBLK | 0o666, os.makedev(8, 0))
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PW)
    snap = localfs.backup_dir(repo, src, snapshot_path="/data", hostname="shop/data")
    assert localfs.restore_to_dir(repo, archiver.volume_root(repo, snap.tree, snap.paths), tmp_path / "out") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file"]
