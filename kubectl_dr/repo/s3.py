"""An S3 (or S3-compatible) backup repository: ``s3://BUCKET/PREFIX``.

The layout and its rules (manifest last, ``.owner`` heartbeat, ``.deleting`` first) are every object
store's, in ``objectstore``. Here: prune also aborts the incomplete multipart uploads under a prefix it
removes.

Parts stream up as multipart uploads from a fixed pool of part buffers (two parts uploading at once
while a third fills, so memory stays flat whatever the size), each part
sent with its SHA-256 (x-amz-checksum-sha256), which servers that know it check on receipt and echo;
the complete object's size is read back with HEAD. Where a server does not check, `backups verify`
reads everything back.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubectl_dr.repo import ids
from kubectl_dr.repo.crypto import Identity, Recipient
from kubectl_dr.repo.errors import BackupCorruptError, RepoError
from kubectl_dr.repo.manifest import MANIFEST_NAME
from kubectl_dr.repo.objectstore import (
    DELETING_MARKER,
    STALE_AGE,
    Group,
    NotFound,
    ObjectStoreRepository,
    ObjectStoreStaging,
    PooledPartSink,
    growing_part_size,
    split_key,
    timestamp,
)
from kubectl_dr.repo.repository import Backup, Leftover, utcnow
from kubectl_dr.repo.s3client import S3Location, S3Settings, is_not_found, make_client, translate
from kubectl_dr.repo.writer import Staging

# S3 needs ≥ 5 MiB for every part but the last. 6 MiB parts, two in flight: the pool is 18 MiB (three
# buffers). A whole `pvc backup` to S3 peaked at 108 MiB with 8 MiB parts, three in flight (issue 24 asks
# for ≤ 100), and wrote at 14 MiB/s under load, where SeaweedFS alone takes 8 MiB parts one at a time at
# ~40 MiB/s: two requests in flight are more than that pace needs (benchmarks/README.md).
MIN_PART = 6 << 20
MAX_PARTS = 10_000
PARTS_PER_STEP = 1_000  # the part size doubles after this many parts, up to MAX_PART: ~2.2 TiB in all
MAX_PART = 512 << 20
IN_FLIGHT = 2  # parts uploading while the next fills: memory is about (IN_FLIGHT + 1) × part size


@dataclass
class _Group(Group):
    """What a listing shows under one ``PREFIX/NAME/``, with its incomplete multipart uploads."""

    uploads: builtins.list[tuple[str, str, float]] = field(default_factory=builtins.list)  # (key, id, initiated)

    @property
    def newest(self) -> float:
        return max([t for _, t in self.objects.values()] + [t for _, _, t in self.uploads], default=0.0)


class S3Repository(ObjectStoreRepository):
    kind = "s3"

    def __init__(self, where: S3Location, settings: S3Settings | None = None, *,
                 clock: Callable[[], datetime] = utcnow, recipients: Sequence[Recipient | str] = (),
                 identities: Sequence[Identity] = (), client: Any = None) -> None:
        super().__init__(clock=clock, recipients=recipients, identities=identities)
        self.where = where
        self.settings = settings or S3Settings()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    def call(self, doing: str, method: str, **kwargs: Any) -> Any:
        """One S3 request, its failure translated into a RepoError that says what to do."""
        try:
            return getattr(self.client, method)(Bucket=self.where.bucket, **kwargs)
        except Exception as exc:
            if isinstance(exc, RepoError):
                raise
            if is_not_found(exc) and method in ("get_object", "head_object"):
                raise NotFound(kwargs.get("Key", "")) from None
            raise translate(exc, self.where, doing, self.settings.endpoint) from None

    # --- the store's primitives ----------------------------------------------------------------------

    def get_bytes(self, key: str, doing: str) -> bytes:
        response = self.call(doing, "get_object", Key=key)
        try:
            return bytes(response["Body"].read())
        except Exception as exc:
            raise translate(exc, self.where, doing, self.settings.endpoint) from None

    def put_bytes(self, doing: str, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.call(doing, "put_object", Key=key, Body=data, ChecksumSHA256=_b64sha(data), **extra)

    def has(self, key: str, doing: str) -> bool:
        try:
            self.call(doing, "head_object", Key=key)
            return True
        except NotFound:
            return False

    def delete_key(self, key: str, doing: str) -> None:
        self.call(doing, "delete_object", Key=key)

    # --- checks --------------------------------------------------------------------------------------

    def preflight(self, expected_bytes: int | None = None, *, create: bool = True) -> None:
        """The bucket answers and takes writes under the prefix (a probe object, removed at once)."""
        self.call("checking the bucket", "head_bucket")
        if not create:
            self.call("listing the repository", "list_objects_v2", Prefix=self.where.base, MaxKeys=1)
            return
        probe = self.where.key(f".probe-{os.getpid()}-{ids.with_suffix('w')}")
        self.call("writing a test object", "put_object", Key=probe, Body=b"kubectl-dr write check\n")
        self.call("removing the test object", "delete_object", Key=probe)

    # --- listing -------------------------------------------------------------------------------------

    def _groups(self) -> dict[str, _Group]:
        groups: dict[str, _Group] = {}
        base = self.where.base
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Prefix": base}
            if token:
                args["ContinuationToken"] = token
            page = self.call("listing the repository", "list_objects_v2", **args)
            for obj in page.get("Contents") or []:
                name, file = split_key(str(obj["Key"])[len(base):])
                if name:
                    groups.setdefault(name, _Group()).objects[file] = (int(obj["Size"]),
                                                                       timestamp(obj["LastModified"]))
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        for key, upload_id, initiated in self._uploads():
            name, sep, _ = key[len(base):].partition("/")
            if sep:
                groups.setdefault(name, _Group()).uploads.append((key, upload_id, initiated))
        return groups

    def _group(self, name: str) -> _Group | None:
        return self._groups().get(name)

    def _uploads(self, prefix: str | None = None) -> builtins.list[tuple[str, str, float]]:
        found: builtins.list[tuple[str, str, float]] = []
        args: dict[str, Any] = {"Prefix": prefix if prefix is not None else self.where.base}
        while True:
            page = self.call("listing incomplete uploads", "list_multipart_uploads", **args)
            for up in page.get("Uploads") or []:
                found.append((str(up["Key"]), str(up["UploadId"]), timestamp(up["Initiated"])))
            if not page.get("IsTruncated"):
                break
            args["KeyMarker"] = page.get("NextKeyMarker")
            args["UploadIdMarker"] = page.get("NextUploadIdMarker")
        return found

    def _open_stored(self, backup: Backup, file: str) -> Any:
        key = self.where.key(backup.key, file)
        try:
            head = self.call("reading a part", "head_object", Key=key)
        except NotFound:
            raise BackupCorruptError(backup.id, file, "is missing") from None
        return S3Reader(self, key, int(head["ContentLength"]))

    def _stored_sizes(self, backup: Backup) -> dict[str, int]:
        sizes: dict[str, int] = {}
        prefix = self.where.key(backup.key) + "/"
        page = self.call("listing a backup", "list_objects_v2", Prefix=prefix)
        for obj in page.get("Contents") or []:
            sizes[str(obj["Key"])[len(prefix):]] = int(obj["Size"])
        return sizes

    # --- writing -------------------------------------------------------------------------------------

    def _staging(self, backup_id: str) -> Staging:
        return ObjectStoreStaging(self, backup_id, lambda key, hashed, hint: MultipartSink(self, key, hashed, hint))

    def _exists(self, name: str) -> bool:
        page = self.call("checking for a backup ID", "list_objects_v2", Prefix=self.where.key(name) + "/", MaxKeys=1)
        return bool(page.get("Contents")) or bool(self._uploads(self.where.key(name) + "/"))

    # --- removing ------------------------------------------------------------------------------------

    def _remove_group(self, name: str, group: Group) -> None:
        for key, upload_id, _ in group.uploads if isinstance(group, _Group) else ():
            # Already completed or aborted: the listing below catches what remains.
            with contextlib.suppress(RepoError):
                self.call("aborting an incomplete upload", "abort_multipart_upload", Key=key, UploadId=upload_id)
        # The manifest first (the backup is invisible from then on), the marker last.
        order = sorted(group.objects, key=lambda f: (f != MANIFEST_NAME, f == DELETING_MARKER, f))
        keys = [self.where.key(name, f) for f in order]
        self.delete_keys(keys)

    def delete_keys(self, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            response = self.call("deleting objects", "delete_objects",
                                 Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise RepoError(f"the S3 server did not delete {len(errors)} objects under {self.location}: "
                                f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}")

    def leftovers(self) -> builtins.list[Leftover]:
        found: builtins.list[Leftover] = []
        for name, group in sorted(self._groups().items()):
            if ids.name_problem(name) is not None:
                continue  # not ours to remove: no key under it can be formed safely
            if group.committed:
                if group.uploads:  # an upload of a committed backup that was never aborted
                    old = [u for u in group.uploads if time.time() - u[2] > STALE_AGE]
                    if old:
                        found.append(Leftover(f"{name}/ ({len(old)} incomplete uploads)",
                                              "an interrupted upload", True, (name, _Group({}, old))))
                continue
            what = "an interrupted delete" if DELETING_MARKER in group.objects else "an interrupted write"
            shown = f"{name}/ ({len(group.objects)} objects, {len(group.uploads)} incomplete uploads)"
            found.append(Leftover(shown, what, self._stale(name, group), (name, group)))
        return found


def _b64sha(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def part_size_for(number: int, size_hint: int | None) -> int:
    """The size of upload part ``number`` (1-based): at least 6 MiB, more for large expected sizes, and
    doubling every 1000 parts up to 512 MiB, so that 10 000 parts reach ~2.2 TiB whatever the hint said
    (memory stays a few parts: 18 MiB for the first 6 GiB, or ~43 GiB of a known size)."""
    return growing_part_size(number, size_hint, smallest=MIN_PART, largest=MAX_PART, most=MAX_PARTS,
                             per_step=PARTS_PER_STEP)


class MultipartSink(PooledPartSink):
    """A part streamed to S3: one PUT if it is small, else a multipart upload from a fixed pool of part
    buffers, each part sent with its SHA-256."""

    in_flight = IN_FLIGHT
    most_parts = MAX_PARTS
    whole = "an S3 object"
    service = "the S3 server"
    thread_name = "s3-upload"

    def __init__(self, repo: S3Repository, key: str, hash_stored: bool, size_hint: int | None) -> None:
        self._repo = repo
        self._upload_id: str | None = None
        self.server_checked = True  # every part's SHA-256 echoed back by the server
        super().__init__(key, hash_stored, size_hint)

    def _part_size(self, number: int, size_hint: int | None) -> int:
        return part_size_for(number, size_hint)

    def _begin(self) -> None:
        created = self._repo.call("starting a multipart upload", "create_multipart_upload", Key=self._key,
                                  ChecksumAlgorithm="SHA256")
        self._upload_id = str(created["UploadId"])

    def _send(self, number: int, body: bytes | bytearray) -> dict[str, Any]:
        checksum = _b64sha(body)
        response = self._repo.call("uploading a part", "upload_part", Key=self._key, UploadId=self._upload_id,
                                   PartNumber=number, Body=body, ChecksumSHA256=checksum)
        self._check_echo(response, checksum, f"part {number} of {self._key}")
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _check_echo(self, response: Any, checksum: str, what: str) -> None:
        echoed = response.get("ChecksumSHA256")
        if echoed is None:
            self.server_checked = False
        elif echoed.split("-")[0] != checksum:
            raise RepoError(f"the S3 server stored {what} with SHA-256 {echoed}, not the {checksum} we sent",
                            hint="The upload was damaged on the way; run the command again.")

    def _finish(self, parts: builtins.list[Any]) -> None:
        if not self.server_checked:
            parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
        self._repo.call("completing a multipart upload", "complete_multipart_upload", Key=self._key,
                        UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        self._upload_id = None

    def _put_whole(self, body: bytes) -> None:
        checksum = _b64sha(body)
        response = self._repo.call("uploading a part", "put_object", Key=self._key, Body=body,
                                   ChecksumSHA256=checksum)
        self._check_echo(response, checksum, self._key)

    def _stored_size(self) -> int:
        return int(self._repo.call("checking an upload", "head_object", Key=self._key)["ContentLength"])

    def _discard(self) -> None:
        if self._upload_id is not None:
            with contextlib.suppress(RepoError):  # prune finds it by its prefix
                self._repo.call("aborting an upload", "abort_multipart_upload", Key=self._key,
                                UploadId=self._upload_id)
            self._upload_id = None


class S3Reader:
    """A stored object streamed with GET; a connection that breaks is resumed with a Range request."""

    RETRIES = 3

    def __init__(self, repo: S3Repository, key: str, size: int) -> None:
        self._repo = repo
        self._key = key
        self.size = size
        self._pos = 0
        self._body: Any = None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self.size and self._body is None:
            return 0
        for attempt in range(self.RETRIES + 1):
            try:
                if self._body is None:
                    args: dict[str, Any] = {"Key": self._key}
                    if self._pos:
                        args["Range"] = f"bytes={self._pos}-"
                    self._body = self._repo.call("reading a part", "get_object", **args)["Body"]
                data = self._body.read(len(view))
                view[: len(data)] = data
                self._pos += len(data)
                if not data:
                    self.close()
                return len(data)
            except NotFound:
                raise RepoError(f"{self._key} disappeared while it was read") from None
            except RepoError:
                raise
            except Exception as exc:  # a broken connection: resume where it stopped
                self._drop()
                if attempt == self.RETRIES:
                    raise translate(exc, self._repo.where, "reading a part", self._repo.settings.endpoint) from None
                time.sleep(0.5 * (attempt + 1))
        return 0

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(1 << 20 if size < 0 else size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def _drop(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
