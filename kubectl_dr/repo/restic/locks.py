"""restic's locks (`locks/ID`, encrypted JSON): ours and restic's exclude each other.

A backup holds a non-exclusive lock; `restic prune`/`forget` hold an exclusive one. Before writing we
look for exclusive locks of others and wait for them to go; restic does the same with ours, which is
what makes a concurrent `restic prune` wait for our backup. A lock is stale (ignored, as restic ignores
it) when its time is more than 30 minutes old, or when it is from this host and its process is gone. We
refresh ours every 5 minutes while working, as restic does.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubectl_dr.repo.local import pid_alive
from kubectl_dr.repo.restic import keys
from kubectl_dr.repo.restic.backend import LOCKS
from kubectl_dr.repo.restic.nodes import NS, ResticFormatError, format_time, parse_time
from kubectl_dr.repo.restic.repository import Repository

STALE_AFTER = 30 * 60
REFRESH_EVERY = 5 * 60


class LockedError(ResticFormatError):
    """Another process holds a lock that excludes ours."""


@dataclass(frozen=True)
class LockInfo:
    id: str
    time: int
    exclusive: bool
    hostname: str
    pid: int

    def stale(self, now_ns: int) -> bool:
        if now_ns - self.time > STALE_AFTER * NS:
            return True
        return self.hostname == socket.gethostname() and self.pid > 0 and not pid_alive(self.pid)


def read_locks(repo: Repository) -> list[LockInfo]:
    found = []
    for name, _size in repo.backend.list(LOCKS):
        try:
            doc: Any = json.loads(repo.load_unpacked(LOCKS, name))
            found.append(LockInfo(name, parse_time(doc["time"]), bool(doc.get("exclusive")),
                                  str(doc.get("hostname", "")), int(doc.get("pid", 0))))
        except (ResticFormatError, ValueError, KeyError, TypeError):
            continue  # a lock being removed while we read it; restic skips those too
    return found


def remove_dead_locks(repo: Repository) -> list[LockInfo]:
    """Remove the locks of processes of this host that no longer run (a run killed by SIGKILL or a crash),
    as `restic unlock` does: restic itself does not skip them when it locks, so one left behind would keep
    `restic prune` and `restic check` out until someone ran `restic unlock`. A lock of another host is left
    alone (its process cannot be checked from here)."""
    gone = [lk for lk in read_locks(repo)
            if lk.hostname == socket.gethostname() and lk.pid > 0 and lk.pid != os.getpid() and not pid_alive(lk.pid)]
    for lk in gone:
        repo.backend.remove(LOCKS, lk.id)
    return gone


class Lock:
    """A lock held on the repository for the duration of a `with` block."""

    def __init__(self, repo: Repository, *, exclusive: bool = False, wait: float = 0.0, poll: float = 1.0) -> None:
        self.repo = repo
        self.exclusive = exclusive
        self.wait = wait
        self.poll = poll
        self.id = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _save(self) -> str:
        doc = {"time": format_time(time.time_ns()), "exclusive": self.exclusive, "hostname": socket.gethostname(),
               "username": keys._username(), "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
        return self.repo.save_unpacked(LOCKS, json.dumps(doc).encode())

    def _conflicts(self) -> list[LockInfo]:
        now = time.time_ns()
        return [lk for lk in read_locks(self.repo)
                if lk.id != self.id and not lk.stale(now) and (self.exclusive or lk.exclusive)]

    def __enter__(self) -> Lock:
        remove_dead_locks(self.repo)  # else a run killed earlier keeps restic's prune and check out
        deadline = time.monotonic() + self.wait
        while True:
            conflicts = self._conflicts()
            if not conflicts:
                self.id = self._save()
                # Both sides may have looked at the same moment: look again with ours in place, and back off.
                if not self._conflicts():
                    break
                self.repo.backend.remove(LOCKS, self.id)
                self.id = ""
                conflicts = self._conflicts()
            if time.monotonic() >= deadline:
                who = "a lock"
                if conflicts:
                    other = conflicts[0]
                    who = f"{'an exclusive' if other.exclusive else 'a'} lock of {other.hostname} pid {other.pid}"
                raise LockedError(f"the restic repository at {self.repo.backend.describe()} is locked by {who}; "
                                  "wait for it to finish, or remove a stale lock with `restic unlock`")
            time.sleep(self.poll)
        self._thread = threading.Thread(target=self._refresh, name="restic-lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            old, self.id = self.id, self._save()
            self.repo.backend.remove(LOCKS, old)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.id:
            self.repo.backend.remove(LOCKS, self.id)
            self.id = ""
