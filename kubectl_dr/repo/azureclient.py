"""The Azure Blob client: the account, its credential and endpoint from flags, the standard
``AZURE_STORAGE_*`` variables and the config file, and the service's errors in plain words.

azure-storage-blob is imported only when an Azure repository is used. The account's blob endpoint is
``https://ACCOUNT.blob.core.windows.net`` unless ``--azure-endpoint`` (or ``azure.endpoint``, or the
connection string's ``BlobEndpoint``/``EndpointSuffix``) names another: Azurite
(``http://127.0.0.1:10000/devstoreaccount1``) or a sovereign cloud (``https://ACCOUNT.blob.core.chinacloudapi.cn``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kubectl_dr.repo import ids
from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.prefixed import PrefixedNames

SCHEME = "azure://"
# Azure's container names: 3-63 lower-case letters, digits and single hyphens, starting and ending with
# a letter or a digit ("$root" and "$web" are the service's own, never a repository's).
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
# Azurite's development account: its well-known key is public (Microsoft's documentation prints it).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CREDENTIALS_HINT = ("Credentials come from AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with "
                    "AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or the config file's azure.account with "
                    "azure.keyFile, azure.sasTokenFile or azure.connectionStringFile.")


@dataclass(frozen=True)
class AzureLocation(PrefixedNames):
    container: str
    prefix: str  # no leading or trailing slash; may be empty

    scheme: ClassVar[str] = SCHEME
    noun: ClassVar[str] = "blob"

    @property
    def top(self) -> str:
        return self.container


def parse_azure_url(url: str) -> AzureLocation:
    if not url.startswith(SCHEME):
        raise RepoError(f"{url!r} is not an azure:// URL")
    container, _, prefix = url[len(SCHEME):].partition("/")
    parts = [p for p in prefix.split("/") if p]
    if not _CONTAINER.match(container):
        raise RepoError(f"{url}: {container!r} is not a valid container name",
                        hint="Container names are 3 to 63 lower-case letters, digits and single hyphens: "
                        "azure://CONTAINER/PREFIX (the account comes from AZURE_STORAGE_ACCOUNT or the config file).")
    if any(part in (".", "..") for part in parts):
        raise RepoError(f"{url}: the prefix must not contain '.' or '..' components")
    for part in parts:
        problem = ids.name_problem(part)
        if problem is not None:
            raise RepoError(f"{url}: the prefix component {part[:60]!r} is not allowed: {problem}")
    return AzureLocation(container, "/".join(parts))


def parse_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;…`` as Azure writes it (values may hold '=': a SAS token, a base64 key)."""
    fields: dict[str, str] = {}
    for item in text.strip().split(";"):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise RepoError(f"the Azure connection string has a field without '=': {key.strip()[:40]!r}",
                            hint="It looks like DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;"
                            "EndpointSuffix=core.windows.net (az storage account show-connection-string).")
        fields[key.strip()] = value.strip()
    return fields


