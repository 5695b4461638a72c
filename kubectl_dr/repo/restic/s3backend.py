"""A restic repository in S3, named as restic names it: `s3:https://host[:port]/bucket/prefix`
(or `s3:host/bucket/prefix`, HTTPS). Objects are the default layout under the prefix; the client,
credentials and error messages are the project's S3 client (the standard AWS chain, as restic reads it).
Every upload carries Content-MD5, so the server refuses bytes that changed on the way; every ranged read
is checked for its length (and later, the MAC and SHA-256 of what it holds).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from kubectl_dr.repo import s3client
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


def parse(ref: str) -> tuple[str, str, str]:
    """(endpoint URL, bucket, prefix) of restic's `s3:` repository string."""
    if not ref.startswith("s3:"):
        raise ResticBackendError(f"{ref!r} is not a restic s3: repository")
    rest = ref[3:]
    if "://" not in rest:
        rest = "https://" + rest
    url = urlsplit(rest)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ResticBackendError(f"{ref!r}: expected s3:https://HOST[:PORT]/BUCKET[/PREFIX]")
    bucket, _, prefix = url.path.lstrip("/").partition("/")
    prefix = "/".join(p for p in prefix.split("/") if p)
    if not bucket or any(p in (".", "..") for p in prefix.split("/")):
        raise ResticBackendError(f"{ref!r}: expected s3:https://HOST[:PORT]/BUCKET[/PREFIX] (no '.' or '..')")
    return f"{url.scheme}://{url.netloc}", bucket, prefix


class S3Backend:
    def __init__(self, ref: str, settings: s3client.S3Settings) -> None:
        endpoint, self.bucket, self.prefix = parse(ref)
        self.ref = ref
        self.settings = s3client.S3Settings(**{**settings.__dict__, "endpoint": endpoint})
        self.location = s3client.S3Location(self.bucket, self.prefix)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3client.make_client(self.settings)
        return self._client

    def _key(self, kind: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, relative_path(kind, name)) if p)

    def _fail(self, exc: BaseException, doing: str) -> RepoError:
        return s3client.translate(exc, self.location, doing, self.settings.endpoint)

    def describe(self) -> str:
        return self.ref

    def exists(self) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(CONFIG, CONFIG))
            return True
        except Exception as exc:
            if s3client.is_not_found(exc) or s3client.error_code(exc) == "NoSuchBucket":
                return False
            raise self._fail(exc, "looking for the repository's config") from exc

    def create(self) -> None:
        if self.exists():
            raise ResticBackendError(f"a restic repository already exists at {self.ref}")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if s3client.error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail(exc, "checking the bucket") from exc
            try:  # restic's init creates a missing bucket too
                self.client.create_bucket(Bucket=self.bucket)
            except Exception as exc2:
                raise self._fail(exc2, "creating the bucket") from exc2

    def save(self, kind: str, name: str, data: Data) -> None:
        data = as_bytes(data)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(kind, name), Body=data, ContentMD5=md5)
        except Exception as exc:
            raise self._fail(exc, f"writing {kind}/{name[:8]}") from exc

    def load(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(kind, name)}
        if offset or length is not None:
            args["Range"] = f"bytes={offset}-" + (str(offset + length - 1) if length else "")
        try:
            data: bytes = self.client.get_object(**args)["Body"].read()
        except Exception as exc:
            if s3client.is_not_found(exc):
                raise ResticBackendError(f"{kind}/{name} is missing from the restic repository {self.ref}") from exc
            raise self._fail(exc, f"reading {kind}/{name[:8]}") from exc
        return check_length(data, kind, name, offset, length)

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        check_kind(kind)
        base = "/".join(p for p in (self.prefix, kind) if p) + "/"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents") or []:
                    name = listed_name(kind, obj["Key"][len(base):])
                    if name is not None:
                        yield name, int(obj["Size"])
        except ResticBackendError:
            raise
        except Exception as exc:
            raise self._fail(exc, f"listing {kind}") from exc

    def remove(self, kind: str, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(kind, name))
        except Exception as exc:
            if not s3client.is_not_found(exc):
                raise self._fail(exc, f"removing {kind}/{name[:8]}") from exc
