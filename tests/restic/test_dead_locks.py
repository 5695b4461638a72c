"""A lock left by a run that was killed (SIGKILL, a crash) keeps restic's own prune and check out (restic does not
skip it: `restic unlock` removes it); our next lock removes it as `restic unlock` would, and only that one: a live
process's lock, and another host's, stay."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from kubectl_dr.repo.restic.backend import LOCKS, LocalBackend
from kubectl_dr.repo.restic.locks import Lock, read_locks
from kubectl_dr.repo.restic.nodes import format_time
from kubectl_dr.repo.restic.repository import Repository
from tests.restic.oracle import PASSWORD, restic


def _lock(repo: Repository, *, pid: int, hostname: str | None = None, exclusive: bool = False) -> str:
    doc = {"time": format_time(time.time_ns()), "exclusive": exclusive, "hostname": hostname or socket.gethostname(),
           "username": "root", "pid": pid, "uid": os.getuid(), "gid": os.getgid()}
    return repo.save_unpacked(LOCKS, json.dumps(doc).encode())


def test_our_next_lock_removes_a_killed_runs_lock_and_only_that(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    repo = Repository.init(LocalBackend(repo_dir), PASSWORD.encode())
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid names no process any more
    dead = _lock(repo, pid=finished.pid)
    blocked = restic(repo_dir, "prune", "--dry-run", check=False)
    assert blocked.returncode == 11 and "already locked" in blocked.stderr, blocked.stderr
    alive = _lock(repo, pid=os.getppid())
    elsewhere = _lock(repo, pid=finished.pid, hostname="another-host")

    with Lock(repo):
        held = {lk.id for lk in read_locks(repo)}
    assert dead not in held and {alive, elsewhere} <= held
    assert {lk.id for lk in read_locks(repo)} == {alive, elsewhere}  # ours went with the block
    for name in (alive, elsewhere):
        repo.backend.remove(LOCKS, name)
    restic(repo_dir, "prune", "--dry-run")
    restic(repo_dir, "check")
