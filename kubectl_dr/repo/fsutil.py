"""Small file-system helpers for durable, private writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path) -> None:
    """mkdir with 0700 regardless of umask. A directory that is already there keeps its mode: a repository
    the user made (shared with a group, say) is theirs to set; each backup inside it is private anyway."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        if path.is_dir():
            return
        raise
    os.chmod(path, DIR_MODE)


def open_private_file(path: Path) -> int:
    """A new file, 0600 regardless of umask; fails if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    # A rename or a new entry is durable only once the directory holding it is synced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes) -> None:
    fd = open_private_file(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait
_sync_file_range: Any = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting (Linux; elsewhere a no-op).

    A part is fsynced before its backup is committed. Left to itself, the kernel holds most of a large
    part in memory until then, and the fsync of 1 GiB took ~0.5 s after the transfer; started while
    the transfer runs, the writing overlaps it and the final fsync has little left (~0.02 s).
    """
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
            _sync_file_range = function
        except (OSError, AttributeError):
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a failure only means no head start
