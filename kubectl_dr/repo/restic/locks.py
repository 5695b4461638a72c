"""restic's locks (`locks/ID`, encrypted JSON): ours and restic's exclude each other.

A backup holds a non-exclusive lock; `restic prune`/`forget` hold an exclusive one. Before writing we
look for exclusive locks of others and wait for them to go; restic does the same with ours, which is
what makes a concurrent `restic prune` wait for our backup. We refresh ours every 5 minutes while working,
as restic does, so a lock not refreshed for 30 minutes belongs to no running process (restic's staleTimeout):
ours ignores and removes it. A fresh lock is never removed automatically, not even one of this host whose pid
no longer runs: a process in another container with the same hostname has its own pids, and deleting its
live lock would let a prune delete the packs its backup is writing. restic itself removes such a lock only on
an explicit `restic unlock`; we say which lock it is and that command.
"""

from __future__ import annotations

import contextlib
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
        """Not refreshed for restic's stale timeout: no running restic or kubectl dr holds it."""
        return now_ns - self.time > STALE_AFTER * NS

    def dead_here(self) -> bool:
        """Of this host, by a pid that no longer runs here: likely a killed run's, but a process of another
        container with the same hostname looks the same from here, so this alone never removes it."""
        return self.hostname == socket.gethostname() and self.pid > 0 and self.pid != os.getpid() \
            and not pid_alive(self.pid)

    def explain(self, repo: Repository) -> str:
        """Which lock this is and, for one of a pid that no longer runs here, what to do about it."""
        kind = "an exclusive lock" if self.exclusive else "a lock"
        created = format_time(self.time - self.time % NS)
        if not self.dead_here():
            return f"{kind} of {self.hostname} pid {self.pid} (created {created})"
        return (f"{kind} of this host's pid {self.pid} (created {created}), which no longer runs: likely a run "
                "that was killed. If no other process (in another container with this hostname) uses the "
                f"repository, remove it with `restic -r {repo.backend.describe()} unlock`")


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


def remove_stale_locks(repo: Repository) -> list[LockInfo]:
    """Remove the locks not refreshed for restic's stale timeout (30 minutes), which restic calls stale
    whatever their host or pid; restic's own locking does not skip them, so one left would keep `restic prune`
    out. Fresh locks stay, whatever their pid (see the module's note)."""
    now = time.time_ns()
    gone = [lk for lk in read_locks(repo) if lk.stale(now)]
    for lk in gone:
        repo.backend.remove(LOCKS, lk.id)
    return gone


def dead_locks(repo: Repository) -> list[LockInfo]:
    """The fresh locks of this host whose pid no longer runs: reported, never removed (see the module's note)."""
    now = time.time_ns()
    return [lk for lk in read_locks(repo) if not lk.stale(now) and lk.dead_here()]


class Lock:
    """A lock held on the repository for the duration of a `with` block."""

    def __init__(self, repo: Repository, *, exclusive: bool = False, wait: float = 0.0, poll: float = 1.0,
                 stop: threading.Event | None = None) -> None:
        """`stop`: set by another thread, it ends the wait for a conflicting lock at once (LockedError)."""
        self.repo = repo
        self.exclusive = exclusive
        self.wait = wait
        self.poll = poll
        self._given_up = stop or threading.Event()
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
        remove_stale_locks(self.repo)  # no running process holds them; restic's prune would stay locked out
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
            if time.monotonic() >= deadline or self._given_up.is_set():
                where = f"the restic repository at {self.repo.backend.describe()}"
                if conflicts and conflicts[0].dead_here():
                    raise LockedError(f"{where} is locked by {conflicts[0].explain(self.repo)}")
                who = conflicts[0].explain(self.repo) if conflicts else "a lock"
                raise LockedError(f"{where} is locked by {who}; wait for it to finish")
            self._given_up.wait(self.poll)
        self._thread = threading.Thread(target=self._refresh, name="restic-lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            old, self.id = self.id, self._save()
            self.repo.backend.remove(LOCKS, old)

    def __exit__(self, *exc: object) -> None:
        # A pack still being stored (a backup that failed before its flush) is waited for first: nothing of
        # ours is written once the lock is gone. Its own error, if any, is not the one to report.
        # A second Ctrl-C during that wait (Interrupted is no Exception) must not leave the lock behind: the wait
        # itself lasts until the save ended, so the lock goes in any case.
        try:
            with contextlib.suppress(Exception):
                self.repo.wait_stored()
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            if self.id:
                self.repo.backend.remove(LOCKS, self.id)
                self.id = ""
