"""A restic repository in Azure Blob Storage, named as restic names it: `azure:CONTAINER:/PREFIX`.

Blobs are restic's default layout under the prefix (`PREFIX/config`, `PREFIX/data/ab/ab…`), so the
container holds exactly what `restic -r azure:CONTAINER:/PREFIX` reads. The client, its retries and its
errors in plain words are the project's Azure client (the one of `azure://` repositories).

Credentials: restic's own variables (AZURE_ACCOUNT_NAME with AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS,
AZURE_ENDPOINT_SUFFIX) win when any of them is set, so the environment that serves `restic -r` serves us;
otherwise the project's (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or
AZURE_STORAGE_SAS_TOKEN). The two sets are never mixed: an account from one and a key from the other would
be a credential nobody wrote down. `--azure-endpoint` names the blob service URL over either (Azurite's
path-style http://127.0.0.1:10000/devstoreaccount1, which restic itself cannot address).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from kubectl_dr.repo import azureclient
from kubectl_dr.repo.azureclient import AzureLocation, AzureSettings
from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.restic.backend import (
    CONFIG,
    Data,
    ResticBackendError,
    as_bytes,
    check_kind,
    check_length,
    listed_name,
    relative_path,
)

RESTIC_VARIABLES = ("AZURE_ACCOUNT_NAME", "AZURE_ACCOUNT_KEY", "AZURE_ACCOUNT_SAS", "AZURE_ENDPOINT_SUFFIX")
CREDENTIALS_HINT = ("Set restic's AZURE_ACCOUNT_NAME with AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS (these win), or "
                    "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or "
                    "AZURE_STORAGE_SAS_TOKEN; --azure-endpoint for Azurite or a sovereign cloud.")


def parse(ref: str) -> tuple[str, str]:
    """(container, prefix) of restic's `azure:CONTAINER:/PREFIX` string (restic cleans the path the same way)."""
    if not ref.startswith("azure:"):
        raise ResticBackendError(f"{ref!r} is not a restic azure: repository")
    container, colon, path = ref[len("azure:"):].partition(":")
    if not colon:
        raise ResticBackendError(f"{ref!r}: expected azure:CONTAINER:/PREFIX (restic's form, with a colon before "
                                 "the path)")
    raw = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in raw):
        raise ResticBackendError(f"{ref!r}: the path must not contain '.' or '..' components")
    # Azure's container rules, through the azure:// parser that already says them clearly.
    azureclient.parse_azure_url(f"{azureclient.SCHEME}{container}")
    prefix = posixpath.normpath("/" + "/".join(raw)).lstrip("/")
    return container, prefix


def settings_for(env: Mapping[str, str], endpoint: str | None = None,
                 config: Mapping[str, Any] | None = None) -> AzureSettings:
    """The account, credential and endpoint for a restic azure: repository (see the module's note)."""
    if not any(env.get(name) for name in RESTIC_VARIABLES):
        return AzureSettings.resolve(endpoint=endpoint, config=config or {}, env=env)
    account = env.get("AZURE_ACCOUNT_NAME") or None
    suffix = (env.get("AZURE_ENDPOINT_SUFFIX") or "").strip().strip("/")
    url = endpoint or (f"https://{account}.blob.{suffix}" if suffix and account else None)
    # The same checks of account name and endpoint as our own variables get, through the same code.
    checked = AzureSettings.resolve(endpoint=url, config={}, env={"AZURE_STORAGE_ACCOUNT": account} if account
                                    else {})
    key = env.get("AZURE_ACCOUNT_KEY") or None
    sas = (env.get("AZURE_ACCOUNT_SAS") or "").lstrip("?") or None
    return AzureSettings(account=checked.account, endpoint=checked.endpoint, key=key, sas_token=None if key else sas)


class AzureBackend:
    def __init__(self, ref: str, settings: AzureSettings, client: Any = None) -> None:
        self.container_name, self.prefix = parse(ref)
        self.ref = ref
        self.settings = settings
        # For messages: the container and prefix as our azure:// URL names them (never a credential).
        self.where = AzureLocation(self.container_name, self.prefix)
        self._client = client
        self.missing_hint = ""

    @property
    def client(self) -> Any:
        if self._client is None:
            if not self.settings.account and not self.settings.endpoint:
                raise RepoError(f"no Azure storage account for {self.ref}", hint=CREDENTIALS_HINT)
            if not self.settings.key and not self.settings.sas_token:
                raise RepoError(f"no Azure credentials for {self.ref}", hint=CREDENTIALS_HINT)
            self._client = azureclient.make_container_client(self.settings, self.where)
        return self._client

    def _key(self, kind: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, relative_path(kind, name)) if p)

    def _fail(self, exc: BaseException, doing: str) -> RepoError:
        error = azureclient.translate(exc, self.where, doing, self.settings)
        return RepoError(error.message.replace(self.where.url, self.ref),
                         hint=(error.hint or "").replace(azureclient.CREDENTIALS_HINT, CREDENTIALS_HINT) or None)

    def describe(self) -> str:
        return self.ref

    def exists(self) -> bool:
        try:
            self.client.get_blob_client(self._key(CONFIG, CONFIG)).get_blob_properties()
            return True
        except RepoError:
            raise
        except Exception as exc:
            if azureclient.error_code(exc) == "ContainerNotFound":
                self.missing_hint = (f"The container {self.container_name!r} does not exist at "
                                     f"{self.settings.shown}; check the name and --azure-endpoint.")
                return False
            if azureclient.is_not_found(exc):
                return False
            raise self._fail(exc, "looking for the repository's config") from exc

    def create(self) -> None:
        if self.exists():
            raise ResticBackendError(f"a restic repository already exists at {self.ref}")
        try:  # restic's init creates a missing container too
            self.client.create_container()
        except Exception as exc:
            if azureclient.error_code(exc) != "ContainerAlreadyExists":
                raise self._fail(exc, "creating the container") from exc

    def save(self, kind: str, name: str, data: Data) -> None:
        data = as_bytes(data)
        try:
            # validate_content: the blob goes with its MD5, which the service checks before it keeps it.
            self.client.get_blob_client(self._key(kind, name)).upload_blob(data, overwrite=True, validate_content=True)
        except Exception as exc:
            raise self._fail(exc, f"writing {kind}/{name[:8]}") from exc

    def load(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            blob = self.client.get_blob_client(self._key(kind, name))
            ranged: dict[str, int] = {"offset": offset, "length": length} if length is not None else (
                {"offset": offset} if offset else {})
            data: bytes = blob.download_blob(max_concurrency=1, **ranged).readall()
        except Exception as exc:
            if azureclient.is_not_found(exc):
                raise ResticBackendError(f"{kind}/{name} is missing from the restic repository {self.ref}") from exc
            raise self._fail(exc, f"reading {kind}/{name[:8]}") from exc
        return check_length(data, kind, name, offset, length)

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        check_kind(kind)
        base = "/".join(p for p in (self.prefix, kind) if p) + "/"
        try:
            for blob in self.client.list_blobs(name_starts_with=base):
                name = listed_name(kind, str(blob.name)[len(base):])
                if name is not None:
                    yield name, int(blob.size)
        except (ResticBackendError, RepoError):
            raise
        except Exception as exc:
            raise self._fail(exc, f"listing {kind}") from exc

    def remove(self, kind: str, name: str) -> None:
        try:
            self.client.get_blob_client(self._key(kind, name)).delete_blob()
        except Exception as exc:
            if not azureclient.is_not_found(exc):
                raise self._fail(exc, f"removing {kind}/{name[:8]}") from exc
