"""`--from ID|latest|FILE` → one local snapshot file, verified, with the etcd version it came from.

The only place the restore reads the backup repository: when the repository layer changes (off-site
stores, encryption), this function is the one to re-point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_dr.console import Console
from kubectl_dr.etcd.snapshot import BACKUP_TYPE, PART_NAME
from kubectl_dr.etcd.snapshot_file import SnapshotStatus, verify_snapshot
from kubectl_dr.repo import Repository
from kubectl_dr.repo.staging import local_parts


@dataclass(frozen=True)
class LocalSnapshot:
    path: Path
    status: SnapshotStatus
    version: str | None  # major.minor.patch of the etcd that wrote it, when known
    backup_id: str | None  # None for a plain file
    runbook_dir: Path  # where the break-glass runbook is written beside it
    details: dict[str, Any]

    @property
    def minor(self) -> str | None:
        return minor_of(self.version)

    def describe(self) -> str:
        return f"backup {self.backup_id}" if self.backup_id else f"file {self.path}"


def minor_of(version: str | None) -> str | None:
    if not version:
        return None
    parts = version.lstrip("v").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else None


def local_snapshot(ref: str, repo: Repository, console: Console, *, record: bool = True) -> LocalSnapshot:
    """Resolve and verify: a path to an existing file is a plain snapshot file, anything else a backup.

    A backup in S3 or an encrypted one is staged here first (repo.staging), checked on the way; the
    runbook of such a backup is written to the current directory, the one place here the user sees.
    `record=False` (a dry run) checks the backup without writing the verification record beside it.
    """
    if os.path.isfile(ref):
        path = Path(ref).absolute()
        status = verify_snapshot(path)
        return LocalSnapshot(path, status, status.cluster_version, None, path.parent, {})
    backup = repo.resolve(ref, type=BACKUP_TYPE)
    parts = local_parts(repo, backup, [PART_NAME], console)
    if not parts.staged:
        repo.verify(backup, record=record)
    path = parts.files[PART_NAME]
    status = verify_snapshot(path)
    details = dict(backup.manifest.details)
    recorded = details.get("etcdVersion") or (details.get("member") or {}).get("version")
    # The member's own version (what the snapshot pod read) beats the db's cluster version "3.5.0".
    return LocalSnapshot(path, status, str(recorded) if recorded else status.cluster_version, backup.id,
                         backup.path or Path.cwd(), details)
