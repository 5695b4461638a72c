"""The backup repository: where backups are written atomically, listed, resolved, verified and pruned."""

from kubectl_dr.repo.errors import (
    AmbiguousBackupError,
    BackupCorruptError,
    BackupNotFoundError,
    DiskFullError,
    ManifestError,
    RepoError,
    WriterStateError,
    WrongBackupTypeError,
)
from kubectl_dr.repo.location import ENV_VAR, resolve_repo_path
from kubectl_dr.repo.manifest import API_VERSION, Manifest, Part
from kubectl_dr.repo.repository import LATEST, Backup, PruneResult, Repository
from kubectl_dr.repo.writer import BackupWriter, PartWriter

__all__ = [
    "API_VERSION",
    "ENV_VAR",
    "LATEST",
    "AmbiguousBackupError",
    "Backup",
    "BackupCorruptError",
    "BackupNotFoundError",
    "BackupWriter",
    "DiskFullError",
    "Manifest",
    "ManifestError",
    "Part",
    "PartWriter",
    "PruneResult",
    "RepoError",
    "Repository",
    "WriterStateError",
    "WrongBackupTypeError",
    "resolve_repo_path",
]
