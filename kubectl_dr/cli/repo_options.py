"""The repository options every command that reads or writes backups shares, and the one way to open it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from kubectl_dr.repo import Repository, open_repository
from kubectl_dr.repo.ref import RepoRef

if TYPE_CHECKING:
    from kubectl_dr.repo.restic.repository import Repository as ResticRepository

REPO_HELP = (
    "Backup repository: a directory, s3://BUCKET/PREFIX, azure://CONTAINER/PREFIX, or restic:REPO (a restic "
    "repository, REPO as restic -r takes it: a path, s3:https://HOST/BUCKET/PREFIX, azure:CONTAINER:/PREFIX or "
    "rest:https://USER:PASSWORD@HOST:PORT/PATH/). Defaults to "
    "$KUBECTL_DR_REPO, else the config file's repository, else $XDG_DATA_HOME/kubectl-dr/backups "
    "(~/.local/share/kubectl-dr/backups)."
)
# For the commands that read or write only kubectl-dr's own repositories (no restic:REPO).
PLAIN_REPO_HELP = (
    "Backup repository: a directory, s3://BUCKET/PREFIX or azure://CONTAINER/PREFIX (not a restic repository). "
    "Defaults to $KUBECTL_DR_REPO, else the config file's repository, else $XDG_DATA_HOME/kubectl-dr/backups "
    "(~/.local/share/kubectl-dr/backups)."
)
_PANEL = "Repository"

RepoOption = Annotated[str | None, typer.Option("--repo", help=REPO_HELP, metavar="PATH|s3://…|azure://…",
                                                rich_help_panel=_PANEL)]
PlainRepoOption = Annotated[str | None, typer.Option("--repo", help=PLAIN_REPO_HELP, metavar="PATH|s3://…|azure://…",
                                                     rich_help_panel=_PANEL)]
S3EndpointOption = Annotated[str | None, typer.Option(
    "--s3-endpoint", metavar="URL", rich_help_panel=_PANEL,
    help="S3 endpoint of a non-AWS server (MinIO, Ceph RGW, SeaweedFS…), addressed path-style. Defaults to "
         "$AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, then s3.endpoint in the config file. Credentials and region "
         "come from the standard AWS chain (AWS_ACCESS_KEY_ID…, AWS_PROFILE, ~/.aws).")]
S3CaBundleOption = Annotated[str | None, typer.Option(
    "--s3-ca-bundle", metavar="FILE", rich_help_panel=_PANEL,
    help="CA certificates (PEM) to trust for the S3 endpoint. Defaults to $AWS_CA_BUNDLE, then s3.caBundle.")]
AzureEndpointOption = Annotated[str | None, typer.Option(
    "--azure-endpoint", metavar="URL", rich_help_panel=_PANEL,
    help="Blob service URL of the Azure storage account, for Azurite (http://127.0.0.1:10000/devstoreaccount1) "
         "or a sovereign cloud. Defaults to azure.endpoint in the config file, the connection string's "
         "BlobEndpoint, then https://ACCOUNT.blob.core.windows.net. Account and credentials come from "
         "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or "
         "AZURE_STORAGE_SAS_TOKEN, or the config file's azure section. For restic:azure:CONTAINER:/PREFIX, restic's "
         "own AZURE_ACCOUNT_NAME with AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS (and AZURE_ENDPOINT_SUFFIX) win when "
         "set; this flag wins over the suffix.")]
EncryptToOption = Annotated[list[str] | None, typer.Option(
    "--encrypt-to", metavar="RECIPIENT", rich_help_panel=_PANEL,
    help="Encrypt the backup with age to this public key: age1…, 'ssh-ed25519 AAAA…', 'ssh-rsa AAAA…', or a file "
         "of them (one a line). Repeat for several; any one of their private keys opens it. Defaults to "
         "encryption.recipients in the config file.")]
IdentityOption = Annotated[list[str] | None, typer.Option(
    "--identity", "-i", metavar="FILE", rich_help_panel=_PANEL,
    help="Private key to open encrypted backups: an age identity file (age-keygen) or an unencrypted OpenSSH "
         "private key. Repeatable. Defaults to encryption.identities in the config file.")]

PasswordFileOption = Annotated[str | None, typer.Option(
    "--password-file", metavar="FILE", rich_help_panel=_PANEL,
    help="File holding the password of a restic:REPO repository. Defaults to $RESTIC_PASSWORD_FILE; else the "
         "password is $RESTIC_PASSWORD_COMMAND's output, else $RESTIC_PASSWORD (a file and a command together are "
         "refused, as restic refuses them).")]


def open_restic(repo: str, *, password_file: str | None, s3_endpoint: str | None = None,
                s3_ca_bundle: str | None = None, azure_endpoint: str | None = None,
                create: Callable[[str], bool] | None = None) -> ResticRepository:
    """The restic repository of --repo restic:REPO; `create` decides on `init` when it does not exist."""
    return RepoRef(repo, s3_endpoint=s3_endpoint, s3_ca_bundle=s3_ca_bundle, azure_endpoint=azure_endpoint,
                   password_file=password_file).open_restic(create)


def open_repo(repo: str | None, *, s3_endpoint: str | None = None, s3_ca_bundle: str | None = None,
              azure_endpoint: str | None = None, encrypt_to: list[str] | None = None,
              identity: list[str] | None = None) -> Repository:
    """The repository named by --repo, $KUBECTL_DR_REPO, the config file or the XDG default."""
    return open_repository(repo, os.environ, s3_endpoint=s3_endpoint, s3_ca_bundle=s3_ca_bundle,
                           azure_endpoint=azure_endpoint,
                           recipients=encrypt_to, identity_files=identity)
