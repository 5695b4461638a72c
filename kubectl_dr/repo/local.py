"""The local backup repository: one directory per backup, each with ``manifest.json`` and its parts.

A backup is written into a hidden ``.tmp-ID-PID`` directory with an owner record (pid, host) and
renamed into place on commit; a deletion renames it to ``.deleting-…`` first. Both renames are atomic,
so listings see a backup whole or not at all. Everything is private to the user (0700/0600).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kubectl_dr import units
from kubectl_dr.repo import fsutil, ids
from kubectl_dr.repo.crypto import Identity, Recipient
from kubectl_dr.repo.errors import (
    BackupCorruptError,
    BackupNotFoundError,
    ManifestError,
    RepoError,
    StaleWriterError,
)
from kubectl_dr.repo.manifest import MANIFEST_NAME, VERIFICATION_NAME, Manifest
from kubectl_dr.repo.repository import Backup, Leftover, Repository, utcnow
from kubectl_dr.repo.writer import OWNER_FILE, TEMP_PREFIX, WRITEBACK_STEP, Sink, Staging

DELETING_PREFIX = ".deleting-"
# A temp dir from another host cannot be checked for a live writer; after this long it is abandoned.
FOREIGN_TEMP_MAX_AGE = 24 * 3600
# Room asked for beyond the expected size (an estimate from du): 2% and 1 MiB, for the manifest,
# file-system overhead and tar's headers.
SPACE_MARGIN = 1 << 20


class LocalRepository(Repository):
    kind = "local"
    remote = False

    def __init__(self, path: Path | str, *, clock: Callable[[], datetime] = utcnow,
                 recipients: Sequence[Recipient | str] = (), identities: Sequence[Identity] = ()) -> None:
        super().__init__(clock=clock, recipients=recipients, identities=identities)
        self._path = Path(path)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def location(self) -> str:
        return str(self._path)

    def backup_location(self, backup_id: str) -> str:
        return str(self._path / backup_id)

    # --- checks --------------------------------------------------------------------------------------

    def preflight(self, expected_bytes: int | None = None, *, create: bool = True) -> None:
        path = self._path
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            if existing == path:
                raise RepoError(f"the backup repository {path} is a file, not a directory",
                                hint="Choose a directory with --repo or KUBECTL_DR_REPO.")
            raise RepoError(f"the backup repository {path} cannot be created: {existing} is a file",
                            hint="Choose a directory with --repo or KUBECTL_DR_REPO.")
        try:
            if create:
                fsutil.make_private_dir(path)
                fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
                os.close(fd)
                os.unlink(probe)
            elif not os.access(existing, os.W_OK | os.X_OK) or _read_only_fs(existing):
                raise PermissionError(errno.EROFS if _read_only_fs(existing) else errno.EACCES,
                                      os.strerror(errno.EROFS if _read_only_fs(existing) else errno.EACCES))
        except OSError as exc:
            raise _unwritable(path, exc) from None
        if expected_bytes:
            stats = os.statvfs(path if path.is_dir() else existing)
            free = stats.f_bavail * stats.f_frsize
            if free < expected_bytes + expected_bytes // 50 + SPACE_MARGIN:
                raise RepoError(
                    f"not enough space for this backup in {path}: about {units.size(expected_bytes)} needed, "
                    f"{units.size(free)} free on its file system",
                    hint="Free some space (kubectl dr backups prune --keep-last N), or choose another repository "
                    "with --repo or KUBECTL_DR_REPO.",
                )

    # --- writing -------------------------------------------------------------------------------------

    def _new_staging(self, backup_id: str, *, exact: bool) -> Staging:
        try:
            fsutil.make_private_dir(self._path)
        except OSError as exc:
            raise _unwritable(self._path, exc) from None
        if not self._path.is_dir():
            raise RepoError(f"the backup repository {self._path} is not a directory")
        if exact:
            self._clear_dead_writers(backup_id)
        else:
            base = backup_id
            while (self._path / backup_id).exists() or any(self._path.glob(f"{TEMP_PREFIX}{backup_id}-*")):
                backup_id = ids.with_suffix(base)
        return LocalStaging(self._path, backup_id, exact)

    def _clear_dead_writers(self, backup_id: str) -> None:
        """Before a copy under a fixed ID: what a killed copy of it left goes; a live one is an error."""
        for temp in self._path.glob(f"{TEMP_PREFIX}{backup_id}-*"):
            if _writer_alive(temp):
                raise StaleWriterError(f"backup {backup_id} is being written into {self._path} by another process "
                                       f"({temp.name})", hint="Wait for it to finish, or stop it, and run this again.")
            shutil.rmtree(temp, ignore_errors=True)

    # --- reading -------------------------------------------------------------------------------------

    def _scan_raw(self) -> tuple[builtins.list[Backup], builtins.list[tuple[str, str]]]:
        backups: builtins.list[Backup] = []
        problems: builtins.list[tuple[str, str]] = []
        try:
            entries = builtins.list(os.scandir(self._path))
        except FileNotFoundError:
            return [], []
        except NotADirectoryError:
            raise RepoError(f"the backup repository {self._path} is a file, not a directory",
                            hint="Choose a directory with --repo or KUBECTL_DR_REPO.") from None
        except PermissionError:
            raise RepoError(f"the backup repository {self._path} cannot be read: permission denied") from None
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue  # temp dirs of unfinished writes, deletions in progress, stray files
            try:
                backups.append(self._backup(Path(entry.path)))
            except ManifestError as exc:
                problems.append((entry.path, exc.message))
        return backups, problems

    def _backup(self, directory: Path) -> Backup:
        return Backup(Manifest.load(directory), str(directory), directory, directory.name)

    def _fetch(self, backup_id: str) -> Backup | None:
        if ids.id_problem(backup_id) is not None:
            return None
        directory = self._path / backup_id
        if not (directory / MANIFEST_NAME).is_file():
            return None
        return self._backup(directory)

    def resolve(self, ref: str, type: str | None = None, source_match: dict[str, Any] | None = None, *,
                cluster: str | None = None) -> Backup:
        """Also accepts the path of a backup directory, even outside the repository."""
        if _looks_like_path(ref):
            path = Path(ref).expanduser()
            try:
                found = path.is_dir()
            except OSError:  # a name too long for the file system: no such backup directory either
                found = False
            if not found:
                raise BackupNotFoundError(ref, self.location, what="backup directory")
            backup = self._backup(path.absolute())
            if type is not None and backup.manifest.type != type:
                from kubectl_dr.repo.errors import WrongBackupTypeError

                raise WrongBackupTypeError(backup.id, backup.manifest.type, type)
            return backup
        return super().resolve(ref, type, source_match, cluster=cluster)

    def _open_stored(self, backup: Backup, file: str) -> Any:
        assert backup.path is not None
        path = backup.path / file
        try:
            if path.is_symlink():
                # A part is a file the writer made: a link would have the tool (often root) read, and copy
                # elsewhere, whatever file of this machine it names before the checksum could object.
                raise BackupCorruptError(backup.id, file, "is a symbolic link, not a file the backup wrote")
            if not path.exists():
                raise BackupCorruptError(backup.id, file, "is missing")
            if path.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(path))
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            return open(fd, "rb", buffering=0)  # closed by the reader that owns it
        except IsADirectoryError as exc:
            return _FailingReader(exc)
        except PermissionError as exc:
            raise BackupCorruptError(backup.id, file, f"cannot be read: {exc.strerror}") from None

    def _stored_sizes(self, backup: Backup) -> dict[str, int]:
        assert backup.path is not None
        sizes: dict[str, int] = {}
        for part in backup.manifest.parts:
            try:
                st = (backup.path / part.stored_file).stat()
            except OSError:
                continue
            sizes[part.stored_file] = st.st_size
        return sizes

    def _write_record(self, backup: Backup, data: bytes, name: str = VERIFICATION_NAME) -> None:
        assert backup.path is not None
        temp = backup.path / f".{name}.{secrets.token_hex(3)}"
        fsutil.write_private_file(temp, data)
        os.replace(temp, backup.path / name)
        fsutil.fsync_dir(backup.path)

    def _read_record(self, backup: Backup, name: str = VERIFICATION_NAME) -> bytes | None:
        assert backup.path is not None
        try:
            return (backup.path / name).read_bytes()
        except FileNotFoundError:
            return None

    # --- removing ------------------------------------------------------------------------------------

    def _remove(self, backup: Backup) -> None:
        assert backup.path is not None
        if backup.path.parent != self._path:
            raise RepoError(f"{backup.path} is not in the repository {self._path}; delete it by hand if you mean to")
        doomed = self._path / f"{DELETING_PREFIX}{backup.key}-{secrets.token_hex(3)}"
        try:
            os.rename(backup.path, doomed)
        except FileNotFoundError:
            raise BackupNotFoundError(backup.id, self.location) from None
        except OSError as exc:
            raise RepoError(f"cannot delete backup {backup.id} from {self._path}: {exc.strerror}") from None
        fsutil.fsync_dir(self._path)
        shutil.rmtree(doomed, ignore_errors=True)

    def leftovers(self) -> builtins.list[Leftover]:
        found: builtins.list[Leftover] = []
        try:
            entries = builtins.list(os.scandir(self._path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith(DELETING_PREFIX):
                found.append(Leftover(entry.name, "an interrupted delete", True, Path(entry.path)))
            elif entry.name.startswith(TEMP_PREFIX):
                alive = _writer_alive(Path(entry.path))
                found.append(Leftover(entry.name, "an interrupted write", not alive, Path(entry.path)))
        return sorted(found, key=lambda lo: lo.name)

    def _remove_leftover(self, leftover: Leftover) -> None:
        shutil.rmtree(leftover.handle, ignore_errors=True)


class FileSink(Sink):
    """A part's stored bytes in a file of the temp directory, fsynced on close."""

    def __init__(self, path: Path, hash_stored: bool) -> None:
        self._path = path
        self._fd: int | None = fsutil.open_private_file(path)
        self._hash = hashlib.sha256() if hash_stored else None
        self.size = 0
        self._written_back = 0  # bytes whose writeback to disk was started (see fsutil.start_writeback)

    @property
    def local_path(self) -> Path:
        return self._path

    def write(self, data: memoryview) -> None:
        if self._fd is None:
            raise RepoError(f"{self._path} is closed")
        view = data
        while view:
            written = os.write(self._fd, view)
            if self._hash is not None:
                self._hash.update(view[:written])
            self.size += written
            view = view[written:]
        if self.size - self._written_back >= WRITEBACK_STEP:
            fsutil.start_writeback(self._fd, self._written_back, self.size - self._written_back)
            self._written_back = self.size

    def close(self) -> str | None:
        if self._fd is not None:
            os.fsync(self._fd)  # some file systems only report a full disk when the data is flushed
            os.close(self._fd)
            self._fd = None
        return self._hash.hexdigest() if self._hash is not None else None

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalStaging(Staging):
    def __init__(self, repo: Path, backup_id: str, exact: bool) -> None:
        self.repo = repo
        self.id = ids.check_id(backup_id)  # the last guard: the directory written is repo / ID
        self.location = str(repo)
        self._exact = exact
        self.temp_path = repo / f"{TEMP_PREFIX}{backup_id}-{os.getpid()}"
        self._sinks: builtins.list[FileSink] = []
        try:
            fsutil.make_private_dir(self.temp_path)
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "id": backup_id}
            fsutil.write_private_file(self.temp_path / OWNER_FILE, json.dumps(owner).encode())
        except OSError as exc:
            shutil.rmtree(self.temp_path, ignore_errors=True)
            raise _unwritable(repo, exc) from None

    def open_sink(self, file: str, *, hash_stored: bool, size_hint: int | None) -> Sink:
        assert self.temp_path is not None
        sink = FileSink(self.temp_path / file, hash_stored)
        self._sinks.append(sink)
        return sink

    def commit(self, manifest_for: Callable[[str], Manifest]) -> Manifest:
        assert self.temp_path is not None
        os.unlink(self.temp_path / OWNER_FILE)
        manifest_path = self.temp_path / MANIFEST_NAME
        backup_id = self.id
        while True:
            manifest = manifest_for(backup_id)
            fsutil.write_private_file(manifest_path, manifest.to_json().encode())
            fsutil.fsync_dir(self.temp_path)
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
            if self._exact:
                raise StaleWriterError(f"backup {backup_id} appeared in {self.repo} while it was being copied there")
            os.unlink(manifest_path)
            backup_id = ids.with_suffix(self.id)
        fsutil.fsync_dir(self.repo)
        self.id = backup_id
        self.temp_path = None
        return manifest

    def abort(self) -> None:
        for sink in self._sinks:
            sink.abort()
        if self.temp_path is not None:
            shutil.rmtree(self.temp_path, ignore_errors=True)


