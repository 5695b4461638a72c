"""The backup repository on real files: atomic writes, permissions, resolution, retention, verification."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kubectl_dr import __version__
from kubectl_dr.repo import (
    API_VERSION,
    AmbiguousBackupError,
    BackupCorruptError,
    BackupNotFoundError,
    DiskFullError,
    LocalRepository,
    ManifestError,
    Repository,
    WrongBackupTypeError,
    resolve_repo_path,
)

T0 = datetime(2026, 11, 22, 1, 55, 12, tzinfo=timezone.utc)


class Clock:
    """A real clock that the test moves forward by hand, so ordering does not depend on timing."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 60) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def repo(tmp_path: Path, clock: Clock) -> Repository:
    return LocalRepository(tmp_path / "backups", clock=clock)


def _backup(repo: Repository, clock: Clock, type: str, source: dict[str, str], hint: str, data: bytes) -> str:
    with repo.create(type, source, hint) as writer:
        with writer.open_part("data.tar") as part:
            for i in range(0, len(data), 1000):
                part.write(data[i : i + 1000])
        manifest = writer.commit({"files": 3})
    clock.tick()
    return manifest.id


def _visible(repo: Repository) -> list[str]:
    return sorted(os.listdir(repo.path))


# --- location ----------------------------------------------------------------------------------------


