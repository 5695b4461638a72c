"""A lock left by a run that was killed (SIGKILL, a crash) keeps restic's own prune and check out (restic does not
skip it: only an explicit `restic unlock` removes it). Ours never removes a fresh lock, not even one of this host
whose pid no longer runs (a process in another container with the same hostname looks just like that): it says
which lock and `restic unlock`. Only a lock not refreshed for restic's stale timeout (30 minutes) is removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from kubectl_dr.repo.restic.backend import LOCKS, LocalBackend
from kubectl_dr.repo.restic.locks import STALE_AFTER, Lock, LockedError, dead_locks, read_locks
from kubectl_dr.repo.restic.nodes import NS, format_time
from kubectl_dr.repo.restic.repository import Repository
from tests.restic.oracle import PASSWORD, restic


def _lock(repo: Repository, *, pid: int, hostname: str | None = None, exclusive: bool = False,
          age: float = 0.0) -> str:
    doc = {"time": format_time(time.time_ns() - int(age * NS)), "exclusive": exclusive,
           "hostname": hostname or socket.gethostname(), "username": "root", "pid": pid, "uid": os.getuid(),
           "gid": os.getgid()}
    return repo.save_unpacked(LOCKS, json.dumps(doc).encode())


def _gone_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid names no process any more
    return finished.pid


def test_a_dead_pids_fresh_lock_is_kept_and_reported_until_restic_unlock(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    repo = Repository.init(LocalBackend(repo_dir), PASSWORD.encode())
    pid = _gone_pid()
    dead = _lock(repo, exclusive=True, pid=pid)
    blocked = restic(repo_dir, "prune", "--dry-run", check=False)
    assert blocked.returncode == 11 and "already locked" in blocked.stderr, blocked.stderr

    # A backup's lock meets it: refused, saying which lock and what to do; the lock stays.
    with pytest.raises(LockedError) as refused:
        Lock(repo).__enter__()
    said = str(refused.value)
    assert f"this host's pid {pid}" in said and "no longer runs" in said and "created 20" in said, said
    assert f"`restic -r {repo_dir} unlock`" in said, said
    assert {lk.id for lk in read_locks(repo)} == {dead}

    # A non-exclusive one: a backup shares the repository with it, and leaves it for restic unlock.
    repo.backend.remove(LOCKS, dead)
    shared = _lock(repo, pid=pid)
    with Lock(repo):
        assert [lk.id for lk in dead_locks(repo)] == [shared]
    assert {lk.id for lk in read_locks(repo)} == {shared}
    with pytest.raises(LockedError, match=f"this host's pid {pid}"):
        Lock(repo, exclusive=True).__enter__()  # our prune, as restic's, waits for `restic unlock`

    restic(repo_dir, "unlock")  # what a restic user does, and what the message says
    assert read_locks(repo) == []
    restic(repo_dir, "prune", "--dry-run")
    restic(repo_dir, "check")


def test_only_a_lock_not_refreshed_for_restics_stale_timeout_is_removed(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    repo = Repository.init(LocalBackend(repo_dir), PASSWORD.encode())
    old = _lock(repo, pid=_gone_pid(), exclusive=True, age=STALE_AFTER + 60)
    old_elsewhere = _lock(repo, pid=1, hostname="another-host", exclusive=True, age=STALE_AFTER + 60)
    alive = _lock(repo, pid=os.getppid())
    elsewhere = _lock(repo, pid=_gone_pid(), hostname="another-host")

    with Lock(repo):
        held = {lk.id for lk in read_locks(repo)}
    assert not {old, old_elsewhere} & held and {alive, elsewhere} <= held
    assert {lk.id for lk in read_locks(repo)} == {alive, elsewhere}  # ours went with the block
    for name in (alive, elsewhere):
        repo.backend.remove(LOCKS, name)
    restic(repo_dir, "prune", "--dry-run")
    restic(repo_dir, "check")


def test_a_wait_for_another_clients_lock_ends_at_once_when_stopped(tmp_path: Path) -> None:
    """A backup waits for restic's exclusive lock in a thread beside its pod's start; when the pod fails, the
    wait must end then, not after its five minutes."""
    import threading

    repo = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD.encode())
    stop = threading.Event()
    with Lock(repo, exclusive=True):
        timer = threading.Timer(0.5, stop.set)
        timer.start()
        start = time.monotonic()
        with pytest.raises(LockedError):
            Lock(repo, wait=300.0, stop=stop).__enter__()
        assert time.monotonic() - start < 5
        timer.join()
        assert len(read_locks(repo)) == 1  # only the exclusive one: the stopped waiter left none
    assert read_locks(repo) == []


class _SlowPacks(LocalBackend):
    """The local backend, whose pack saves wait until the test lets them finish (a 16 MiB upload on a slow link)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        import threading

        self.go = threading.Event()
        self.events: list[str] = []

    def save(self, kind: str, name: str, data: bytes | bytearray | memoryview) -> None:
        if kind == "data":
            self.go.wait(30)
        super().save(kind, name, data)
        self.events.append(f"saved {kind}")

    def remove(self, kind: str, name: str) -> None:
        super().remove(kind, name)
        self.events.append(f"removed {kind}")


def test_two_ctrl_c_while_the_lock_waits_for_a_pack_still_end_with_the_lock_removed(tmp_path: Path) -> None:
    """A backup that failed before its flush leaves a pack being stored; the lock's release waits for it. Two
    Ctrl-Cs during that wait (Interrupted is no Exception) must not leave the lock in the repository, and the lock
    goes only after the pack's save ended: nothing of ours is written once it is gone."""
    import signal
    import threading

    repo_dir = tmp_path / "repo"
    Repository.init(LocalBackend(repo_dir), PASSWORD.encode())
    backend = _SlowPacks(repo_dir)
    repo = Repository.open(backend, PASSWORD.encode())
    lock = Lock(repo).__enter__()
    repo.save_blob("data", os.urandom(1024))
    repo._store_pack("data")  # handed to the storing thread, which now waits

    def ctrl_c_twice_then_let_it_finish() -> None:
        for _ in range(2):
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        backend.go.set()

    # Python's own Ctrl-C handler, whatever this process inherited: a suite started in the background (`… &`
    # without job control) has SIGINT ignored, and the signals would be lost, not tested.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=ctrl_c_twice_then_let_it_finish, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            lock.__exit__(None, None, None)
    finally:
        signal.signal(signal.SIGINT, before)
    assert read_locks(repo) == []
    assert backend.events.index("saved data") < backend.events.index("removed locks"), backend.events
