"""The backup repository: where backups are written atomically, listed, resolved, verified, copied and pruned.

``open_repository(ref, env)`` opens a local directory or an ``s3://BUCKET/PREFIX`` URL; both kinds are
a `Repository` with the same interface (create → BackupWriter → PartWriter, resolve, verify,
open_part, local_file, delete, prune, preflight).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from kubectl_dr.repo.config import Config, load_config
from kubectl_dr.repo.crypto import Identity, Recipient, load_identities, parse_recipients
from kubectl_dr.repo.errors import (
    AmbiguousBackupError,
    BackupCorruptError,
    BackupNotFoundError,
    DiskFullError,
    EncryptedBackupError,
    ManifestError,
    RepoError,
    WriterStateError,
    WrongBackupTypeError,
)
from kubectl_dr.repo.local import LocalRepository
from kubectl_dr.repo.location import ENV_VAR, is_s3, resolve_repo_path, resolve_repo_ref
from kubectl_dr.repo.manifest import API_VERSION, Manifest, Part, Stored
from kubectl_dr.repo.repository import LATEST, Backup, Leftover, PruneResult, Repository, utcnow
from kubectl_dr.repo.retention import Policy, series_key
from kubectl_dr.repo.writer import BackupWriter, PartWriter


def open_repository(
    ref: str | None,
    env: Mapping[str, str],
    *,
    s3_endpoint: str | None = None,
    s3_ca_bundle: str | None = None,
    recipients: Sequence[str] | None = None,
    identity_files: Sequence[str] | None = None,
    config: Config | None = None,
    clock: Callable[[], datetime] = utcnow,
    option: str = "--repo",
) -> Repository:
    """The repository named by ``ref`` (--repo), else $KUBECTL_DR_REPO, the config file, the XDG default.

    ``recipients`` (--encrypt-to) and ``identity_files`` (--identity) replace the config file's
    defaults when given; the repository encrypts new backups to its recipients and reads with its
    identities unless a call passes others.
    """
    cfg = config if config is not None else load_config(env)
    where = resolve_repo_ref(ref, env, cfg.repository, option=option)
    keys = parse_recipients(recipients if recipients else cfg.recipients,
                            "--encrypt-to" if recipients else f"encryption.recipients in {cfg.path}")
    identities = load_identities(identity_files if identity_files else cfg.identities)
    if is_s3(where):
        from kubectl_dr.repo.s3 import S3Repository
        from kubectl_dr.repo.s3client import S3Settings, parse_s3_url

        settings = S3Settings.resolve(endpoint=s3_endpoint, ca_bundle=s3_ca_bundle, config=cfg.s3, env=env)
        return S3Repository(parse_s3_url(where), settings, clock=clock, recipients=keys, identities=identities)
    return LocalRepository(Path(where), clock=clock, recipients=keys, identities=identities)


__all__ = [
    "API_VERSION",
    "ENV_VAR",
    "LATEST",
    "AmbiguousBackupError",
    "Backup",
    "BackupCorruptError",
    "BackupNotFoundError",
    "BackupWriter",
    "Config",
    "DiskFullError",
    "EncryptedBackupError",
    "Identity",
    "Leftover",
    "LocalRepository",
    "Manifest",
    "ManifestError",
    "Part",
    "PartWriter",
    "Policy",
    "PruneResult",
    "Recipient",
    "RepoError",
    "Repository",
    "Stored",
    "WriterStateError",
    "WrongBackupTypeError",
    "load_config",
    "load_identities",
    "open_repository",
    "parse_recipients",
    "resolve_repo_path",
    "resolve_repo_ref",
    "series_key",
]