@dataclass(frozen=True)
class AzureSettings:
    account: str | None = None
    endpoint: str | None = None  # the account's blob service URL
    key: str | None = None
    sas_token: str | None = None

    @property
    def account_url(self) -> str:
        if self.endpoint:
            return self.endpoint.rstrip("/")
        return f"https://{self.account}.blob.core.windows.net"

    @property
    def shown(self) -> str:
        """The endpoint for messages (never a credential)."""
        return self.account_url

    @classmethod
    def resolve(cls, *, endpoint: str | None, config: Mapping[str, Any], env: Mapping[str, str]) -> AzureSettings:
        """The flag first, then the environment (Azure's own variables), then the kubectl-dr config file."""
        conn_text = env.get("AZURE_STORAGE_CONNECTION_STRING") or _read_secret(config, "connectionStringFile")
        conn = parse_connection_string(conn_text) if conn_text else {}
        if conn.get("UseDevelopmentStorage", "").lower() == "true":
            conn = {"AccountName": DEV_ACCOUNT, "AccountKey": DEV_KEY,
                    "BlobEndpoint": conn.get("DevelopmentStorageProxyUri") or f"http://127.0.0.1:10000/{DEV_ACCOUNT}"}
        account = conn.get("AccountName") or env.get("AZURE_STORAGE_ACCOUNT") or config.get("account")
        key = conn.get("AccountKey") or (None if conn else env.get("AZURE_STORAGE_KEY"))
        sas = conn.get("SharedAccessSignature") or (None if conn else env.get("AZURE_STORAGE_SAS_TOKEN"))
        if not conn and not key and not sas:
            key = _read_secret(config, "keyFile")
            sas = None if key else _read_secret(config, "sasTokenFile")
        url = endpoint or config.get("endpoint") or conn.get("BlobEndpoint")
        if not url and conn.get("EndpointSuffix") and account:
            url = f"{conn.get('DefaultEndpointsProtocol') or 'https'}://{account}.blob.{conn['EndpointSuffix']}"
        if url is not None and not re.match(r"^https?://[^/\s]+", str(url)):
            raise RepoError(f"the Azure endpoint {url!r} is not an http(s) URL",
                            hint="Give the account's blob service URL, e.g. https://ACCOUNT.blob.core.windows.net, "
                            f"or http://127.0.0.1:10000/{DEV_ACCOUNT} for Azurite.")
        if account is not None and not _ACCOUNT.match(str(account)):
            raise RepoError(f"{account!r} is not a valid Azure storage account name",
                            hint="Account names are 3 to 24 lower-case letters and digits. " + CREDENTIALS_HINT)
        return cls(account=account, endpoint=url, key=key or None, sas_token=(sas or "").lstrip("?") or None)


def _read_secret(config: Mapping[str, Any], field: str) -> str | None:
    value = config.get(field)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise RepoError(f"cannot read azure.{field} {path} from the config file: {exc.strerror}") from None


def make_container_client(settings: AzureSettings, where: AzureLocation) -> Any:
    """A ContainerClient for ``where`` (RepoError naming what is missing when there are no credentials)."""
    if not settings.account and not settings.endpoint:
        raise RepoError(f"no Azure storage account for {where.url}", hint=CREDENTIALS_HINT)
    credential: Any
    if settings.key:
        if not settings.account:
            raise RepoError(f"an Azure account key is set but no account name for {where.url}", hint=CREDENTIALS_HINT)
        from azure.core.credentials import AzureNamedKeyCredential

        credential = AzureNamedKeyCredential(settings.account, settings.key)
    elif settings.sas_token:
        from azure.core.credentials import AzureSasCredential

        credential = AzureSasCredential(settings.sas_token)
    else:
        raise RepoError(f"no Azure credentials for {where.url}", hint=CREDENTIALS_HINT)
    import_sync_sdk()
    from azure.storage.blob import ContainerClient, ExponentialRetry

    # The SDK's default waits 15 s, then 18, 24, 42…: minutes before an endpoint that does not answer is
    # reported. 2, 4, 6 and 10 s ride out a service's brief hiccup and say "cannot reach" within half a minute.
    retry = ExponentialRetry(initial_backoff=2, increment_base=2, retry_total=4, random_jitter_range=1)
    try:
        return ContainerClient(settings.account_url, where.container, credential=credential,
                               connection_timeout=20, read_timeout=120, retry_policy=retry,
                               # Our own blocks are staged in one request each; reads come in 4 MiB pieces.
                               max_single_put_size=64 << 20, max_block_size=8 << 20,
                               max_single_get_size=4 << 20, max_chunk_get_size=4 << 20,
                               user_agent="kubectl-dr")
    except ValueError as exc:
        raise RepoError(f"cannot set up the Azure client: {exc}",
                        hint="Check --azure-endpoint / azure.endpoint (e.g. https://ACCOUNT.blob.core.windows.net).") \
            from None


# What azure-storage-blob imports, when installed, only for its async client.
ASYNC_ONLY = ("aiohttp", "yarl")


