"""The repository checked before anything is written: read-only, a file in the way, a full disk; a
backup's identity from its manifest, never its directory's name."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_dr.errors import DrError
from kubectl_dr.repo import LocalRepository, RepoError
from kubectl_dr.repo.safety import confirm_plaintext_secrets


def _mount(tmp_path: Path, name: str, options: str) -> Iterator[Path]:
    point = tmp_path / name
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


@pytest.fixture()
def read_only(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path, "ro", "size=1m,ro")


@pytest.fixture()
def small(tmp_path: Path) -> Iterator[Path]:
    yield from _mount(tmp_path, "small", "size=2m")


def test_read_only_repository(read_only: Path) -> None:
    repo = LocalRepository(read_only / "backups")
    for create in (True, False):
        with pytest.raises(RepoError, match=r"is on a read-only file system") as info:
            repo.preflight(1000, create=create)
        assert "--repo" in (info.value.hint or "")
    # A job that skipped the check still gets the plain error, not an unexpected OSError.
    with pytest.raises(RepoError, match="read-only file system"):
        repo.create("pvc", {"pvc": "a"}, "a")


def test_a_file_where_the_repository_should_be(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RepoError, match=r"the backup repository .*/file is a file, not a directory"):
        LocalRepository(tmp_path / "file").preflight()
    with pytest.raises(RepoError, match=r"cannot be created: .*/file is a file"):
        LocalRepository(tmp_path / "file" / "below").preflight()
    with pytest.raises(RepoError, match="is a file, not a directory"):
        LocalRepository(tmp_path / "file").list()
    with pytest.raises(RepoError, match="not a directory"):
        LocalRepository(tmp_path / "file").create("pvc", {"pvc": "a"}, "a")


def test_not_enough_room_for_the_expected_size(small: Path) -> None:
    repo = LocalRepository(small / "backups")
    repo.preflight(1000)
    with pytest.raises(RepoError, match=r"not enough space for this backup in .*: about 100\.0 MiB needed, "
                                        r"[0-9.]+ [KM]iB free") as info:
        repo.preflight(100 << 20)
    assert "prune" in (info.value.hint or "")
    assert os.listdir(small / "backups") == []  # the probe is gone


def test_a_copied_backup_directory_is_reported_not_listed_twice(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    ids = []
    for i in range(2):
        with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "db") as w:
            with w.open_part("data.tar") as part:
                part.write(b"%d" % i)
            ids.append(w.commit().id)
    shutil.copytree(repo.path / ids[0], repo.path / f"{ids[0]}-copy")
    backups, problems = repo.scan()
    assert sorted(b.id for b in backups) == sorted(ids)
    assert [Path(p).name for p, _ in problems] == [f"{ids[0]}-copy"]
    assert "another copy of backup" in problems[0][1]
    # A directory renamed away from its ID is still that backup (its manifest says so), listed once.
    os.rename(repo.path / ids[1], repo.path / "renamed")
    backups, problems = repo.scan()
    assert sorted(b.id for b in backups) == sorted(ids)
    assert any("its name and its manifest disagree" in why for _, why in problems)
    assert repo.get(ids[1]).path == repo.path / "renamed"
    # Prune works through it all and does not stop half-way.
    result = repo.prune(keep_last=0)
    assert result.failed == [] and result.removed == [ids[0]]
    assert [m.id for m in repo.list()] == [ids[1]] and repo.scan()[1] == [
        (str(repo.path / "renamed"), f"{repo.path / 'renamed'}: its name and its manifest disagree: it holds "
         f"backup {ids[1]} (listed under that ID)")]


def test_plaintext_secrets_to_a_remote_repository_need_consent(tmp_path: Path) -> None:
    class Remote(LocalRepository):
        remote = True

    local = LocalRepository(tmp_path / "a")
    remote = Remote(tmp_path / "b")
    confirm_plaintext_secrets(local, "an etcd snapshot", yes=False, ask=None)  # local: fine
    with pytest.raises(DrError, match="refusing to write an etcd snapshot unencrypted to the remote repository"):
        confirm_plaintext_secrets(remote, "an etcd snapshot", yes=False, ask=None)
    confirm_plaintext_secrets(remote, "an etcd snapshot", yes=True, ask=None)
    asked: list[str] = []
    with pytest.raises(DrError, match="aborted: nothing was changed"):
        confirm_plaintext_secrets(remote, "an etcd snapshot", yes=False, ask=lambda q: bool(asked.append(q)))
    assert "holds every Secret of the cluster" in asked[0]
    confirm_plaintext_secrets(remote, "an etcd snapshot", yes=False, ask=lambda q: True)
    import pyrage

    key = str(pyrage.x25519.Identity.generate().to_public())
    confirm_plaintext_secrets(Remote(tmp_path / "c", recipients=[key]), "an etcd snapshot", yes=False, ask=None)
