"""Processes the cluster started, identified by pid *and* command line so that a recycled pid that
now belongs to someone else is never signalled."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.control.etcd_members import pid_alive, stop_pid


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_ours(pid: int | None, marker: str) -> bool:
    """The process exists, is not a zombie, and its command line mentions `marker` (our state dir)."""
    if not pid or not pid_alive(pid):
        return False
    return any(marker in arg for arg in cmdline(pid))


def stop_ours(pid: int | None, marker: str, timeout: float = 15.0) -> bool:
    if not is_ours(pid, marker):
        return False
    assert pid is not None
    stop_pid(pid, timeout)
    return True
