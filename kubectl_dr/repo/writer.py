"""Atomic backup writes: parts stream into a hidden temp directory that is renamed into place on commit.

Until ``commit()`` renames it, a backup is only a hidden ``.tmp-…`` directory that listing ignores, so
a reader never sees a half-written backup. A failure or an ``abort()`` removes the temp directory; a
process killed outright leaves it behind with an owner record, and ``prune`` removes it once that
process is gone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from kubectl_dr import __version__
from kubectl_dr.repo import fsutil, ids
from kubectl_dr.repo.errors import DiskFullError, WriterStateError
from kubectl_dr.repo.manifest import MANIFEST_NAME, PART_PATTERN, Manifest, Part

TEMP_PREFIX = ".tmp-"
WRITEBACK_STEP = 32 << 20
OWNER_FILE = ".owner"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class PartWriter:
    """One data file of a backup. Hashes and counts while writing, so callers stream chunks into it."""

    def __init__(self, backup: BackupWriter, name: str, path: Path) -> None:
        self._backup = backup
        self.name = name
        self.path = path
        self._fd: int | None = fsutil.open_private_file(path)
        self._hash = hashlib.sha256()
        self.size = 0
        self._written_back = 0  # bytes whose writeback to disk was started (see fsutil.start_writeback)
        self.part: Part | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise WriterStateError(f'part "{self.name}" is already closed')
        view = memoryview(data).cast("B")
        try:
            while view:
                written = os.write(self._fd, view)
                self._hash.update(view[:written])
                self.size += written
                view = view[written:]
            if self.size - self._written_back >= WRITEBACK_STEP:
                fsutil.start_writeback(self._fd, self._written_back, self.size - self._written_back)
                self._written_back = self.size
        except OSError as exc:
            self._fail(exc)
            raise

    def close(self) -> Part:
        """Flush to disk and return the part's name, size and SHA-256 (idempotent)."""
        if self.part is not None:
            return self.part
        if self._fd is None:
            raise WriterStateError(f'part "{self.name}" was abandoned')
        try:
            # Some file systems only report a full disk when the data is flushed.
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)
            raise
        os.close(self._fd)
        self._fd = None
        self.part = Part(self.name, self.size, self._hash.hexdigest())
        return self.part

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _fail(self, exc: OSError) -> None:
        self._release()
        self._backup.abort()
        if exc.errno in _DISK_FULL:
            raise DiskFullError(self._backup.repo, self.size, self.name) from exc

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._release()
            self._backup.abort()


class BackupWriter:
    """A backup being written. Use as a context manager: leaving it without ``commit()`` aborts."""

    def __init__(
        self,
        repo: Path,
        backup_id: str,
        type: str,
        source: dict[str, Any],
        created_at: datetime,
        clock: Callable[[], datetime],
    ) -> None:
        self.repo = repo
        self.id = backup_id
        self.type = type
        self.source = dict(source)
        self.created_at = created_at
        self._clock = clock
        self.temp_path = repo / f"{TEMP_PREFIX}{backup_id}-{os.getpid()}"
        self._parts: dict[str, PartWriter] = {}
        self.state = "open"  # open → committed | aborted
        fsutil.make_private_dir(self.temp_path)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "id": backup_id}
        fsutil.write_private_file(self.temp_path / OWNER_FILE, json.dumps(owner).encode())

    def open_part(self, name: str) -> PartWriter:
        self._require_open()
        if not PART_PATTERN.match(name) or name == MANIFEST_NAME:
            raise WriterStateError(f"invalid part name {name!r}: use letters, digits, '.', '_' and '-'")
        if name in self._parts:
            raise WriterStateError(f'part "{name}" was already written in backup "{self.id}"')
        writer = PartWriter(self, name, self.temp_path / name)
        self._parts[name] = writer
        return writer

    def commit(self, details: dict[str, Any] | None = None) -> Manifest:
        """Record the manifest and move the backup into place; returns the manifest."""
        self._require_open()
        try:
            return self._commit(details or {})
        except BaseException:
            self.abort()
            raise

    def _commit(self, details: dict[str, Any]) -> Manifest:
        unfinished = [name for name, w in self._parts.items() if w.part is None]
        if unfinished:
            raise WriterStateError(f"parts not closed before commit: {', '.join(unfinished)}")
        parts = tuple(w.part for w in self._parts.values() if w.part is not None)
        os.unlink(self.temp_path / OWNER_FILE)
        manifest_path = self.temp_path / MANIFEST_NAME
        backup_id = self.id
        while True:
            manifest = Manifest(
                id=backup_id,
                type=self.type,
                created_at=self.created_at,
                completed_at=self._clock(),
                tool_version=__version__,
                source=self.source,
                parts=parts,
                details=details,
            )
            try:
                fsutil.write_private_file(manifest_path, manifest.to_json().encode())
                fsutil.fsync_dir(self.temp_path)
            except OSError as exc:
                if exc.errno in _DISK_FULL:
                    raise DiskFullError(self.repo, 0, MANIFEST_NAME) from exc
                raise
            final = self.repo / backup_id
            if not final.exists():
                try:
                    # rename(2) refuses to replace a non-empty directory, so a racing writer that took
                    # the same ID first is never overwritten: we retry under a new suffix instead.
                    os.rename(self.temp_path, final)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            os.unlink(manifest_path)
            backup_id = ids.with_suffix(self.id)
        fsutil.fsync_dir(self.repo)
        self.id = backup_id
        self.state = "committed"
        return manifest

    def abort(self) -> None:
        """Remove everything written so far (idempotent; a no-op after commit)."""
        if self.state != "open":
            return
        self.state = "aborted"
        for writer in self._parts.values():
            writer._release()
        shutil.rmtree(self.temp_path, ignore_errors=True)

    def _require_open(self) -> None:
        if self.state != "open":
            raise WriterStateError(f'backup "{self.id}" is already {self.state}')

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leaving the block without a commit (an exception, Ctrl-C, or a forgotten commit) keeps nothing.
        self.abort()
