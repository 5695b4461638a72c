"""The local backup repository: one directory per backup, each with ``manifest.json`` and its parts."""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kubectl_dr.repo import fsutil, ids
from kubectl_dr.repo.errors import (
    AmbiguousBackupError,
    BackupCorruptError,
    BackupNotFoundError,
    ManifestError,
    RepoError,
    WrongBackupTypeError,
)
from kubectl_dr.repo.manifest import MANIFEST_NAME, TYPE_PATTERN, Manifest
from kubectl_dr.repo.writer import OWNER_FILE, TEMP_PREFIX, BackupWriter

DELETING_PREFIX = ".deleting-"
LATEST = "latest"
# A temp dir from another host cannot be checked for a live writer; after this long it is abandoned.
FOREIGN_TEMP_MAX_AGE = 24 * 3600
_CHUNK = 1 << 20

# Source keys that say *how* a backup was taken, not *what* it is of: two etcd snapshots of one
# cluster taken from different members belong to the same series for retention.
VOLATILE_SOURCE_KEYS = frozenset({"node", "member", "endpoint", "context", "user", "pod"})


@dataclass(frozen=True)
class Backup:
    manifest: Manifest
    path: Path

    @property
    def id(self) -> str:
        return self.manifest.id

    def part_path(self, name: str) -> Path:
        self.manifest.part(name)  # KeyError for a part the manifest does not list
        return self.path / name


@dataclass(frozen=True)
class PruneResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    stale_temp_dirs: list[str] = field(default_factory=list)  # names of abandoned partial writes


