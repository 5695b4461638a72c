"""Interruptions and concurrency against the real restic: a backup cut at any write leaves a repository
`restic check --read-data` accepts, and restic's prune waits for our lock."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kubectl_dr.repo.restic import localfs
from kubectl_dr.repo.restic.backend import LOCKS, LocalBackend
from kubectl_dr.repo.restic.locks import Lock, LockedError
from kubectl_dr.repo.restic.repository import Repository
from tests.restic.oracle import PASSWORD, restic, restic_binary, restic_json

PW = PASSWORD.encode()


class _Cut(Exception):
    pass


class CutAfter(LocalBackend):
    """A local backend whose process 'dies' (raises) instead of making its n-th write."""

    def __init__(self, root: Path, writes: int) -> None:
        super().__init__(root)
        self.left = writes

    def save(self, kind: str, name: str, data: bytes) -> None:
        if self.left == 0:
            raise _Cut(f"cut before writing {kind}/{name[:8]}")
        self.left -= 1
        super().save(kind, name, data)


def _volume(root: Path, seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        (root / f"f{i}").write_bytes(os.urandom((seed + i) * 300_000))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "small").write_text(f"run {seed}")
    return root


def test_a_backup_cut_at_every_write_leaves_a_valid_repository(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    Repository.init(LocalBackend(repo_dir), PW)
    first = localfs.backup_dir(Repository.open(LocalBackend(repo_dir), PW), _volume(tmp_path / "v", 1),
                               snapshot_path="/v")
    cuts = 0
    for writes in range(0, 50):
        src = _volume(tmp_path / "v", writes + 2)  # new content each time: every run has packs to write
        try:
            localfs.backup_dir(Repository.open(CutAfter(repo_dir, writes), PW), src, snapshot_path="/v",
                               parent=first)
        except _Cut:
            cuts += 1
            restic(repo_dir, "check", "--read-data")
            continue
        break  # this run needed fewer writes than allowed: every cut point has been tried
    assert cuts >= 4  # data pack(s), tree pack, index, snapshot
    restic(repo_dir, "check", "--read-data")
    assert len(restic_json(repo_dir, "snapshots")) == 2
    restic(repo_dir, "prune")  # what the cut runs left behind goes, and the repository stays sound
    restic(repo_dir, "check", "--read-data")


def test_restic_prune_waits_for_our_lock_and_we_refuse_to_write_under_its_exclusive_lock(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    repo = Repository.init(LocalBackend(repo_dir), PW)
    localfs.backup_dir(repo, _volume(tmp_path / "v", 1), snapshot_path="/v")
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(tmp_path / ".cache")}
    with Lock(repo):
        refused = restic(repo_dir, "prune", check=False)
        assert refused.returncode != 0 and "locked" in refused.stderr, refused.stderr
        waiting = subprocess.Popen([restic_binary(), "-r", str(repo_dir), "--retry-lock", "60s", "prune"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(3)
        assert waiting.poll() is None  # still waiting for us
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert list(repo.backend.list(LOCKS)) == []

    # restic's own exclusive lock (`restic check` takes one in 0.18, as prune does): caught while restic is
    # paused holding it, a lock file restic wrote and a live process.
    localfs.backup_dir(repo, _volume(tmp_path / "big", 20), snapshot_path="/big")
    checker = subprocess.Popen([restic_binary(), "-r", str(repo_dir), "check", "--read-data"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not list(repo.backend.list(LOCKS)) and checker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        checker.send_signal(signal.SIGSTOP)
        assert list(repo.backend.list(LOCKS)), "restic finished before its lock was seen"
        with pytest.raises(LockedError, match="exclusive lock"), Lock(repo, wait=0.5, poll=0.1):
            pass
        threading.Timer(1.0, checker.send_signal, (signal.SIGCONT,)).start()
        with Lock(repo, wait=120, poll=0.2):  # waits for restic to finish, then holds the repository
            assert checker.wait(timeout=30) == 0  # restic removed its lock only when it was done
    finally:
        checker.send_signal(signal.SIGCONT)
        checker.communicate(timeout=120)
    assert checker.returncode == 0
