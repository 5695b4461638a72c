"""Writing a backup, whatever the repository: parts first, the manifest last.

A `BackupWriter` gets its parts as streams of chunks (`PartWriter.write`), counts and hashes the
plaintext (what the pod hashed), encrypts it when the backup has recipients, and hands the stored bytes
to the repository's sink (a file in a hidden temp directory, or an S3 multipart upload). Only
`commit()` makes the backup visible (a rename, or the manifest object written last), so a reader never
sees a half-written backup. A failure or an ``abort()`` removes what was written; a process killed
outright leaves an owner record behind, and ``prune`` removes the rest once that process is gone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from kubectl_dr import __version__
from kubectl_dr.clusters import ClusterIdentity
from kubectl_dr.repo import fsutil, ids
from kubectl_dr.repo.crypto import AGE_SUFFIX, Encryptor, Recipient
from kubectl_dr.repo.errors import DiskFullError, RepoError, WriterStateError
from kubectl_dr.repo.manifest import Manifest, Part, Stored, part_name_ok

# Kept importable from here: the local repository's layout.
TEMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner"
WRITEBACK_STEP = 32 << 20
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class Sink(ABC):
    """Where a part's stored bytes go. ``size`` counts them; ``sha256`` is their digest when asked for."""

    size: int = 0

    @abstractmethod
    def write(self, data: memoryview) -> None: ...

    @abstractmethod
    def close(self) -> str | None:
        """Make the bytes durable (fsync, complete the upload); the SHA-256 of the stored bytes if hashed."""

    @abstractmethod
    def abort(self) -> None: ...

    @property
    def local_path(self) -> Path | None:
        """The stored file when it is a local file (the local repository), else None."""
        return None


class Staging(ABC):
    """A backup being written in one repository: its sinks, then the commit that makes it visible."""

    id: str
    location: str  # the repository, for messages
    temp_path: Path | None = None

    @abstractmethod
    def open_sink(self, file: str, *, hash_stored: bool, size_hint: int | None) -> Sink: ...

    @abstractmethod
    def commit(self, manifest_for: Callable[[str], Manifest]) -> Manifest:
        """Write the manifest and make the backup visible; ``manifest_for(id)`` builds it for the final ID
        (the local repository picks another ID if a racing writer took this one)."""

    @abstractmethod
    def abort(self) -> None: ...


