"""`copy_backup` between a local directory and a real S3 server, both ways, and resumed after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyrage
import pytest

from kubectl_dr.repo import (
    BackupCorruptError,
    LocalRepository,
    Repository,
    load_identities,
    open_repository,
    parse_recipients,
)
from kubectl_dr.repo.copying import copy_backup
from kubectl_dr.repo.s3 import MIN_PART
from tests.s3server import S3Server


def _s3(server: S3Server, bucket: str) -> Repository:
    return open_repository(f"s3://{bucket}/copies", {**os.environ, **server.env()})


def _write(repo: Repository, data: bytes, recipients: list[str] | None = None) -> str:
    with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "shop-db", recipients=recipients) as writer:
        with writer.open_part("data.tar") as part:
            for i in range(0, len(data), 1 << 20):
                part.write(data[i : i + (1 << 20)])
        with writer.open_part("entries.json") as part:
            part.write(b'{"entries": 1}')
        return writer.commit({"files": 1}).id


def test_copy_local_to_s3_and_back(seaweedfs: S3Server, tmp_path: Path) -> None:
    local = LocalRepository(tmp_path / "local")
    remote = _s3(seaweedfs, seaweedfs.new_bucket())
    data = os.urandom(MIN_PART + 54321)
    backup_id = _write(local, data)
    source = local.get(backup_id)

    up = copy_backup(local, source, remote)
    assert (up.id, up.status) == (backup_id, "copied")
    copied = remote.get(backup_id)
    assert copied.manifest.to_json() == source.manifest.to_json()  # the same backup, byte for byte
    remote.verify(copied)
    assert copy_backup(local, source, remote).status == "present"  # a second run has nothing to do

    back = LocalRepository(tmp_path / "back")
    down = copy_backup(remote, copied, back)
    assert down.status == "copied"
    assert (back.path / backup_id / "data.tar").read_bytes() == data
    assert (back.path / backup_id / "manifest.json").read_text() == source.manifest.to_json()


def test_copy_keeps_encryption_and_can_add_it(seaweedfs: S3Server, tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{identity}\n")
    recipient = str(identity.to_public())
    local = LocalRepository(tmp_path / "local")
    remote = _s3(seaweedfs, seaweedfs.new_bucket())

    encrypted = local.get(_write(local, b"secret" * 1000, [recipient]))
    assert copy_backup(local, encrypted, remote).status == "copied"  # no key needed: copied as stored
    remote.verify(encrypted.id, stored_only=True)
    remote.verify(encrypted.id, identity=load_identities([key_file]))

    plain = local.get(_write(local, b"plain" * 1000, []))
    result = copy_backup(local, plain, remote, recipients=parse_recipients([recipient]))
    assert result.encrypted
    there = remote.get(plain.id)
    assert there.manifest.part("data.tar").sha256 == plain.manifest.part("data.tar").sha256
    assert there.manifest.part("data.tar").stored is not None
    with remote.open_part(there, "data.tar", identity=load_identities([key_file])) as stream:
        assert stream.read() == b"plain" * 1000


def test_a_damaged_source_is_not_copied(seaweedfs: S3Server, tmp_path: Path) -> None:
    local = LocalRepository(tmp_path / "local")
    remote = _s3(seaweedfs, seaweedfs.new_bucket())
    backup_id = _write(local, os.urandom(200_000))
    part = local.path / backup_id / "data.tar"
    stored = part.read_bytes()
    part.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))  # a constant could equal the byte
    with pytest.raises(BackupCorruptError, match="has SHA-256"):
        copy_backup(local, local.get(backup_id), remote)
    assert remote.list() == [] and remote.leftovers() == []


@pytest.mark.parametrize("direction", ["to-s3", "to-local"])
def test_an_interrupted_copy_is_invisible_and_finished_by_running_it_again(
        seaweedfs: S3Server, tmp_path: Path, direction: str) -> None:
    bucket = seaweedfs.new_bucket()
    local_path = tmp_path / "local"
    s3_url = f"s3://{bucket}/copies"
    data = os.urandom(2 * MIN_PART + 4321)
    if direction == "to-s3":
        source, target_ref = LocalRepository(local_path), s3_url
        source_ref = str(local_path)
    else:
        source, target_ref = _s3(seaweedfs, bucket), str(tmp_path / "target")
        source_ref = s3_url
    backup_id = _write(source, data)
    script = textwrap.dedent(
        f"""
        import os, signal
        from kubectl_dr.repo import open_repository
        from kubectl_dr.repo.copying import copy_backup
        source = open_repository({source_ref!r}, dict(os.environ))
        target = open_repository({target_ref!r}, dict(os.environ))
        done = 0
        def progress(n):
            global done
            done += n
            if done > {MIN_PART + (4 << 20)}:
                os.kill(os.getpid(), signal.SIGKILL)
        copy_backup(source, source.get({backup_id!r}), target, progress=progress)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **seaweedfs.env()})
    assert child.returncode == -9, child.stderr
    target = open_repository(target_ref, {**os.environ, **seaweedfs.env()})
    assert target.list() == []  # nothing half-copied is visible
    assert [lo.stale for lo in target.leftovers()] == [True]

    result = copy_backup(source, source.get(backup_id), target)  # the same copy again finishes it
    assert result.status == "copied"
    assert target.leftovers() == []
    target.verify(backup_id)
    with target.open_part(target.get(backup_id), "data.tar") as stream:
        assert stream.read() == data