class _FailingReader:
    def __init__(self, exc: OSError) -> None:
        self._exc = exc

    def readinto(self, buffer: Any) -> int:
        raise self._exc

    def close(self) -> None:
        pass


def _writer_alive(temp_dir: Path) -> bool:
    try:
        owner = json.loads((temp_dir / OWNER_FILE).read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        # No owner record: either being committed right now or damaged; judge by age.
        return _younger_than(temp_dir, 3600)
    if host != socket.gethostname():
        return _younger_than(temp_dir, FOREIGN_TEMP_MAX_AGE)
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _younger_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError as exc:
        return exc.errno != errno.ENOENT


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _unwritable(path: Path, exc: OSError) -> RepoError:
    """The clear error for a repository that cannot take a backup (never "unexpected OSError")."""
    hint = "Choose a writable directory with --repo or KUBECTL_DR_REPO."
    if exc.errno == errno.EROFS:
        return RepoError(f"the backup repository {path} is on a read-only file system", hint=hint)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return RepoError(f"the backup repository {path} is not writable: permission denied", hint=hint)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return RepoError(f"the backup repository {path} is not a directory (a file is in the way)", hint=hint)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepoError(f"no space left on the device holding {path}",
                         hint="Free some space (kubectl dr backups prune --keep-last N) or choose another repository "
                         "with --repo or KUBECTL_DR_REPO.")
    return RepoError(f"the backup repository {path} cannot be written: {exc.strerror or exc}", hint=hint)


def _looks_like_path(ref: str) -> bool:
    return os.sep in ref or ref.startswith(("~", "."))