class PartWriter:
    """One data file of a backup. Hashes and counts the plaintext while writing; callers stream chunks in.

    ``path`` is the part as a local plaintext file: the file itself in an unencrypted local repository,
    or (``keep_local=True``) a private spool copy kept until the backup is committed or aborted, for a
    job that must read the part back before committing (an etcd snapshot's database check).
    """

    def __init__(self, backup: BackupWriter, name: str, sink: Sink, recipients: Sequence[Recipient],
                 keep_local: bool, expect: Part | None = None) -> None:
        self._backup = backup
        self._expect = expect  # a copied part: its stored bytes, which must come out as recorded
        self.name = name
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0
        self.part: Part | None = None
        self._open = True
        self._encryptor = Encryptor(recipients, sink.write) if recipients else None
        self._spool_fd: int | None = None
        self._spool: Path | None = None
        self._written_back = 0
        if keep_local and (self._encryptor is not None or sink.local_path is None):
            self._spool = backup.spool_dir() / name
            self._spool_fd = fsutil.open_private_file(self._spool)

    @property
    def path(self) -> Path:
        if self._spool is not None:
            return self._spool
        if self._encryptor is None and self._sink.local_path is not None:
            return self._sink.local_path
        raise RepoError(f'part "{self.name}" of backup "{self._backup.id}" is not a local file in '
                        f"{self._backup.location}; open it with keep_local=True to read it back before the commit")

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._open:
            raise WriterStateError(f'part "{self.name}" is already closed')
        view = memoryview(data).cast("B")
        try:
            if self._encryptor is not None:
                self._encryptor.write(view)
            else:
                self._sink.write(view)
            if self._spool_fd is not None:
                fsutil.write_all(self._spool_fd, view)
                end = self.size + len(view)
                if end - self._written_back >= WRITEBACK_STEP:
                    fsutil.start_writeback(self._spool_fd, self._written_back, end - self._written_back)
                    self._written_back = end
        except BaseException as exc:
            self._fail(exc)
            _reraise(self._translate(exc), exc)
        self._hash.update(view)
        self.size += len(view)

    def close(self) -> Part:
        """Flush the stored bytes (fsync, or the last upload) and return the part's record (idempotent)."""
        if self.part is not None:
            return self.part
        if not self._open:
            raise WriterStateError(f'part "{self.name}" was abandoned')
        try:
            if self._encryptor is not None:
                self._encryptor.close()
            stored_sha = self._sink.close()
            if self._spool_fd is not None:
                os.fsync(self._spool_fd)
                os.close(self._spool_fd)
                self._spool_fd = None
        except BaseException as exc:
            self._fail(exc)
            _reraise(self._translate(exc), exc)
        self._open = False
        if self._expect is not None:
            return self._check_copy(self._expect)
        stored = None
        if self._encryptor is not None:
            assert stored_sha is not None
            stored = Stored(self.name + AGE_SUFFIX, self._sink.size, stored_sha)
        self.part = Part(self.name, self.size, self._hash.hexdigest(), stored)
        return self.part

    def _check_copy(self, expect: Part) -> Part:
        if self.size != expect.stored_size or self.sha256 != expect.stored_sha256:
            self._backup.abort()
            from kubectl_dr.repo.errors import BackupCorruptError

            raise BackupCorruptError(self._backup.id, self.name, f"was copied as {self.size} bytes with SHA-256 "
                                     f"{self.sha256}, not the {expect.stored_size} bytes with SHA-256 "
                                     f"{expect.stored_sha256} its manifest records; nothing was kept")
        self.part = expect
        return expect

    def _fail(self, exc: BaseException) -> None:
        self._release()
        self._backup.abort()

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, OSError):
            if exc.errno in DISK_FULL:
                return DiskFullError(self._backup.location, self.size, self.name)
            where = exc.filename or self._backup.location
            return RepoError(f'cannot write part "{self.name}" of backup "{self._backup.id}" to {where}: '
                             f"{exc.strerror or exc}; the incomplete backup was removed")
        return exc

    def _release(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._encryptor is not None:
            self._encryptor.abort()
        self._sink.abort()
        if self._spool_fd is not None:
            os.close(self._spool_fd)
            self._spool_fd = None

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


def _reraise(translated: BaseException, original: BaseException) -> NoReturn:
    if translated is original:
        raise original
    raise translated from original


class BackupWriter:
    """A backup being written. Use as a context manager: leaving it without ``commit()`` aborts."""

    def __init__(
        self,
        staging: Staging,
        type: str,
        source: dict[str, Any],
        created_at: datetime,
        clock: Callable[[], datetime],
        recipients: Sequence[Recipient] = (),
        template: Manifest | None = None,
        cluster: ClusterIdentity | None = None,
    ) -> None:
        self._staging = staging
        self.type = type
        self.source = dict(source)
        self.created_at = created_at
        self._clock = clock
        self.recipients = tuple(recipients)
        self._template = template  # a copy keeps the source's manifest (ID, times, details, cluster) exactly
        # The cluster the data is of; a job that learns it only from the data (an etcd snapshot taken
        # through --endpoints) sets it before the commit.
        self.cluster = cluster
        self._parts: dict[str, PartWriter] = {}
        self._spool: Path | None = None
        self.state = "open"  # open → committed | aborted

    @property
    def id(self) -> str:
        return self._staging.id

    @property
    def location(self) -> str:
        return self._staging.location

    @property
    def repo(self) -> str:
        return self._staging.location

    @property
    def temp_path(self) -> Path:
        if self._staging.temp_path is None:
            raise RepoError(f"backup {self.id} is not written through a local temp directory")
        return self._staging.temp_path

    def open_part(self, name: str, *, keep_local: bool = False, size_hint: int | None = None) -> PartWriter:
        """A new part; ``size_hint`` (bytes expected, if known) lets an S3 upload pick its part size."""
        self._require_open()
        if not part_name_ok(name) or name.endswith(AGE_SUFFIX):
            raise WriterStateError(f"invalid part name {name[:60]!r}: use letters, digits, '.', '_' and '-' "
                                   f"(no '..', at most {ids.MAX_NAME_BYTES} bytes)")
        if name in self._parts:
            raise WriterStateError(f'part "{name}" was already written in backup "{self.id}"')
        stored = name + AGE_SUFFIX if self.recipients else name
        try:
            sink = self._staging.open_sink(stored, hash_stored=bool(self.recipients), size_hint=size_hint)
        except BaseException:
            self.abort()
            raise
        writer = PartWriter(self, name, sink, self.recipients, keep_local)
        self._parts[name] = writer
        return writer

    def open_copied_part(self, part: Part) -> PartWriter:
        """A part copied as stored (ciphertext stays ciphertext); it must match ``part``'s stored record."""
        self._require_open()
        if not (part_name_ok(part.name) and part_name_ok(part.stored_file)):
            raise WriterStateError(f"invalid part name {part.name[:60]!r} (stored as {part.stored_file[:60]!r})")
        if part.name in self._parts:
            raise WriterStateError(f'part "{part.name}" was already written in backup "{self.id}"')
        try:
            sink = self._staging.open_sink(part.stored_file, hash_stored=False, size_hint=part.stored_size)
        except BaseException:
            self.abort()
            raise
        writer = PartWriter(self, part.name, sink, (), False, expect=part)
        self._parts[part.name] = writer
        return writer

    def spool_dir(self) -> Path:
        """A private directory outside the repository for parts kept locally (removed with the writer)."""
        if self._spool is None:
            self._spool = Path(tempfile.mkdtemp(prefix="kubectl-dr-part-"))
            os.chmod(self._spool, fsutil.DIR_MODE)
        return self._spool

    def commit(self, details: dict[str, Any] | None = None) -> Manifest:
        """Record the manifest and make the backup visible; returns the manifest."""
        self._require_open()
        try:
            unfinished = [name for name, w in self._parts.items() if w.part is None]
            if unfinished:
                raise WriterStateError(f"parts not closed before commit: {', '.join(unfinished)}")
            parts = tuple(w.part for w in self._parts.values() if w.part is not None)
            manifest = self._staging.commit(lambda backup_id: self._manifest(backup_id, parts, details or {}))
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                if exc.errno in DISK_FULL:
                    raise DiskFullError(self.location, 0, "manifest.json") from exc
                raise RepoError(f'cannot commit backup "{self.id}" in {self.location}: {exc.strerror or exc}; '
                                "the incomplete backup was removed") from exc
            raise
        self.state = "committed"
        self._remove_spool()
        return manifest

    def _manifest(self, backup_id: str, parts: tuple[Part, ...], details: dict[str, Any]) -> Manifest:
        template = self._template
        if template is not None:
            return Manifest(id=backup_id, type=template.type, created_at=template.created_at,
                            completed_at=template.completed_at, tool_version=template.tool_version,
                            source=template.source, parts=parts, details=template.details,
                            encryption=self._encryption() or template.encryption, cluster=template.cluster)
        return Manifest(id=backup_id, type=self.type, created_at=self.created_at, completed_at=self._clock(),
                        tool_version=__version__, source=self.source, parts=parts, details=details,
                        encryption=self._encryption(), cluster=self.cluster)

    def _encryption(self) -> dict[str, Any] | None:
        if not self.recipients:
            return None
        return {"format": "age", "recipients": [r.text for r in self.recipients]}

    def abort(self) -> None:
        """Remove everything written so far (idempotent; a no-op after commit)."""
        if self.state != "open":
            return
        self.state = "aborted"
        for writer in self._parts.values():
            writer._release()
        try:
            self._staging.abort()
        finally:
            self._remove_spool()

    def _remove_spool(self) -> None:
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
            self._spool = None

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
