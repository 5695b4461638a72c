"""A repository as the command line names it: the strings of --repo and its companion flags, opened by the job.

The CLI parses; the job that writes or reads the repository opens it, when and as it needs it (a dry run of a
restic repository opens nothing, a snapshot opens its restic repository once the members are known). Both kinds
are named here: a kubectl-dr repository (a directory, s3://, azure://) and restic:REPO.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubectl_dr.repo import Repository, open_repository

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository


@dataclass(frozen=True)
class RepoRef:
    """--repo and the flags that say how to reach and encrypt it, as given (None: the defaults)."""

    repo: str | None = None
    s3_endpoint: str | None = None
    s3_ca_bundle: str | None = None
    azure_endpoint: str | None = None
    encrypt_to: tuple[str, ...] | None = None
    identity: tuple[str, ...] | None = None
    password_file: str | None = None  # restic:REPO only

    @property
    def is_restic(self) -> bool:
        from kubectl_dr.repo.restic.location import is_restic

        return is_restic(self.repo)

    def open(self) -> Repository:
        """The repository named by --repo, $KUBECTL_DR_REPO, the config file or the XDG default."""
        return open_repository(self.repo, os.environ, s3_endpoint=self.s3_endpoint, s3_ca_bundle=self.s3_ca_bundle,
                               azure_endpoint=self.azure_endpoint, recipients=self.encrypt_to,
                               identity_files=self.identity)

    def restic_where(self) -> str:
        """restic:REPO as a plan names it (checked, a password in it hidden), opening nothing."""
        from kubectl_dr.repo.restic.location import backend_for, shown

        assert self.repo is not None
        return shown(backend_for(self.repo, env=os.environ).describe())

    def open_restic(self, create: Callable[[str], bool] | None = None) -> ResticRepository:
        """The restic repository of --repo restic:REPO; `create` decides on `init` when it does not exist."""
        assert self.repo is not None
        return open_restic(self.repo, password_file=self.password_file, s3_endpoint=self.s3_endpoint,
                           s3_ca_bundle=self.s3_ca_bundle, azure_endpoint=self.azure_endpoint, create=create)


def open_restic(repo: str, *, password_file: str | None, s3_endpoint: str | None = None,
                s3_ca_bundle: str | None = None, azure_endpoint: str | None = None,
                create: Callable[[str], bool] | None = None) -> ResticRepository:
    """The restic repository of --repo restic:REPO; `create` decides on `init` when it does not exist."""
    from kubectl_dr.repo.config import load_config
    from kubectl_dr.repo.restic.azurebackend import settings_for
    from kubectl_dr.repo.restic.location import open_repository as open_restic_repository
    from kubectl_dr.repo.s3client import S3Settings

    s3 = S3Settings.resolve(endpoint=s3_endpoint, ca_bundle=s3_ca_bundle, config={}, env=os.environ)
    # The config file's azure: section (account, endpoint, key and SAS files) applies as it does to azure://
    # repositories: restic's string names the container only.
    azure = None
    if repo.removeprefix("restic:").startswith("azure:"):
        azure = settings_for(os.environ, azure_endpoint, load_config(os.environ).azure)
    return open_restic_repository(repo, os.environ, password_file=password_file, s3=s3, azure=azure,
                                  create=create)
