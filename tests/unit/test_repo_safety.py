"""The repository checked before anything is written: read-only, a file in the way, a full disk; a
backup's identity from its manifest, never its directory's name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubectl_dr.errors import DrError
from kubectl_dr.repo import LocalRepository, RepoError
from kubectl_dr.repo.safety import confirm_plaintext_secrets
from kubectl_dr.ui.console import TerminalConsole
from kubectl_dr.ui.terminals import Terminals


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

    def console(yes: bool = False, terminal: bool = False, answer: bool = False,
                asked: list[str] | None = None) -> TerminalConsole:
        def ask(question: str) -> bool:
            (asked if asked is not None else []).append(question)
            return answer

        return TerminalConsole(yes=yes, terminals=Terminals(stdin=terminal, stdout=terminal, stderr=terminal), ask=ask)

    local = LocalRepository(tmp_path / "a")
    remote = Remote(tmp_path / "b")
    confirm_plaintext_secrets(local, "an etcd snapshot", console())  # local: fine
    with pytest.raises(DrError, match="refusing to write an etcd snapshot unencrypted to the remote repository") as no:
        confirm_plaintext_secrets(remote, "an etcd snapshot", console())
    assert "it holds every Secret of the cluster" in no.value.message and "--encrypt-to" in (no.value.hint or "")
    confirm_plaintext_secrets(remote, "an etcd snapshot", console(yes=True))
    asked: list[str] = []
    with pytest.raises(DrError, match="aborted: nothing was changed"):
        confirm_plaintext_secrets(remote, "an etcd snapshot", console(terminal=True, asked=asked))
    assert "holds every Secret of the cluster" in asked[0]
    confirm_plaintext_secrets(remote, "an etcd snapshot", console(terminal=True, answer=True))
    import pyrage

    key = str(pyrage.x25519.Identity.generate().to_public())
    confirm_plaintext_secrets(Remote(tmp_path / "c", recipients=[key]), "an etcd snapshot", console())


def _tamper_id(repo: LocalRepository, backup_id: str, new_id: str) -> None:
    manifest = repo.path / backup_id / "manifest.json"
    manifest.write_text(manifest.read_text().replace(f'"id": "{backup_id}"', f'"id": "{new_id}"'))


def _one(repo: LocalRepository) -> str:
    with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "db") as w:
        with w.open_part("data.tar") as part:
            part.write(b"data")
        return w.commit({}).id


@pytest.mark.parametrize("bad", ["../../evilid", "..", "a/b", "evil\u0000id", ".hidden", "x" * 201, "id\n",
                                 "id\nrm -rf /"])
def test_a_manifest_with_a_bad_id_is_a_problem_never_a_backup(tmp_path: Path, bad: str) -> None:
    from kubectl_dr.repo.copying import copy_backup
    from kubectl_dr.repo.manifest import Manifest
    from kubectl_dr.repo.repository import Backup

    repo = LocalRepository(tmp_path / "repo")
    backup_id = _one(repo)
    good = repo.get(backup_id).manifest
    _tamper_id(repo, backup_id, json.dumps(bad)[1:-1])
    backups, problems = repo.scan()
    assert backups == []
    assert len(problems) == 1 and "invalid backup ID" in problems[0][1], problems
    # A writer never takes such an ID either (a manifest built by hand, as a copy would).
    target = LocalRepository(tmp_path / "a" / "b" / "target")
    evil = Manifest(id=bad, type=good.type, created_at=good.created_at, tool_version="t", parts=good.parts)
    with pytest.raises(RepoError, match="invalid backup ID"):
        target.create_copy(evil)
    with pytest.raises(RepoError, match="invalid backup ID"):
        copy_backup(repo, Backup(evil, "crafted", repo.path / backup_id, backup_id), target)
    # Nothing was written anywhere but the source repository.
    assert [p for p in tmp_path.rglob("*") if (tmp_path / "repo") not in (p, *p.parents)] == []


def test_a_very_long_id_is_a_clear_error(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    _one(repo)
    for call in (repo.get, repo.resolve):
        with pytest.raises(RepoError, match=r"not a valid backup ID: .*300 bytes long \(at most 200\)"):
            call("a" * 300)
    # A name given by the user is cut to fit; a "..": one dot.
    with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "n" * 300 + "..x") as w:
        assert len(w.id.encode()) <= 200 and ".." not in w.id
        w.abort()


def test_part_names_and_keys_stay_inside(tmp_path: Path) -> None:
    from kubectl_dr.repo.s3client import S3Location

    repo = LocalRepository(tmp_path / "repo")
    backup_id = _one(repo)
    manifest = repo.path / backup_id / "manifest.json"
    for bad in ("x..y", "data.tar\\n"):
        manifest.write_text(manifest.read_text().replace('"name": "data.tar"', f'"name": "{bad}"'))
        assert "invalid part name" in repo.scan()[1][0][1]
        manifest.write_text(manifest.read_text().replace(f'"name": "{bad}"', '"name": "data.tar"'))
    where = S3Location("bucket", "team/prod")
    assert where.key("id", "data.tar") == "team/prod/id/data.tar"
    for bad in ("..", "a/b", "", "a\u0000", "x" * 201):
        with pytest.raises(RepoError, match=r"outside|invalid"):
            where.key(bad, "manifest.json")


def test_an_existing_repository_directory_keeps_its_mode(tmp_path: Path) -> None:
    """A directory the user made (shared with a group, say) is theirs: writing and copying into it leaves its
    mode alone; a directory the tool creates is private (0700)."""
    from kubectl_dr.repo.copying import copy_backup

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2750)
    new = LocalRepository(tmp_path / "new")
    backup_id = _one(new)
    assert (tmp_path / "new").stat().st_mode & 0o7777 == 0o700
    target = LocalRepository(shared)
    target.preflight(1000)
    copy_backup(new, new.get(backup_id), target)
    _one(target)
    assert shared.stat().st_mode & 0o7777 == 0o2750
    assert (shared / backup_id).stat().st_mode & 0o7777 == 0o700  # each backup stays private
