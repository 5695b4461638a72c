"""The S3 client: settings from flags, the config file and the standard AWS chain, and errors in plain words.

botocore is imported only when an S3 repository is used. Checksums are computed "when_required": botocore
≥ 1.36 otherwise sends CRC checksums (and trailers) that MinIO, Ceph RGW and other S3-compatible
servers reject (Velero #7696, #9804); we send our own SHA-256 per uploaded part instead. A custom
endpoint gets path-style addressing (bucket in the path), which every S3-compatible server serves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from kubectl_dr.repo.errors import RepoError
from kubectl_dr.repo.prefixed import PrefixedNames

SCHEME = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
CREDENTIALS_HINT = ("Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, ~/.aws/credentials and ~/.aws/config.")


@dataclass(frozen=True)
class S3Location(PrefixedNames):
    bucket: str
    prefix: str  # no leading or trailing slash; may be empty

    scheme: ClassVar[str] = SCHEME
    noun: ClassVar[str] = "key"

    @property
    def top(self) -> str:
        return self.bucket


def parse_s3_url(url: str) -> S3Location:
    if not url.startswith(SCHEME):
        raise RepoError(f"{url!r} is not an s3:// URL")
    rest = url[len(SCHEME):]
    bucket, _, prefix = rest.partition("/")
    prefix = "/".join(p for p in prefix.split("/") if p)
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise RepoError(f"{url}: {bucket!r} is not a valid bucket name",
                        hint="Bucket names are 3 to 63 lower-case letters, digits, dots and hyphens: s3://BUCKET/PREFIX.")
    if any(part in (".", "..") for part in prefix.split("/")):
        raise RepoError(f"{url}: the prefix must not contain '.' or '..' components")
    return S3Location(bucket, prefix)


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    ca_bundle: str | None = None
    addressing_style: str | None = None  # path | virtual | auto; default: path with an endpoint, else auto
    # Keys from the injected environment (the rest of the AWS chain is botocore's: profiles, SSO, IMDS…).
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    @classmethod
    def resolve(cls, *, endpoint: str | None, ca_bundle: str | None, config: Mapping[str, Any],
                env: Mapping[str, str], profile: str | None = None) -> S3Settings:
        """Flags first, then the environment (AWS's own variables), then the kubectl-dr config file."""
        style = config.get("addressingStyle")
        if style is not None and style not in ("path", "virtual", "auto"):
            raise RepoError(f"s3.addressingStyle in the config file must be path, virtual or auto, not {style!r}")
        return cls(
            endpoint=(endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
                      or config.get("endpoint")),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or config.get("region"),
            profile=profile or env.get("AWS_PROFILE") or config.get("profile"),
            ca_bundle=ca_bundle or env.get("AWS_CA_BUNDLE") or config.get("caBundle"),
            addressing_style=style,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )


def make_client(settings: S3Settings, *, pool: int = 10) -> Any:
    import botocore.config
    import botocore.exceptions
    import botocore.session

    from kubectl_dr.repo.botocore_data import lean_loader

    style = settings.addressing_style or ("path" if settings.endpoint else "auto")
    config = botocore.config.Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3=cast(Any, {"addressing_style": style}),
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=20,
        read_timeout=120,
        max_pool_connections=pool,
        user_agent_extra="kubectl-dr",
    )
    keys = bool(settings.access_key and settings.secret_key)
    try:
        # botocore's own session, not boto3's: boto3 adds only its resource layer and S3 transfer methods,
        # which kubectl-dr does not use (~1.5 MiB of imports, issue 24).
        session = botocore.session.Session(profile=None if keys else settings.profile)
        # Loaded lean (botocore_data): what the session loads, the client keeps for as long as it lives.
        session.register_component("data_loader", lean_loader(session.get_config_variable("data_path")))
        region = settings.region or session.get_config_variable("region") or "us-east-1"
        return session.create_client("s3", endpoint_url=settings.endpoint, region_name=region,
                                     verify=settings.ca_bundle if settings.ca_bundle else None, config=config,
                                     aws_access_key_id=settings.access_key if keys else None,
                                     aws_secret_access_key=settings.secret_key if keys else None,
                                     aws_session_token=settings.session_token if keys else None)
    except botocore.exceptions.ProfileNotFound as exc:
        raise RepoError(f"the AWS profile {settings.profile!r} does not exist: {exc}", hint=CREDENTIALS_HINT) from None
    except ValueError as exc:  # e.g. a malformed endpoint URL
        raise RepoError(f"cannot set up the S3 client: {exc}",
                        hint="Check --s3-endpoint / AWS_ENDPOINT_URL (e.g. https://minio.example.com:9000).") from None


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "") or None
    return None


def translate(exc: BaseException, where: S3Location, doing: str, endpoint: str | None) -> RepoError:
    """A botocore exception as the RepoError a user can act on."""
    import botocore.exceptions as bx

    target = endpoint or "AWS S3"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return RepoError(f"no usable AWS credentials for {where.url} ({doing})", hint=CREDENTIALS_HINT)
    if isinstance(exc, bx.SSLError):
        return RepoError(f"the TLS connection to {target} failed ({doing}): {exc}",
                         hint="If the server uses a private CA, pass --s3-ca-bundle FILE (or set AWS_CA_BUNDLE).")
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ConnectionClosedError):
        return RepoError(f"cannot reach the S3 endpoint {target} ({doing}): {exc}",
                         hint="Check --s3-endpoint / AWS_ENDPOINT_URL and the network.")
    if isinstance(exc, bx.ReadTimeoutError):
        return RepoError(f"the S3 endpoint {target} stopped answering ({doing}): {exc}")
    if isinstance(exc, bx.ClientError):
        code = error_code(exc) or ""
        response: dict[str, Any] = cast(dict[str, Any], exc.response)
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        message = (response.get("Error") or {}).get("Message") or code
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and doing.startswith("checking the bucket")):
            return RepoError(f"the bucket {where.bucket!r} does not exist at {target}",
                             hint="Create it first (aws s3 mb, mc mb …), or check --repo and --s3-endpoint.")
        if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
            return RepoError(f"access denied to {where.url} ({doing})",
                             hint="Check the credentials and the bucket's policy: kubectl dr needs to list, read, "
                             "write and delete objects under the prefix. " + CREDENTIALS_HINT)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return RepoError(f"the S3 server refused the credentials ({code}) for {where.url}", hint=CREDENTIALS_HINT)
        if code in ("XMinioStorageFull", "QuotaExceeded", "XAmzContentSHA256Mismatch", "EntityTooLarge"):
            return RepoError(f"the S3 server refused to store more under {where.url} ({code}: {message})",
                             hint="Free some space (kubectl dr backups prune …) or raise the bucket's quota.")
        if code in ("BadDigest", "InvalidDigest", "XAmzChecksumMismatch"):
            return RepoError(f"the S3 server received different bytes than were sent ({doing}: {code})",
                             hint="The upload was damaged on the way; run the command again.")
        return RepoError(f"S3 error while {doing} at {where.url}: {code or status}: {message}")
    if isinstance(exc, bx.BotoCoreError):
        return RepoError(f"S3 error while {doing} at {where.url}: {exc}")
    if isinstance(exc, RepoError):
        return exc
    return RepoError(f"S3 error while {doing} at {where.url}: {type(exc).__name__}: {exc}")


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in ("NoSuchKey", "404", "NotFound", "NoSuchUpload")