def test_resolve_repo_path_precedence(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    assert resolve_repo_path(None, {"HOME": home}) == Path(home, ".local/share/kubectl-dr/backups")
    assert resolve_repo_path(None, {"HOME": home, "XDG_DATA_HOME": "/data"}) == Path("/data/kubectl-dr/backups")
    # A relative XDG_DATA_HOME is invalid per the spec and ignored.
    assert resolve_repo_path(None, {"HOME": home, "XDG_DATA_HOME": "rel"}) == Path(
        home, ".local/share/kubectl-dr/backups"
    )
    env = {"HOME": home, "XDG_DATA_HOME": "/data", "KUBECTL_DR_REPO": "/srv/dr"}
    assert resolve_repo_path(None, env) == Path("/srv/dr")
    assert resolve_repo_path("/mnt/usb/dr", env) == Path("/mnt/usb/dr")
    assert resolve_repo_path("~/dr", env) == Path(os.path.expanduser("~/dr"))


# --- writing -----------------------------------------------------------------------------------------


def test_commit_writes_manifest_parts_and_private_modes(repo: Repository, clock: Clock) -> None:
    old_umask = os.umask(0o022)  # a typical umask must not widen what we create
    try:
        data = os.urandom(250_000)
        writer = repo.create("pvc", {"namespace": "shop", "pvc": "data-db-0", "node": "n1"}, "shop-data-db-0")
        assert writer.id == "20261122T015512Z-pvc-shop-data-db-0"
        assert writer.temp_path.name.startswith(".tmp-")
        with writer.open_part("data.tar") as part:
            part.write(data[:100_000])
            part.write(memoryview(data)[100_000:])
        assert repo.list() == []  # nothing visible before the commit
        manifest = writer.commit({"files": 42})
    finally:
        os.umask(old_umask)

    backup_dir = repo.path / manifest.id
    assert _visible(repo) == [manifest.id]
    assert sorted(os.listdir(backup_dir)) == ["data.tar", "manifest.json"]
    assert (backup_dir / "data.tar").read_bytes() == data

    on_disk = json.loads((backup_dir / "manifest.json").read_text())
    assert on_disk["apiVersion"] == API_VERSION == "kubectl-dr/v1"
    assert on_disk["kind"] == "Backup"
    assert on_disk["id"] == manifest.id
    assert on_disk["type"] == "pvc"
    assert on_disk["createdAt"] == "2026-11-22T01:55:12Z"
    assert on_disk["toolVersion"] == __version__
    assert on_disk["source"] == {"namespace": "shop", "pvc": "data-db-0", "node": "n1"}
    assert on_disk["parts"] == [{"name": "data.tar", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    assert on_disk["details"] == {"files": 42}

    assert stat.S_IMODE(repo.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    for name in ("data.tar", "manifest.json"):
        assert stat.S_IMODE((backup_dir / name).stat().st_mode) == 0o600


def test_failed_writer_leaves_nothing(repo: Repository) -> None:
    with (
        pytest.raises(RuntimeError, match="stream broke"),
        repo.create("pvc", {"pvc": "a"}, "a") as writer,
        writer.open_part("data.tar") as part,
    ):
        part.write(b"x" * 10_000)
        raise RuntimeError("stream broke")
    assert _visible(repo) == []
    assert writer.state == "aborted"


def test_forgotten_commit_and_explicit_abort_leave_nothing(repo: Repository) -> None:
    with repo.create("pvc", {"pvc": "a"}, "a") as writer, writer.open_part("data.tar") as part:
        part.write(b"data")
    assert _visible(repo) == []

    writer = repo.create("pvc", {"pvc": "a"}, "a")
    writer.open_part("data.tar").write(b"partial")
    writer.abort()
    writer.abort()  # idempotent
    assert _visible(repo) == []


def test_two_backups_in_the_same_second_get_distinct_ids(repo: Repository) -> None:
    first = repo.create("pvc", {"pvc": "a"}, "a")
    second = repo.create("pvc", {"pvc": "a"}, "a")
    assert first.id != second.id and second.id.startswith(first.id + "-")
    ids = {first.commit().id, second.commit().id}
    assert len(ids) == 2 and set(_visible(repo)) == ids


def test_crash_leaves_hidden_temp_dir_that_list_ignores_and_prune_removes(repo: Repository, clock: Clock) -> None:
    kept = _backup(repo, clock, "pvc", {"pvc": "a"}, "a", b"complete")
    # A writer process that is SIGKILLed half way: a real child process, really killed.
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from kubectl_dr.repo import LocalRepository, Repository
        w = LocalRepository(Path({str(repo.path)!r})).create("pvc", {{"pvc": "b"}}, "b")
        w.open_part("data.tar").write(b"half of it")
        print(w.temp_path.name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == -9
    temp_name = child.stdout.strip()
    assert temp_name.startswith(".tmp-") and (repo.path / temp_name).is_dir()

    assert [m.id for m in repo.list()] == [kept]
    assert repo.stale_temp_dirs() == [temp_name]
    dry = repo.prune(keep_last=5, dry_run=True)
    assert dry.stale_temp_dirs == [temp_name] and (repo.path / temp_name).exists()
    result = repo.prune(keep_last=5)
    assert result.stale_temp_dirs == [temp_name] and result.removed == []
    assert _visible(repo) == [kept]


def test_a_live_writer_is_not_pruned(repo: Repository) -> None:
    writer = repo.create("pvc", {"pvc": "a"}, "a")
    writer.open_part("data.tar").write(b"in progress")
    assert repo.stale_temp_dirs() == []
    repo.prune(keep_last=0)
    assert writer.temp_path.exists()
    writer.abort()


def test_part_names_are_checked(repo: Repository) -> None:
    with repo.create("pvc", {}, "x") as writer:
        for bad in ("../escape", "manifest.json", ".hidden", "a/b", ""):
            with pytest.raises(Exception, match="invalid part name"):
                writer.open_part(bad)
        writer.open_part("ok.tar").close()
        with pytest.raises(Exception, match="already written"):
            writer.open_part("ok.tar")


# --- resolving ---------------------------------------------------------------------------------------


def test_list_newest_first_and_resolve_rules(repo: Repository, clock: Clock) -> None:
    a1 = _backup(repo, clock, "pvc", {"namespace": "shop", "pvc": "a"}, "shop-a", b"a1")
    b1 = _backup(repo, clock, "pvc", {"namespace": "shop", "pvc": "b"}, "shop-b", b"b1")
    a2 = _backup(repo, clock, "pvc", {"namespace": "shop", "pvc": "a"}, "shop-a", b"a2")
    snap = _backup(repo, clock, "etcd-snapshot", {"cluster": "prod", "member": "m1"}, "prod", b"snap")

    assert [m.id for m in repo.list()] == [snap, a2, b1, a1]
    assert [m.id for m in repo.list(type="pvc")] == [a2, b1, a1]
    assert [m.id for m in repo.list(source_match={"pvc": "a"})] == [a2, a1]

    # latest per source
    assert repo.resolve("latest", "pvc", {"namespace": "shop", "pvc": "a"}).id == a2
    assert repo.resolve("latest", "pvc", {"namespace": "shop", "pvc": "b"}).id == b1
    assert repo.resolve("latest", "etcd-snapshot").id == snap
    with pytest.raises(BackupNotFoundError, match=r"there is no pvc backup of namespace=shop, pvc=zzz in "):
        repo.resolve("latest", "pvc", {"namespace": "shop", "pvc": "zzz"})

    # exact ID, unique prefix, ambiguous prefix
    assert repo.resolve(a1).id == a1
    assert repo.resolve(b1[:20]).id == b1  # the time stamp and "-pvc" are enough
    with pytest.raises(AmbiguousBackupError) as info:
        repo.resolve("20261122T")
    assert set(info.value.candidates) == {a1, b1, a2, snap}
    assert "matches 4 backups" in info.value.message
    # the same prefix is unique among the etcd snapshots
    assert repo.resolve("20261122T", "etcd-snapshot").id == snap

    with pytest.raises(WrongBackupTypeError, match="is a pvc backup, not an etcd-snapshot backup"):
        repo.resolve(a1, "etcd-snapshot")
    with pytest.raises(BackupNotFoundError) as missing:
        repo.resolve("nope")
    assert missing.value.render() == (
        f'error: backup "nope" not found in {repo.path}\nRun "kubectl dr backups list" to see the backups.'
    )

    # a path to a backup directory, even outside the repository
    backup = repo.resolve(str(repo.path / b1))
    assert backup.id == b1 and backup.part_path("data.tar").read_bytes() == b"b1"
    with pytest.raises(ManifestError, match="is not a backup"):
        repo.resolve(str(repo.path))


def test_unreadable_backup_is_reported_not_fatal(repo: Repository, clock: Clock) -> None:
    good = _backup(repo, clock, "pvc", {"pvc": "a"}, "a", b"x")
    broken = repo.path / "20261122T000000Z-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    future = repo.path / "20261122T000001Z-future"
    future.mkdir()
    (future / "manifest.json").write_text(json.dumps({"apiVersion": "kubectl-dr/v9", "kind": "Backup"}))
    backups, problems = repo.scan()
    assert [b.id for b in backups] == [good]
    assert sorted(Path(p).name for p, _ in problems) == [broken.name, future.name]
    assert any("unsupported manifest apiVersion 'kubectl-dr/v9'" in why for _, why in problems)


# --- retention ---------------------------------------------------------------------------------------


def test_prune_keeps_last_n_per_series(repo: Repository, clock: Clock) -> None:
    # One claim is one series, whatever changed between its backups: consumers, API server, capacity.
    a = [_backup(repo, clock, "pvc", {"namespace": "shop", "pvc": "a", "server": f"https://cp{i % 2}:6443",
                                      "consumers": [f"StatefulSet/db{i}"], "capacity": f"{i + 1}Gi"}, "a", b"a%d" % i)
         for i in range(4)]
    b = [_backup(repo, clock, "pvc", {"namespace": "shop", "pvc": "b"}, "b", b"b%d" % i) for i in range(2)]
    # etcd snapshots: one series per cluster and member; the node they were taken on does not count.
    s = [
        _backup(repo, clock, "etcd-snapshot", {"cluster": "https://cp:6443", "member": "m1", "node": f"n{i}"}, "cp",
                b"s") for i in range(3)
    ]
    other = _backup(repo, clock, "etcd-snapshot", {"cluster": "https://cp:6443", "member": "m2"}, "cp", b"s")

    dry = repo.prune(keep_last=2, dry_run=True)
    assert sorted(dry.removed) == sorted([a[0], a[1], s[0]])
    assert len(repo.list()) == 10

    only_pvc_a = repo.prune(keep_last=1, type="pvc", source_match={"pvc": "a"})
    assert sorted(only_pvc_a.removed) == sorted(a[:3]) and only_pvc_a.kept == [a[3]]
    assert [m.id for m in repo.list()] == [other, s[2], s[1], s[0], b[1], b[0], a[3]]

    repo.prune(keep_last=1)
    assert [m.id for m in repo.list()] == [other, s[2], b[1], a[3]]
    assert all(not n.startswith(".") for n in _visible(repo))

    # --keep-last 0 removes everything but the newest verified backup of each series, which is never removed.
    result = repo.prune(keep_last=0, type="etcd-snapshot")
    assert result.removed == [] and result.reasons == {other: ["newest verified"], s[2]: ["newest verified"]}
    assert [m.id for m in repo.list()] == [other, s[2], b[1], a[3]]


def test_delete(repo: Repository, clock: Clock) -> None:
    one = _backup(repo, clock, "pvc", {"pvc": "a"}, "a", b"1")
    two = _backup(repo, clock, "pvc", {"pvc": "a"}, "a", b"2")
    assert repo.delete(one).id == one
    assert _visible(repo) == [two]
    with pytest.raises(BackupNotFoundError):
        repo.delete(one)
    with pytest.raises(BackupNotFoundError):
        repo.delete("../" + two)


# --- verification ------------------------------------------------------------------------------------


def test_verify_catches_flipped_byte_truncation_and_missing_part(repo: Repository, clock: Clock) -> None:
    data = os.urandom(3_000_000)
    backup_id = _backup(repo, clock, "pvc", {"pvc": "a"}, "a", data)
    assert repo.verify(backup_id).id == backup_id
    part = repo.path / backup_id / "data.tar"

    with open(part, "r+b") as f:
        f.seek(1_234_567)
        byte = f.read(1)
        f.seek(1_234_567)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BackupCorruptError, match=r'part "data.tar" has SHA-256 [0-9a-f]{64} but the manifest says'):
        repo.verify(backup_id)

    part.write_bytes(data[:-10])
    with pytest.raises(BackupCorruptError) as info:
        repo.verify(backup_id)
    assert f"is {len(data) - 10} bytes but the manifest says {len(data)}: it is truncated" in info.value.message
    assert info.value.part == "data.tar"

    part.unlink()
    with pytest.raises(BackupCorruptError, match=r'part "data\.tar" is missing'):
        repo.verify(backup_id)


def test_verify_reports_a_part_that_cannot_be_read(repo: Repository, clock: Clock) -> None:
    """A read error (a failing disk gives EIO) is damage to report, not a crash. A directory of the
    recorded size stands in for the unreadable file: its stat succeeds, its read fails."""
    part_dir = repo.path / "probe"
    part_dir.mkdir(parents=True)
    size = part_dir.stat().st_size
    part_dir.rmdir()
    backup_id = _backup(repo, clock, "pvc", {"pvc": "a"}, "a", os.urandom(size))
    part = repo.path / backup_id / "data.tar"
    part.unlink()
    part.mkdir()
    with pytest.raises(BackupCorruptError, match=r'part "data\.tar" cannot be read: Is a directory'):
        repo.verify(backup_id)


# --- full disk ---------------------------------------------------------------------------------------


@pytest.fixture()
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_is_reported_and_leaves_nothing(small_tmpfs: Path, clock: Clock) -> None:
    repo = LocalRepository(small_tmpfs / "repo", clock=clock)
    writer = repo.create("pvc", {"pvc": "big"}, "big")
    part = writer.open_part("data.tar")
    chunk = b"z" * 65536
    with pytest.raises(DiskFullError) as info:
        for _ in range(64):  # 4 MiB into a 1 MiB file system
            part.write(chunk)
    error = info.value
    assert 0 < error.written <= 1024 * 1024
    assert error.part == "data.tar"
    assert f"no space left on the device holding {repo.path}: wrote {error.written} bytes" in error.message
    assert "--repo" in (error.hint or "")
    assert writer.state == "aborted"
    assert os.listdir(repo.path) == []
    # The space is free again: a small backup fits.
    small = repo.create("pvc", {"pvc": "small"}, "small")
    small.open_part("data.tar").close()
    assert small.commit().id in os.listdir(repo.path)


def test_large_part_is_written_back_while_streaming_and_stays_exact(repo: Repository, clock: Clock) -> None:
    """Past WRITEBACK_STEP the writer asks the kernel to start writing; the part must be byte-exact."""
    from kubectl_dr.repo import fsutil
    from kubectl_dr.repo.writer import WRITEBACK_STEP

    chunk = os.urandom(1 << 20)
    total = WRITEBACK_STEP * 2 + 12345
    digest = hashlib.sha256()
    with repo.create("pvc", {"pvc": "big"}, "big") as writer:
        with writer.open_part("data.tar") as part:
            written = 0
            while written < total:
                piece = chunk[: min(len(chunk), total - written)]
                part.write(piece)
                digest.update(piece)
                written += len(piece)
            assert part._sink._written_back >= WRITEBACK_STEP * 2  # started twice during the stream
        manifest = writer.commit({})
    stored = repo.path / manifest.id / "data.tar"
    assert stored.stat().st_size == total
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest.hexdigest() == manifest.part("data.tar").sha256
    assert fsutil._sync_file_range not in (None, False), "sync_file_range is available on Linux"


def test_a_part_that_is_a_symbolic_link_is_not_read(tmp_path: Path) -> None:
    """A repository writer who swaps a part for a link to a file of this machine does not get it read (and
    copied elsewhere by `backups copy`) before the checksum objects."""
    from kubectl_dr.repo.errors import BackupCorruptError

    repo = LocalRepository(tmp_path / "repo")
    with repo.create("pvc", {"namespace": "shop", "pvc": "db"}, "db") as writer:
        with writer.open_part("data.tar") as part:
            part.write(b"x" * 100)
        backup_id = writer.commit().id
    (tmp_path / "secret").write_bytes(b"s" * 100)
    stored = repo.path / backup_id / "data.tar"
    stored.unlink()
    stored.symlink_to(tmp_path / "secret")
    with pytest.raises(BackupCorruptError, match="is a symbolic link"):
        repo.verify(backup_id)