def import_sync_sdk() -> None:
    """Import azure-storage-blob as it is imported where aiohttp is not installed.

    Why: the SDK imports aiohttp and yarl, when they are installed, only to recognise its async transport
    while it signs a request (``_shared/authentication.py``); kubectl-dr uses the sync client. The Kubernetes
    client requires aiohttp, so every install has it, and importing it cost a backup to Azure 7.7 MiB of its
    peak RSS (issue 24: at most 100 MiB). A None entry in ``sys.modules`` makes ``import aiohttp`` raise
    ImportError (the import system's documented behaviour), which the SDK takes as "not installed" (its
    signing then never looks for the async transport). The entries go once the SDK is imported: anything
    else in the process imports aiohttp as usual.
    """
    if "azure.storage.blob" in sys.modules:
        return
    blocked = [name for name in ASYNC_ONLY if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import azure.storage.blob  # noqa: F401
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    if not code:  # raised below the storage client's own error handling: the service's header says it
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        code = headers.get("x-ms-error-code")
    return str(getattr(code, "value", code)) if code else None  # the SDK's StorageErrorCode is an enum


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return int(status) if isinstance(status, int) else None


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in ("BlobNotFound", "InvalidBlockList") or (
        status_of(exc) == 404 and error_code(exc) != "ContainerNotFound")


def translate(exc: BaseException, where: AzureLocation, doing: str, settings: AzureSettings) -> RepoError:
    """An azure-core exception as the RepoError a user can act on."""
    from azure.core import exceptions as ax

    target = settings.shown
    if isinstance(exc, RepoError):
        return exc
    code = error_code(exc) or ""
    status = status_of(exc)
    if code == "ContainerNotFound":
        return RepoError(f"the container {where.container!r} does not exist at {target}",
                         hint="Create it first (az storage container create -n NAME), or check --repo and "
                         "--azure-endpoint.")
    if isinstance(exc, ax.ClientAuthenticationError) or code in ("AuthenticationFailed", "InvalidAuthenticationInfo"):
        return RepoError(f"the Azure storage service at {target} refused the credentials for {where.url} ({doing}"
                         f"{': ' + code if code else ''})", hint=CREDENTIALS_HINT)
    if status == 403 or code.startswith("Authorization"):
        return RepoError(f"access denied to {where.url} ({doing}{': ' + code if code else ''}): the key or SAS "
                         "token is wrong, expired, or lacks a permission",
                         hint="Check the credentials and their permissions: kubectl dr needs to list, read, write "
                         "and delete blobs in the container (a SAS token needs racwdl). " + CREDENTIALS_HINT)
    # Azure says Md5Mismatch; Azurite says InvalidOperation "Provided contentMD5 doesn't match."
    mismatch = "md5" in _first_line(exc).lower() and "match" in _first_line(exc).lower()
    if code in ("Md5Mismatch", "Crc64Mismatch", "InvalidMd5", "InvalidBlockId") or mismatch:
        return RepoError(f"the Azure storage service received different bytes than were sent ({doing}: {code})",
                         hint="The upload was damaged on the way; run the command again.")
    if code in ("AccountIsDisabled", "InsufficientAccountPermissions", "RequestBodyTooLarge", "BlockCountExceedsLimit"):
        return RepoError(f"the Azure storage service refused to store more under {where.url} ({code})",
                         hint="Free some space (kubectl dr backups prune …), or check the account.")
    if isinstance(exc, ax.ServiceRequestError):
        return RepoError(f"cannot reach the Azure storage endpoint {target} ({doing}): {_first_line(exc)}",
                         hint="Check --azure-endpoint / azure.endpoint, AZURE_STORAGE_ACCOUNT and the network.")
    if isinstance(exc, ax.ServiceResponseError):
        return RepoError(f"the Azure storage endpoint {target} stopped answering ({doing}): {_first_line(exc)}")
    if isinstance(exc, ax.HttpResponseError):
        return RepoError(f"Azure error while {doing} at {where.url}: {code or status}: {_first_line(exc)}")
    if isinstance(exc, ax.AzureError):
        return RepoError(f"Azure error while {doing} at {where.url}: {_first_line(exc)}")
    return RepoError(f"Azure error while {doing} at {where.url}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
