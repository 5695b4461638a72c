"""A volume backup of the plain repository kind read on this machine: `ls -l` of a directory, one file.

The backup's parts are checked before anything is shown: staged copies (S3, encrypted) are checked on
the way in; a local archive is hashed against its manifest first, so `backups cat` never writes bytes
of an archive that differs from the one the backup recorded. The archive is a tar of the volume;
the entry record (the pod's listing) is what `ls` shows, the tar headers when a backup has none.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubectl_dr.console import Console
from kubectl_dr.errors import DrError
from kubectl_dr.repo import Backup, BackupCorruptError, Repository
from kubectl_dr.repo.crypto import Identity
from kubectl_dr.repo.staging import local_parts
from kubectl_dr.volumes.entries import DIR, FILE, HARDLINK, PART, Entries, Entry
from kubectl_dr.volumes.source import ARCHIVE_PART, TYPE, check_record, from_headers, read_entries
from kubectl_dr.volumes.tar_reader import read_archive

_BLOCK = 1 << 20


@dataclass
class Browsed:
    backup: Backup
    archive: Path
    entries: Entries


def open_backup(repo: Repository, ref: str, console: Console,
                identity: Sequence[Identity] | None = None) -> Browsed:
    backup = repo.resolve(ref, TYPE)
    parts = local_parts(repo, backup, [ARCHIVE_PART, PART], console, identity)
    path = parts.files[ARCHIVE_PART]
    if not parts.staged:
        _check(backup, path)
    archive = read_archive(path, gnu_sparse=True, allow_empty=True)
    entries = read_entries(backup, parts.files.get(PART) if parts.staged else None)
    if entries is None:
        entries = from_headers(archive)
    else:
        check_record(backup.id, archive, entries)
    return Browsed(backup, path, entries)


def _check(backup: Backup, path: Path) -> None:
    part = backup.manifest.part(ARCHIVE_PART)
    digest, total = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            digest.update(chunk)
            total += len(chunk)
    if (total, digest.hexdigest()) != (part.size, part.sha256):
        raise BackupCorruptError(backup.id, ARCHIVE_PART, f"is {total} bytes with SHA-256 {digest.hexdigest()}, the "
                                                          f"manifest says {part.size} bytes with SHA-256 {part.sha256}")


def _norm(path: str) -> str:
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def find(browsed: Browsed, path: str) -> Entry:
    entry = browsed.entries.items.get(_norm(path))
    if entry is None:
        raise DrError(f"{path!r} is not in backup {browsed.backup.id}",
                      hint=f"List it: kubectl dr backups ls {browsed.backup.id} [DIR]")
    return entry


def list_dir(browsed: Browsed, path: str) -> list[Entry]:
    """One level under a directory (a file lists itself), in name order."""
    entry = find(browsed, path)
    if entry.kind != DIR:
        return [entry]
    prefix = f"{entry.path}/" if entry.path else ""
    return sorted((e for e in browsed.entries.items.values()
                   if e.path and e.path.startswith(prefix) and "/" not in e.path[len(prefix):]),
                  key=lambda e: e.path)


def file_bytes(browsed: Browsed, path: str) -> Iterator[bytes]:
    """A file's content from the archive (a hard link's from the file it shares its inode with)."""
    entry = find(browsed, path)
    if entry.kind not in (FILE, HARDLINK):
        raise DrError(f"{path!r} in backup {browsed.backup.id} is a {entry.kind}, not a file")
    with tarfile.open(browsed.archive, "r:") as tar:
        for member in tar:
            if _norm(member.name) == entry.path:
                f = tar.extractfile(member)
                if f is None:
                    break
                total = 0
                while chunk := f.read(_BLOCK):
                    total += len(chunk)
                    yield chunk
                if entry.kind == FILE and total != entry.size:
                    raise BackupCorruptError(browsed.backup.id, ARCHIVE_PART,
                                             f"holds {total} bytes of {path!r}, its record says {entry.size}")
                return
    raise BackupCorruptError(browsed.backup.id, ARCHIVE_PART, f"has no member {path!r} its record names")
