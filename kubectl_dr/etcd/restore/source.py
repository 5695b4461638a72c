"""`--from ID|latest|FILE` → one local snapshot file, verified, with the etcd version it came from.

The only place the restore reads the backup repository: when the repository layer changes (off-site
stores, encryption), this function is the one to re-point.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubectl_dr import cleanup
from kubectl_dr.clusters import ClusterIdentity, origin_note
from kubectl_dr.console import Console
from kubectl_dr.errors import VerificationError
from kubectl_dr.etcd.snapshot import BACKUP_TYPE, PART_NAME
from kubectl_dr.etcd.snapshot_file import SnapshotStatus, verify_snapshot
from kubectl_dr.repo import Repository
from kubectl_dr.repo.choice import choose
from kubectl_dr.repo.staging import local_parts

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository

# What etcd reports as its version ("3.5.16", "v3.4.23", "3.6.0-rc.1"): nothing else is taken from a manifest.
VERSION = re.compile(r"v?[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,6})?(-[A-Za-z0-9.]{1,32})?")


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


def local_snapshot(ref: str, repo: Repository, console: Console, *, current: ClusterIdentity | None = None,
                   unknown_why: str = "", from_cluster: str | None = None,
                   from_other_cluster: bool = False, record: bool = True) -> LocalSnapshot:
    """Resolve and verify: a path to an existing file is a plain snapshot file, anything else a backup.

    ``latest`` is the newest snapshot of ``current`` (or of ``from_cluster``); a snapshot of another cluster
    is refused, naming both, unless ``from_other_cluster``.

    A backup in S3 or an encrypted one is staged here first (repo.staging), checked on the way; the
    runbook of such a backup is written to the current directory, the one place here the user sees.
    `record=False` (a dry run) checks the backup without writing the verification record beside it.
    """
    if os.path.isfile(ref):
        path = Path(ref).absolute()
        status = verify_snapshot(path)
        return LocalSnapshot(path, status, status.cluster_version, None, path.parent, {})
    backup, origin = choose(repo, ref, BACKUP_TYPE, current=current, what="etcd restore", from_cluster=from_cluster,
                            from_other_cluster=from_other_cluster, unknown_why=unknown_why)
    if origin:
        console.say(f"note: {origin}")
    parts = local_parts(repo, backup, [PART_NAME], console)
    if not parts.staged:
        repo.verify(backup, record=record)
    path = parts.files[PART_NAME]
    status = verify_snapshot(path)
    details = dict(backup.manifest.details)
    recorded = details.get("etcdVersion") or (details.get("member") or {}).get("version")
    if recorded and not VERSION.fullmatch(str(recorded)):
        # The manifest is repository content, and this text ends up in the runbook's shell commands.
        console.say(f"note: backup {backup.id} records etcd version {str(recorded)[:40]!r}, which is not a version: "
                    "the snapshot's own cluster version is used")
        recorded = None
    # The member's own version (what the snapshot pod read) beats the db's cluster version "3.5.0".
    return LocalSnapshot(path, status, str(recorded) if recorded else status.cluster_version, backup.id,
                         backup.path or Path.cwd(), details)



def restic_snapshot(ref: str, restic: ResticRepository, console: Console, *, current: ClusterIdentity | None = None,
                    unknown_why: str = "", from_cluster: str | None = None,
                    from_other_cluster: bool = False) -> LocalSnapshot:
    """`--from ID|latest --repo restic:REPO`: a one-file snapshot (ours, or restic's `backup --stdin`), copied
    into a private directory here with every blob checked, its SHA-256 against its `sha256=` tag, then read
    as an etcd snapshot. `latest` is the newest `kind=etcd-snapshot` snapshot tagged with this cluster."""
    from kubectl_dr.repo.restic import choice, singlefile

    snap, recorded = choice.choose(restic, ref, BACKUP_TYPE, what="etcd snapshot",
                                   take="kubectl dr etcd snapshot --repo restic:REPO", restore="etcd restore",
                                   current=current, unknown_why=unknown_why, from_cluster=from_cluster,
                                   from_other_cluster=from_other_cluster)
    if recorded is None:
        note: str | None = f"restic snapshot {snap.short_id} names no cluster (it has no cluster= tag)"
    else:
        note = origin_note(snap.short_id, recorded, current) if current is not None else None
    if note:
        console.say(f"note: {note}")
    directory = Path(tempfile.mkdtemp(prefix=f"kubectl-dr-{snap.short_id}-"))  # 0700: every Secret of a cluster
    cleanup.current().push(f"remove the staged copy of restic snapshot {snap.short_id} in {directory}",
                           lambda: shutil.rmtree(directory, ignore_errors=True))
    path = directory / PART_NAME
    console.say(f"reading and checking restic snapshot {snap.short_id} from {restic.backend.describe()} "
                f"into {directory}")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        size, sha256 = singlefile.write_to(restic, snap, out)
    status = verify_snapshot(path)
    if (status.file_size, status.sha256) != (size, sha256):
        raise VerificationError(f"restic snapshot {snap.short_id} changed on disk here after it was checked")
    recorded_version = snap.tag_value("etcd")
    version = recorded_version if recorded_version and VERSION.fullmatch(recorded_version) else None
    details = {"resticSnapshot": snap.id, "tags": list(snap.tags), "hostname": snap.hostname}
    return LocalSnapshot(path, status, version or status.cluster_version, snap.short_id, Path.cwd(), details)