def series_key(manifest: Manifest) -> str:
    """What retention groups by: the type and the stable part of the source."""
    stable = {k: v for k, v in manifest.source.items() if k not in VOLATILE_SOURCE_KEYS}
    return json.dumps([manifest.type, stable], sort_keys=True, default=str)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Repository:
    def __init__(self, path: Path, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path)
        self._clock = clock

    # --- writing -------------------------------------------------------------------------------------

    def create(self, type: str, source: dict[str, Any], name_hint: str | None = None) -> BackupWriter:
        """Start a backup; stream parts into ``open_part()`` and finish with ``commit()``."""
        if not TYPE_PATTERN.match(type):
            raise RepoError(f"invalid backup type {type!r}")
        fsutil.make_private_dir(self.path)
        now = self._clock()
        backup_id = ids.base_id(now, type, name_hint)
        while (self.path / backup_id).exists() or any(self.path.glob(f"{TEMP_PREFIX}{backup_id}-*")):
            backup_id = ids.with_suffix(ids.base_id(now, type, name_hint))
        return BackupWriter(self.path, backup_id, type, source, now, self._clock)

    # --- reading -------------------------------------------------------------------------------------

    def scan(self) -> tuple[list[Backup], list[tuple[Path, str]]]:
        """Every complete backup, newest first, and the directories that could not be read as one."""
        backups: list[Backup] = []
        problems: list[tuple[Path, str]] = []
        try:
            entries = sorted(os.scandir(self.path), key=lambda e: e.name)
        except FileNotFoundError:
            return [], []
        except NotADirectoryError as exc:
            raise RepoError(f"the backup repository {self.path} is not a directory") from exc
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue  # temp dirs of unfinished writes, deletions in progress, stray files
            try:
                backups.append(Backup(Manifest.load(Path(entry.path)), Path(entry.path)))
            except ManifestError as exc:
                problems.append((Path(entry.path), exc.message))
        backups.sort(key=lambda b: (b.manifest.created_at, b.manifest.id), reverse=True)
        return backups, problems

    def backups(self, type: str | None = None, source_match: dict[str, Any] | None = None) -> list[Backup]:
        return [b for b in self.scan()[0] if b.manifest.matches(type, source_match)]

    def list(self, type: str | None = None, source_match: dict[str, Any] | None = None) -> list[Manifest]:
        """Manifests of the complete backups, newest first."""
        return [b.manifest for b in self.backups(type, source_match)]

    def get(self, backup_id: str) -> Backup:
        if not _is_plain_name(backup_id):
            raise BackupNotFoundError(backup_id, self.path)
        path = self.path / backup_id
        if not (path / MANIFEST_NAME).is_file():
            raise BackupNotFoundError(backup_id, self.path)
        manifest = Manifest.load(path)
        if manifest.id != backup_id:
            raise ManifestError(f"{path}: the manifest says it is backup {manifest.id!r}; it was moved or renamed")
        return Backup(manifest, path)

    def resolve(self, ref: str, type: str | None = None, source_match: dict[str, Any] | None = None) -> Backup:
        """A backup from an ID, a unique ID prefix, ``latest``, or the path of a backup directory.

        ``latest`` is the newest backup of ``type`` whose source contains ``source_match``; an ID or
        prefix must also be of ``type`` when it is given.
        """
        if _looks_like_path(ref):
            path = Path(ref).expanduser()
            if not path.is_dir():
                raise BackupNotFoundError(ref, self.path, what="backup directory")
            backup = Backup(Manifest.load(path), path.absolute())
        elif ref == LATEST:
            candidates = self.backups(type, source_match)
            if not candidates:
                what = f"{type} backup" if type else "backup"
                of = ", ".join(f"{k}={v}" for k, v in (source_match or {}).items())
                raise BackupNotFoundError(LATEST, self.path,
                                          message=f"there is no {what}{' of ' + of if of else ''} in {self.path}")
            return candidates[0]
        else:
            backup = self._by_id_or_prefix(ref, type)
        if type is not None and backup.manifest.type != type:
            raise WrongBackupTypeError(backup.id, backup.manifest.type, type)
        return backup

    def _by_id_or_prefix(self, ref: str, type: str | None) -> Backup:
        if _is_plain_name(ref) and (self.path / ref / MANIFEST_NAME).is_file():
            return self.get(ref)
        everything = self.scan()[0]
        matches = [b for b in everything if b.id.startswith(ref)] if ref else []
        if len(matches) > 1 and type is not None:
            # A prefix shared with backups of other types is still unique among the ones that fit.
            typed = [b for b in matches if b.manifest.type == type]
            matches = typed or matches
        if not matches:
            raise BackupNotFoundError(ref, self.path)
        if len(matches) > 1:
            raise AmbiguousBackupError(ref, self.path, [b.id for b in matches])
        return matches[0]

    # --- checking ------------------------------------------------------------------------------------

    def verify(self, ref: str | Backup, progress: Callable[[int], None] | None = None) -> Backup:
        """Recompute every part's size and SHA-256 and compare with the manifest; raise on a difference.

        `progress` is called with the number of bytes read each time: a large backup takes minutes.
        """
        backup = ref if isinstance(ref, Backup) else self.resolve(ref)
        for part in backup.manifest.parts:
            path = backup.path / part.name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise BackupCorruptError(backup.id, part.name, "is missing") from None
            if size != part.size:
                how = "truncated" if size < part.size else "longer than recorded"
                raise BackupCorruptError(
                    backup.id, part.name, f"is {size} bytes but the manifest says {part.size}: it is {how}"
                )
            try:
                digest = _sha256_file(path, progress)
            except OSError as exc:  # a failing disk (EIO), or something that is not a file
                raise BackupCorruptError(backup.id, part.name, f"cannot be read: {exc.strerror}") from None
            if digest != part.sha256:
                raise BackupCorruptError(
                    backup.id, part.name, f"has SHA-256 {digest} but the manifest says {part.sha256}"
                )
        return backup

    # --- removing ------------------------------------------------------------------------------------

    def delete(self, backup_id: str) -> Manifest:
        """Remove one backup, given by its exact ID. It disappears from listings at once."""
        backup = self.get(backup_id)
        doomed = self.path / f"{DELETING_PREFIX}{backup_id}-{secrets.token_hex(3)}"
        os.rename(backup.path, doomed)
        fsutil.fsync_dir(self.path)
        shutil.rmtree(doomed, ignore_errors=True)
        return backup.manifest

    def prune(
        self,
        keep_last: int,
        type: str | None = None,
        source_match: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Keep the newest ``keep_last`` backups of each series (type + stable source), remove the rest.

        Also removes abandoned temp directories of writers that died (unless ``dry_run``).
        """
        if keep_last < 0:
            raise RepoError(f"--keep-last must be 0 or more, not {keep_last}")
        result = PruneResult()
        seen: dict[str, int] = {}
        for backup in self.backups(type, source_match):
            key = series_key(backup.manifest)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= keep_last:
                result.kept.append(backup.id)
            else:
                result.removed.append(backup.id)
        for name in self.stale_temp_dirs():
            result.stale_temp_dirs.append(name)
        if not dry_run:
            for backup_id in result.removed:
                self.delete(backup_id)
            for name in result.stale_temp_dirs:
                shutil.rmtree(self.path / name, ignore_errors=True)
        return result

    def stale_temp_dirs(self) -> builtins.list[str]:
        """Hidden directories left by writers that no longer run, and deletions that were cut short."""
        stale: builtins.list[str] = []
        try:
            entries = builtins.list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith(DELETING_PREFIX) or (
                entry.name.startswith(TEMP_PREFIX) and not _writer_alive(Path(entry.path))
            ):
                stale.append(entry.name)
        return sorted(stale)


def _writer_alive(temp_dir: Path) -> bool:
    try:
        owner = json.loads((temp_dir / OWNER_FILE).read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        # No owner record: either being committed right now or damaged; judge by age.
        return _younger_than(temp_dir, 3600)
    if host != socket.gethostname():
        return _younger_than(temp_dir, FOREIGN_TEMP_MAX_AGE)
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


def _sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def _is_plain_name(ref: str) -> bool:
    return bool(ref) and "/" not in ref and ref not in (".", "..") and not ref.startswith(".")


def _looks_like_path(ref: str) -> bool:
    return os.sep in ref or ref.startswith(("~", "."))
